package web

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

//go:embed templates/*.html assets/*
var files embed.FS

// Asset is one embedded static file.
type Asset struct {
	Body        []byte
	ContentType string
	// Version is a short hash of Body: URLs carry it (?v=), so an asset can
	// be cached for a year and still change with the binary.
	Version string
}

// Site holds the parsed pages and the assets.
type Site struct {
	pages  map[string]*template.Template
	assets map[string]Asset
}

// New parses every page template against the layout and loads the assets.
func New() (*Site, error) {
	s := &Site{pages: map[string]*template.Template{}, assets: map[string]Asset{}}
	entries, err := fs.ReadDir(files, "assets")
	if err != nil {
		return nil, fmt.Errorf("web: read assets: %w", err)
	}
	for _, e := range entries {
		body, err := files.ReadFile("assets/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("web: read asset %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(body)
		s.assets[e.Name()] = Asset{Body: body, ContentType: contentType(e.Name()), Version: hex.EncodeToString(sum[:6])}
	}
	funcs := template.FuncMap{
		"asset": func(name string) string {
			return "/assets/" + name + "?v=" + s.assets[name].Version
		},
		"date": func(t time.Time) string { return t.UTC().Format("2 Jan 2006") },
		"datetime": func(t time.Time) string {
			return t.UTC().Format(time.RFC3339)
		},
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("web: parse layout: %w", err)
	}
	pages, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		name := strings.TrimSuffix(path.Base(p), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(files, p)
		if err != nil {
			return nil, fmt.Errorf("web: parse %s: %w", name, err)
		}
		s.pages[name] = t
	}
	return s, nil
}

// View is what a page template sees: the layout's fields and the page's
// own data in .Data.
type View struct {
	Layout
	Data any
}

// Layout is what every page shows around its content.
type Layout struct {
	Title string
	// Nonce is this response's CSP nonce (see Nonce and CSP).
	Nonce string
	// Path is the page's path, for the navigation and the banner's return.
	Path string
	// User is the signed-in account, nil for visitors.
	User *User
	// Banner is the cookie banner's state.
	Banner Banner
	// Notice and Error are one-line messages shown at the top of the page.
	Notice, Error string
}

// User is the signed-in account as the pages show it.
type User struct {
	Email    string
	Name     string
	Verified bool
	Plan     string
	Credits  int64
}

// Banner is the visitor's cookie choice as the banner and the preference
// form need it.
type Banner struct {
	// Show asks for a choice: none was made for the policy in force.
	Show bool
	// Stale says the visitor answered an older revision of the policy.
	Stale bool
	// GPC says the browser sends Global Privacy Control, which turns
	// analytics off whatever the choice.
	GPC bool
	// Preferences and Analytics are the categories currently allowed.
	Preferences, Analytics bool
	// Count says this page view may be reported to the first-party
	// analytics (consent, no GPC, no account opt-out); the script then
	// reports it unless the browser also sends Do Not Track.
	Count    bool
	Revision int
}

// ErrNoPage is returned by Render for an unknown page name.
var ErrNoPage = fmt.Errorf("web: no such page")

// Render writes the named page.
func (s *Site) Render(w io.Writer, page string, l Layout, data any) error {
	t, ok := s.pages[page]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoPage, page)
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout.html", View{Layout: l, Data: data}); err != nil {
		return fmt.Errorf("web: render %s: %w", page, err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Asset returns an embedded asset by file name.
func (s *Site) Asset(name string) (Asset, bool) {
	a, ok := s.assets[name]
	return a, ok
}

// ScriptGzipSize is the size of all scripts gzip-compressed: the budget is
// 30 KiB.
func (s *Site) ScriptGzipSize() int {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	for name, a := range s.assets {
		if strings.HasSuffix(name, ".js") {
			zw.Write(a.Body)
		}
	}
	zw.Close()
	return b.Len()
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".css":
		return "text/css; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	return "application/octet-stream"
}

// Nonce returns a fresh CSP nonce: 128 random bits.
func Nonce() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// CSP is the Content-Security-Policy of a page: scripts only with this
// response's nonce, styles and everything else from this origin only,
// images also from imgOrigins (where output links point), forms posted
// only here or to formOrigins (Stripe Checkout, reached by a redirect
// from a form). No frames may show the page.
func CSP(nonce string, imgOrigins, formOrigins []string) string {
	img := "'self'"
	for _, o := range imgOrigins {
		img += " " + o
	}
	form := "'self'"
	for _, o := range formOrigins {
		form += " " + o
	}
	return "default-src 'none'; script-src 'nonce-" + nonce + "' 'strict-dynamic'; style-src 'self'; img-src " + img +
		"; connect-src 'self'; form-action " + form + "; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
}
