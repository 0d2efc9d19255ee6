// Package dashboard renders the operator dashboard at /admin: the
// sign-in form and the pages of figures (traffic, generations, cache tiers,
// coalescing, inference latency, credits sold, partner usage, pending
// erasures and rights requests, first-party page views), with charts
// drawn on the server as SVG from the process's own metrics registry and
// the store. Templates, CSS and the one small script are embedded; the
// pages load nothing from anywhere else. The gateway owns the routes, the
// session and the CSRF checks and hands this package plain data.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"time"
)

//go:embed templates/*.html assets/*
var files embed.FS

// Asset is an embedded static file.
type Asset struct {
	Body        []byte
	ContentType string
	// Version is a hash of Body, carried in URLs (?v=) so the file can be
	// cached long and still change with the binary.
	Version string
}

// Dashboard holds the parsed templates and the assets.
type Dashboard struct {
	tmpl   *template.Template
	assets map[string]Asset
}

// New parses the embedded templates.
func New() (*Dashboard, error) {
	d := &Dashboard{assets: map[string]Asset{}}
	for name, ct := range map[string]string{"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"} {
		body, err := files.ReadFile("assets/" + name)
		if err != nil {
			return nil, fmt.Errorf("dashboard: read %s: %w", name, err)
		}
		sum := sha256.Sum256(body)
		d.assets[name] = Asset{Body: body, ContentType: ct, Version: hex.EncodeToString(sum[:6])}
	}
	funcs := template.FuncMap{
		"asset": func(name string) string { return "/admin/assets/" + name + "?v=" + d.assets[name].Version },
		"time":  func(t time.Time) string { return t.UTC().Format("2 Jan 2006 15:04 UTC") },
		"num":   func(v float64) string { return BarChart{}.format(v) },
	}
	t, err := template.New("").Funcs(funcs).ParseFS(files, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: parse templates: %w", err)
	}
	d.tmpl = t
	return d, nil
}

// Asset returns the named asset (dashboard.css, dashboard.js).
func (d *Dashboard) Asset(name string) (Asset, bool) {
	a, ok := d.assets[name]
	return a, ok
}

// Page is what every page template sees.
type Page struct {
	Title string
	// Nonce is the response's CSP script nonce.
	Nonce string
	// Section names the page for the navigation ("overview", "partners").
	Section string
	// SignedIn shows the navigation and the sign-out button.
	SignedIn bool
	Data     any
}

// Render writes one of the pages: "login", "overview", "partners".
func (d *Dashboard) Render(w io.Writer, page string, p Page) error {
	return d.tmpl.ExecuteTemplate(w, page+".html", p)
}

// Login is the sign-in form.
type Login struct {
	Error string
}

// Overview is the main page's figures.
type Overview struct {
	Now time.Time
	// Traffic: requests by route and by status class since the process
	// started.
	Requests        float64
	Routes, Classes BarChart
	// Generations: answered generation requests, generations started on
	// a miss (GPU work), failures, and requests that joined one in flight.
	GenerationRequests, Loads, LoadErrors, Coalesced float64
	Generations                                      BarChart
	// Cache: answers per tier with their share; HitRatio over all.
	Cache    BarChart
	HitRatio string
	// Inference latency, gateway → tier.
	Latency                                BarChart
	InferenceCalls                         float64
	LatencyMean, LatencyP50, LatencyP95    string
	CreditsSold                            BarChart
	CreditsTotal                           int64
	Revenue                                []string
	PartnerImages                          BarChart
	ErasuresPending, DSARsOpen, DSARsLate  int
	PageViews, TopPaths                    BarChart
	PageViewsTotal                         int64
	AnalyticsFrom, AnalyticsTo, CreditFrom string
}

// Partners is the partners page.
type Partners struct {
	Items []PartnerRow
}

// PartnerRow is one partner with its usage and embed snippet.
type PartnerRow struct {
	ID, Name, Plan     string
	Disabled           bool
	Origins            []string
	MonthImages, Quota int
	RateLimit          int
	Days               BarChart
	Snippet            string
}
