package gateway

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/consent"
	"github.com/imagegate/imagegate/gateway/dashboard"
	"github.com/imagegate/imagegate/gateway/web"
	"github.com/imagegate/imagegate/store"
)

// The operator dashboard at /admin: the admin token signs in, once, to a
// session of its own (cookieAdmin: HttpOnly, SameSite=Strict, 30 minutes,
// never renewed), and the pages read the figures from the metrics
// registry and the store. Its forms are state-changing POSTs and pass the
// crossOrigin check like every other (CSRF), on top of SameSite=Strict.

const (
	cookieAdmin      = consent.CookieAdmin
	adminSessionTTL  = consent.AdminSessionTTL
	eventAdminSignin = "admin_dashboard_signin"
)

// dashboardStore is what the dashboard reads from the data layer.
type dashboardStore interface {
	PendingErasures() ([]store.ErasureJob, error)
	DSARs(closed bool) ([]store.DSAR, error)
	Analytics(from, to time.Time) ([]store.AnalyticsDay, error)
	CreditSalesDays(from, to time.Time) ([]store.CreditSales, error)
}

// adminSessions issues and checks dashboard sessions. A session is a
// token MACed with a key derived from the admin token — changing the
// token ends every session — and remembered only when signed out, until
// it would have expired.
type adminSessions struct {
	key []byte
	now func() time.Time

	mu      sync.Mutex
	revoked map[string]time.Time
}

func newAdminSessions(adminToken string, now func() time.Time) *adminSessions {
	m := hmac.New(sha256.New, []byte(adminToken))
	m.Write([]byte("imagegate dashboard session v1"))
	return &adminSessions{key: m.Sum(nil), now: now, revoked: map[string]time.Time{}}
}

func (s *adminSessions) mac(body string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *adminSessions) issue() string {
	var b [16]byte
	rand.Read(b[:])
	body := strconv.FormatInt(s.now().Add(adminSessionTTL).Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString(b[:])
	return body + "." + s.mac(body)
}

// valid reports whether tok is an unexpired, unrevoked session.
func (s *adminSessions) valid(tok string) bool {
	body, sig, ok := cutLast(tok, '.')
	if !ok || len(tok) > 200 || !hmac.Equal([]byte(sig), []byte(s.mac(body))) {
		return false
	}
	expText, id, _ := strings.Cut(body, ".")
	exp, err := strconv.ParseInt(expText, 10, 64)
	now := s.now()
	if err != nil || !now.Before(time.Unix(exp, 0)) || time.Unix(exp, 0).After(now.Add(adminSessionTTL)) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, gone := s.revoked[id]
	return !gone
}

func (s *adminSessions) revoke(tok string) {
	body, _, _ := cutLast(tok, '.')
	expText, id, _ := strings.Cut(body, ".")
	exp, _ := strconv.ParseInt(expText, 10, 64)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, until := range s.revoked {
		if now.After(until) {
			delete(s.revoked, k)
		}
	}
	if len(s.revoked) < 10_000 {
		s.revoked[id] = time.Unix(exp, 0)
	}
}

func cutLast(s string, sep byte) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func (g *Gateway) dashboardRoutes(app *fiber.App, limit fiber.Handler) {
	app.Get("/admin", limit, g.dashOverview)
	app.Get("/admin/partners", limit, g.dashPartners)
	app.Post("/admin/login", limit, g.dashLogin)
	app.Post("/admin/logout", limit, g.dashLogout)
	app.Get("/admin/assets/:name", limit, g.dashAsset)
}

func (g *Gateway) dashSignedIn(c *fiber.Ctx) bool {
	tok := c.Cookies(cookieAdmin)
	return g.cfg.AdminToken != "" && tok != "" && g.adminSessions.valid(tok)
}

// dashRender writes a dashboard page with its own policy: scripts only
// with this response's nonce, styles and everything else from this site.
func (g *Gateway) dashRender(c *fiber.Ctx, status int, page string, p dashboard.Page) error {
	p.Nonce = web.Nonce()
	var buf bytes.Buffer
	if err := g.dash.Render(&buf, page, p); err != nil {
		return err
	}
	c.Set(fiber.HeaderContentSecurityPolicy, web.CSP(p.Nonce, nil, nil))
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(buf.Bytes())
}

func (g *Gateway) dashLoginPage(c *fiber.Ctx, status int, msg string) error {
	if g.cfg.AdminToken == "" {
		return errAdminOff
	}
	return g.dashRender(c, status, "login", dashboard.Page{Title: "Sign in", Data: dashboard.Login{Error: msg}})
}

// dashLogin checks the admin token from the sign-in form and starts a
// dashboard session. Refusals are rate limited (the route's limit) and
// written to the security log like refused admin API tokens.
func (g *Gateway) dashLogin(c *fiber.Ctx) error {
	if g.cfg.AdminToken == "" {
		return errAdminOff
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(c.FormValue("token"))))
	want := sha256.Sum256([]byte(g.cfg.AdminToken))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		cl := g.clientOf(c)
		if g.refusals.Allow("admin:" + cl.ip) {
			g.securityEventFrom(cl, eventAdminRefused, "", "route="+routeOf(c))
		}
		return g.dashLoginPage(c, fiber.StatusUnauthorized, "That is not the admin token.")
	}
	setCookie(c, cookieAdmin, g.adminSessions.issue())
	g.securityEvent(c, eventAdminSignin, "", "")
	return c.Redirect("/admin", fiber.StatusSeeOther)
}

func (g *Gateway) dashLogout(c *fiber.Ctx) error {
	if tok := c.Cookies(cookieAdmin); tok != "" {
		g.adminSessions.revoke(tok)
	}
	clearCookie(c, cookieAdmin)
	return c.Redirect("/admin", fiber.StatusSeeOther)
}

func (g *Gateway) dashAsset(c *fiber.Ctx) error {
	a, ok := g.dash.Asset(c.Params("name"))
	if !ok {
		return fiber.ErrNotFound
	}
	c.Set(fiber.HeaderContentType, a.ContentType)
	if c.Query("v") == a.Version {
		c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	} else {
		c.Set(fiber.HeaderCacheControl, "no-cache")
	}
	return c.Send(a.Body)
}

// dashboardDays is how many days the dated charts cover.
const dashboardDays = 14

func (g *Gateway) dashOverview(c *fiber.Ctx) error {
	if !g.dashSignedIn(c) {
		return g.dashLoginPage(c, fiber.StatusOK, "")
	}
	ov, err := g.overview()
	if err != nil {
		return err
	}
	return g.dashRender(c, fiber.StatusOK, "overview", dashboard.Page{Title: "Overview", Section: "overview", SignedIn: true, Data: ov})
}

func (g *Gateway) overview() (dashboard.Overview, error) {
	now := g.now().UTC()
	from := now.AddDate(0, 0, -dashboardDays+1)
	ov := dashboard.Overview{Now: now, AnalyticsFrom: from.Format(time.DateOnly), AnalyticsTo: now.Format(time.DateOnly)}
	m, err := dashboard.ReadMetrics(g.gatherer)
	if err != nil {
		return ov, err
	}

	var routes []dashboard.Bar
	for r, v := range m.RequestsByRoute {
		ov.Requests += v
		routes = append(routes, dashboard.Bar{Label: r, Value: v})
	}
	ov.Routes = dashboard.BarChart{Title: "Requests by route", Bars: topBars(routes, 8)}
	var classes []dashboard.Bar
	for _, k := range []string{"2xx", "3xx", "4xx", "5xx"} {
		if v := m.RequestsByClass[k]; v > 0 {
			classes = append(classes, dashboard.Bar{Label: k, Value: v})
		}
	}
	ov.Classes = dashboard.BarChart{Title: "Requests by status", Bars: classes}
	ov.GenerationRequests, ov.Loads, ov.LoadErrors, ov.Coalesced = m.GenerationRequests, m.Loads, m.LoadErrors, m.Coalesced

	total, hits := 0.0, 0.0
	for _, t := range []string{"l1", "l2", "l3", "miss"} {
		total += m.CacheResults[t]
		if t != "miss" {
			hits += m.CacheResults[t]
		}
	}
	var tiers []dashboard.Bar
	for _, t := range []string{"l1", "l2", "l3", "miss"} {
		v := m.CacheResults[t]
		tiers = append(tiers, dashboard.Bar{Label: map[string]string{"l1": "L1 memory", "l2": "L2 disk", "l3": "L3 object store", "miss": "miss (generated)"}[t], Value: v, Note: percent(v, total)})
	}
	ov.Cache = dashboard.BarChart{Title: "Cache answers by tier", Bars: tiers}
	ov.Generations = dashboard.BarChart{Title: "Images by how they were made", Bars: []dashboard.Bar{
		{Label: "served from a cache", Value: hits},
		{Label: "generated on the GPU", Value: m.Loads - m.LoadErrors},
		{Label: "joined one in flight", Value: m.Coalesced},
		{Label: "failed", Value: m.LoadErrors},
	}}
	ov.HitRatio = percent(hits, total)
	if total == 0 {
		ov.HitRatio = "–"
	}

	ov.InferenceCalls = m.Inference.Count
	ov.LatencyMean, ov.LatencyP50, ov.LatencyP95 = seconds(m.Inference.Mean()), seconds(m.Inference.Quantile(0.5)), seconds(m.Inference.Quantile(0.95))
	var buckets []dashboard.Bar
	first, last := -1, -1
	for i, b := range m.Inference.Buckets {
		if b.Count > 0 {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	for i := max(first, 0); first >= 0 && i <= last; i++ {
		b := m.Inference.Buckets[i]
		label := "≤ " + seconds(b.UpperBound)
		if math.IsInf(b.UpperBound, 1) {
			label = "slower"
		}
		buckets = append(buckets, dashboard.Bar{Label: label, Value: b.Count})
	}
	ov.Latency = dashboard.BarChart{Title: "Inference calls by latency", Bars: buckets}

	salesFrom := now.AddDate(0, 0, -29)
	ov.CreditFrom = salesFrom.Format(time.DateOnly)
	sales, err := g.store.CreditSalesDays(salesFrom, now)
	if err != nil {
		return ov, err
	}
	money := map[string]int64{}
	var salesBars []dashboard.Bar
	for _, s := range sales {
		ov.CreditsTotal += s.Credits
		for cur, v := range s.Money {
			money[cur] += v
		}
		salesBars = append(salesBars, dashboard.Bar{Label: s.Day, Value: float64(s.Credits)})
	}
	for _, cur := range sortedKeys(money) {
		ov.Revenue = append(ov.Revenue, fmt.Sprintf("%d.%02d %s", money[cur]/100, money[cur]%100, strings.ToUpper(cur)))
	}
	ov.CreditsSold = dashboard.BarChart{Title: "Credits sold per day", Bars: salesBars}

	partners, err := g.store.Partners()
	if err != nil {
		return ov, err
	}
	var pbars []dashboard.Bar
	for _, p := range partners {
		n, err := g.store.PartnerMonthUsage(p.ID, now)
		if err != nil {
			return ov, err
		}
		pbars = append(pbars, dashboard.Bar{Label: p.Name, Value: float64(n), Note: "of " + strconv.Itoa(p.MonthlyQuota)})
	}
	ov.PartnerImages = dashboard.BarChart{Title: "Partner images this month", Bars: pbars}

	erasures, err := g.store.PendingErasures()
	if err != nil {
		return ov, err
	}
	ov.ErasuresPending = len(erasures)
	dsars, err := g.store.DSARs(false)
	if err != nil {
		return ov, err
	}
	for _, r := range dsars {
		if r.IsOpen() {
			ov.DSARsOpen++
			if r.Overdue(now) {
				ov.DSARsLate++
			}
		}
	}

	days, err := g.store.Analytics(from, now)
	if err != nil {
		return ov, err
	}
	byDay, paths := map[string]int64{}, map[string]int64{}
	for _, d := range days {
		for p, n := range d.PageViews {
			byDay[d.Day] += n
			paths[p] += n
			ov.PageViewsTotal += n
		}
	}
	var views, top []dashboard.Bar
	for d := from; !d.After(now); d = d.AddDate(0, 0, 1) {
		k := d.Format(time.DateOnly)
		views = append(views, dashboard.Bar{Label: d.Format("Mon 2 Jan"), Value: float64(byDay[k])})
	}
	for p, n := range paths {
		top = append(top, dashboard.Bar{Label: p, Value: float64(n)})
	}
	ov.PageViews = dashboard.BarChart{Title: "Page views per day", Bars: views}
	ov.TopPaths = dashboard.BarChart{Title: "Page views by page", Bars: topBars(top, 8)}
	return ov, nil
}

func (g *Gateway) dashPartners(c *fiber.Ctx) error {
	if !g.dashSignedIn(c) {
		return g.dashLoginPage(c, fiber.StatusOK, "")
	}
	now := g.now().UTC()
	from := now.AddDate(0, 0, -dashboardDays+1)
	partners, err := g.store.Partners()
	if err != nil {
		return err
	}
	var data dashboard.Partners
	for _, p := range partners {
		month, err := g.store.PartnerMonthUsage(p.ID, now)
		if err != nil {
			return err
		}
		usage, err := g.store.PartnerUsageDays(p.ID, from, now)
		if err != nil {
			return err
		}
		perDay := map[string]int{}
		for _, u := range usage {
			perDay[u.Day] = u.Images
		}
		var bars []dashboard.Bar
		for d := from; !d.After(now); d = d.AddDate(0, 0, 1) {
			bars = append(bars, dashboard.Bar{Label: d.Format("Mon 2 Jan"), Value: float64(perDay[d.Format(time.DateOnly)])})
		}
		data.Items = append(data.Items, dashboard.PartnerRow{
			ID: p.ID, Name: p.Name, Plan: p.Plan, Disabled: p.Disabled, Origins: p.Origins,
			MonthImages: month, Quota: p.MonthlyQuota, RateLimit: p.RateLimit,
			Days:    dashboard.BarChart{Title: p.Name + ": images per day", Bars: bars},
			Snippet: embedSnippet(g.siteOrigin(c), p.PublishableKey),
		})
	}
	return g.dashRender(c, fiber.StatusOK, "partners", dashboard.Page{Title: "Partners", Section: "partners", SignedIn: true, Data: data})
}

// topBars keeps the n largest bars, largest first (ties by label).
func topBars(bars []dashboard.Bar, n int) []dashboard.Bar {
	slices.SortFunc(bars, func(a, b dashboard.Bar) int {
		return cmp.Or(cmp.Compare(b.Value, a.Value), strings.Compare(a.Label, b.Label))
	})
	return bars[:min(n, len(bars))]
}

func percent(v, total float64) string {
	if total == 0 {
		return "0 %"
	}
	return strconv.FormatFloat(100*v/total, 'f', 1, 64) + " %"
}

func seconds(v float64) string {
	if v < 1 {
		return strconv.FormatFloat(v*1000, 'f', 0, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + " s"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
