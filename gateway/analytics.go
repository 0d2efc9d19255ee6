package gateway

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/store"
)

// analyticsStore is what the analytics, settings, correction and privacy
// routes keep in the data layer.
type analyticsStore interface {
	RecordPageView(store.PageView) error
	Analytics(from, to time.Time) ([]store.AnalyticsDay, error)
	UpdateSettings(accountID string, fn func(*store.Settings)) (store.Settings, bool, error)
	Profile(accountID string) (store.Profile, error)
	SetProfile(accountID string, p store.Profile) error
	CancelEmailChange(accountID string) (bool, error)
}

// Security-log kinds of the routes in this file and settings.go.
const (
	eventSettingsChanged      = "settings_changed"
	eventEmailChangeRequested = "email_change_requested"
	eventEmailChangeCancelled = "email_change_cancelled"
	eventAdminAnalytics       = "admin_analytics"
)

// analyticsRoutes registers first-party analytics, the privacy page and
// account settings and correction routes (issue 6).
func (g *Gateway) analyticsRoutes(app fiber.Router, with, account func(...fiber.Handler) []fiber.Handler, limited fiber.Handler) {
	// Every route here that knows the account honours Sec-GPC on it, so
	// the opt-out holds even before gpcOptOut joins the identify chain.
	acct := func(hs ...fiber.Handler) []fiber.Handler {
		return account(append([]fiber.Handler{g.gpcOptOut}, hs...)...)
	}
	app.Post("/v1/analytics/pageview", with(g.gpcOptOut, g.pageView)...)
	app.Get("/v1/admin/analytics", limited, g.requireAdmin, g.adminAnalytics)

	app.Get("/v1/account/settings", acct(g.getSettings)...)
	app.Put("/v1/account/settings", acct(g.putSettings)...)
	app.Post("/v1/account/email", acct(g.changeEmail)...)
	app.Delete("/v1/account/email", acct(g.cancelEmailChange)...)
	app.Get("/v1/account/profile", acct(g.getProfile)...)
	app.Patch("/v1/account/profile", acct(g.patchProfile)...)

	app.Get("/privacy", with(g.privacyPage)...)
	app.Get("/v1/privacy", with(g.privacyJSON)...)
}

// First-party analytics (promise K4).
//
// The site's pages report a view with POST /v1/analytics/pageview. It is
// counted only when the visitor allowed analytics cookies for the policy
// in force, sends no Sec-GPC: 1, and (when signed in) has not opted out in
// the account's settings. A counted view is reduced at once to aggregate
// dimensions — a path from a fixed allow-list, a device class, a country
// from a trusted proxy — and added to daily counters; no IP address, user
// agent, prompt, account or visitor id is ever stored. The analytics
// cookie holds only when the visit started and when it was last active,
// which is how visit length is measured without any identifier.

// visitIdle ends a visit: a view this long after the previous one starts
// a new visit. It equals the analytics cookie's lifetime.
const visitIdle = 30 * time.Minute

// visitMax bounds one visit's length, so a forged or endlessly refreshed
// cookie cannot stretch a visit across days.
const visitMax = 24 * time.Hour

// maxPageViewBody bounds the request body: {"path": "..."}.
const maxPageViewBody = 2 << 10

type pageViewJSON struct {
	Path *string `json:"path"`
}

// pageView counts one page view if the visitor allows it, and refreshes
// the analytics cookie. Without consent it changes nothing and sets no
// cookie (a leftover analytics cookie is deleted).
func (g *Gateway) pageView(c *fiber.Ctx) error {
	if !g.analyticsAllowed(c) {
		if c.Cookies(cookieAnalytics) != "" {
			clearCookie(c, cookieAnalytics)
		}
		return c.SendStatus(fiber.StatusNoContent)
	}
	if len(c.Body()) > maxPageViewBody {
		return &apiError{Status: fiber.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
			Msg: fmt.Sprintf("request body larger than %d bytes", maxPageViewBody)}
	}
	var req pageViewJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Path == nil {
		return badRequest("missing_field", "path: required (the page's path, e.g. location.pathname)")
	}
	now := g.now()
	v := store.PageView{
		Path:    normalizePath(*req.Path),
		Device:  deviceClass(c.Get(fiber.HeaderUserAgent), c.Get("Sec-CH-UA-Mobile")),
		Country: g.countryOf(c),
	}
	start, last, ok := parseVisitCookie(c.Cookies(cookieAnalytics), now)
	if ok {
		v.VisitStart, v.LastSeen = start, last
	} else {
		start = now
	}
	if err := g.store.RecordPageView(v); err != nil {
		return err
	}
	setCookie(c, cookieAnalytics, visitCookie(start, now))
	return c.SendStatus(fiber.StatusNoContent)
}

// analyticsAllowed reports whether this request may be counted: analytics
// consent for the policy in force, no GPC signal, and no opt-out on the
// signed-in account.
func (g *Gateway) analyticsAllowed(c *fiber.Ctx) bool {
	if !consentOf(c).allowedBy(categoryAnalytics, g.cfg.CookiePolicyRevision) {
		return false
	}
	p := principalOf(c)
	return p.account == nil || !p.account.Settings.NoAnalytics
}

// visitCookie is the analytics cookie's value: the visit's start and its
// latest view, in Unix seconds. Nothing else, and nothing that tells one
// visitor from another who came at the same second.
func visitCookie(start, last time.Time) string {
	return strconv.FormatInt(start.Unix(), 10) + "." + strconv.FormatInt(last.Unix(), 10)
}

// parseVisitCookie reads the analytics cookie. ok is false — this view
// starts a new visit — when it is absent, malformed, idle for visitIdle,
// longer than visitMax, or not in order (start ≤ last ≤ now, allowing a
// minute of clock skew between gateways).
func parseVisitCookie(v string, now time.Time) (start, last time.Time, ok bool) {
	a, b, found := strings.Cut(v, ".")
	if !found || !decimal(a) || !decimal(b) {
		return time.Time{}, time.Time{}, false
	}
	s, err1 := strconv.ParseInt(a, 10, 64)
	l, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, time.Time{}, false
	}
	start, last = time.Unix(s, 0), time.Unix(l, 0)
	if start.After(last) || last.After(now.Add(time.Minute)) || now.Sub(last) >= visitIdle || last.Sub(start) > visitMax {
		return time.Time{}, time.Time{}, false
	}
	if last.After(now) {
		last = now
	}
	if start.After(last) {
		start = last
	}
	return start, last, true
}

// decimal reports whether s is 1 to 12 ASCII digits (Unix seconds until
// the year 33658).
func decimal(s string) bool {
	if len(s) == 0 || len(s) > 12 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// analyticsPaths are the pages counted by path. A "*" segment stands for
// one id-like segment and is counted as the pattern, never the value, so
// no id, query or typed text reaches the counters; every other path is
// counted as "other".
var analyticsPaths = []string{
	"/", "/about", "/account", "/account/*", "/contact", "/cookies", "/docs", "/docs/*", "/edit", "/embed",
	"/explore", "/gallery", "/generate", "/help", "/history", "/images/*", "/login", "/pricing", "/privacy",
	"/reset-password", "/settings", "/signin", "/signup", "/terms", "/verify-email",
}

// maxAnalyticsPath bounds the raw path looked at; longer ones are "other".
const maxAnalyticsPath = 256

// normalizePath maps a page's path, as the browser reports it, to its
// entry in analyticsPaths or store.AnalyticsOtherPath: the query and
// fragment are dropped, ASCII letters lower-cased, one trailing slash
// ignored; anything not plain ASCII is "other".
func normalizePath(raw string) string {
	if len(raw) > maxAnalyticsPath {
		return store.AnalyticsOtherPath
	}
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if raw == "" || raw[0] != '/' {
		return store.AnalyticsOtherPath
	}
	if len(raw) > 1 {
		raw = strings.TrimSuffix(raw, "/")
	}
	var b [maxAnalyticsPath]byte
	p := b[:0]
	for i := range len(raw) {
		ch := raw[i]
		switch {
		case 'A' <= ch && ch <= 'Z':
			p = append(p, ch+'a'-'A')
		case 'a' <= ch && ch <= 'z', '0' <= ch && ch <= '9', ch == '/', ch == '-', ch == '_', ch == '.':
			p = append(p, ch)
		default:
			return store.AnalyticsOtherPath
		}
	}
	for _, pattern := range analyticsPaths {
		if pathMatches(pattern, string(p)) {
			return pattern
		}
	}
	return store.AnalyticsOtherPath
}

// pathMatches matches a lower-cased path against an allow-list pattern,
// segment by segment; "*" matches one non-empty segment other than "."
// and "..".
func pathMatches(pattern, path string) bool {
	for {
		ps, prest, pmore := strings.Cut(strings.TrimPrefix(pattern, "/"), "/")
		s, rest, more := strings.Cut(strings.TrimPrefix(path, "/"), "/")
		switch {
		case pmore != more:
			return false
		case ps == "*":
			if s == "" || s == "." || s == ".." {
				return false
			}
		case ps != s:
			return false
		}
		if !more {
			return true
		}
		pattern, path = "/"+prest, "/"+rest
	}
}

// maxUserAgent bounds how much of a User-Agent is inspected.
const maxUserAgent = 512

var (
	botMarkers = []string{"bot", "crawl", "spider", "slurp", "headless", "lighthouse", "preview", "monitor",
		"curl/", "wget/", "python-", "go-http-client", "okhttp", "java/", "httpclient", "facebookexternalhit"}
	tabletMarkers = []string{"ipad", "tablet", "kindle", "silk/", "playbook"}
	mobileMarkers = []string{"mobi", "iphone", "ipod", "android", "windows phone", "blackberry", "opera mini"}
)

// deviceClass tells desktop, mobile, tablet and bot apart from the
// User-Agent (and the Sec-CH-UA-Mobile client hint). The User-Agent is
// read here and dropped: only the class is kept. An empty User-Agent is
// not a browser.
func deviceClass(ua, chMobile string) string {
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
	}
	u := strings.ToLower(ua)
	has := func(markers []string) bool {
		for _, m := range markers {
			if strings.Contains(u, m) {
				return true
			}
		}
		return false
	}
	switch {
	case strings.TrimSpace(u) == "" || has(botMarkers):
		return store.DeviceBot
	case chMobile == "?1":
		return store.DeviceMobile
	case has(tabletMarkers) || (strings.Contains(u, "android") && !strings.Contains(u, "mobile")):
		return store.DeviceTablet
	case has(mobileMarkers):
		return store.DeviceMobile
	}
	return store.DeviceDesktop
}

// HeaderCFIPCountry is Cloudflare's header naming the visitor's country.
const HeaderCFIPCountry = "CF-IPCountry"

// countryOf is the visitor's country as a trusted proxy names it (the
// CF-IPCountry header, when the TCP peer is one of ClientIP's trusted
// proxies), or "unknown". The gateway never looks the country up from the
// address itself. A proxy that passes a client's own CF-IPCountry through
// lets that client choose only its own country in the counts.
func (g *Gateway) countryOf(c *fiber.Ctx) string {
	peer, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	if !g.ips.IsTrusted(peer.Unmap()) {
		return store.AnalyticsUnknownCountry
	}
	return parseCountry(c.Get(HeaderCFIPCountry))
}

// parseCountry accepts an ISO 3166-1 alpha-2 code in either case. "XX"
// (Cloudflare: unknown) and "T1" (Tor) are unknown.
func parseCountry(v string) string {
	if len(v) != 2 {
		return store.AnalyticsUnknownCountry
	}
	up := strings.ToUpper(v)
	if up[0] < 'A' || up[0] > 'Z' || up[1] < 'A' || up[1] > 'Z' || up == "XX" {
		return store.AnalyticsUnknownCountry
	}
	return up
}

// The operator's view: GET /v1/admin/analytics?from=YYYY-MM-DD&to=YYYY-MM-DD.

// maxAnalyticsRange bounds one report, in days.
const maxAnalyticsRange = 366

// analyticsReport is the body of GET /v1/admin/analytics.
type analyticsReport struct {
	From  string               `json:"from"`
	To    string               `json:"to"`
	Days  []store.AnalyticsDay `json:"days"`
	Total store.AnalyticsDay   `json:"total"`
	// MeanVisitSeconds is the total length of the range's visits over
	// their number; MedianVisitLength the histogram bucket holding the
	// median visit.
	MeanVisitSeconds  float64 `json:"mean_visit_seconds"`
	MedianVisitLength string  `json:"median_visit_length"`
	// VisitLengthBuckets lists the histogram's buckets, shortest first.
	VisitLengthBuckets []string `json:"visit_length_buckets"`
	// Note says what the numbers are.
	Note string `json:"note"`
}

const analyticsNote = "First-party, aggregated counts of visitors who allowed analytics: page views by path, visits by device class and country, and visit lengths. No IP address, user agent, prompt or identifier is stored; the counts describe no person and are kept without a time limit."

// adminAnalytics reports the daily aggregates of a date range (default:
// the last 30 days).
func (g *Gateway) adminAnalytics(c *fiber.Ctx) error {
	from, to, err := parseDayRange(c.Query("from"), c.Query("to"), g.now())
	if err != nil {
		return err
	}
	days, err := g.store.Analytics(from, to)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAdminAnalytics, "", "")
	rep := analyticsReport{
		From: from.Format(time.DateOnly), To: to.Format(time.DateOnly), Days: days,
		VisitLengthBuckets: store.VisitLengths, Note: analyticsNote,
	}
	if rep.Days == nil {
		rep.Days = []store.AnalyticsDay{}
	}
	for _, d := range days {
		rep.Total.Add(d)
	}
	rep.Total.Add(store.AnalyticsDay{}) // empty maps, not null, when there is no data
	if rep.Total.Visits > 0 {
		rep.MeanVisitSeconds = float64(rep.Total.VisitSeconds) / float64(rep.Total.Visits)
	}
	rep.MedianVisitLength = rep.Total.MedianVisitLength()
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(rep)
}

// parseDayRange reads an inclusive range of UTC days. Empty to is today,
// empty from 29 days before to; the range may not be reversed or longer
// than maxAnalyticsRange days.
func parseDayRange(fromQ, toQ string, now time.Time) (from, to time.Time, err error) {
	day := func(name, v string, def time.Time) (time.Time, error) {
		if v == "" {
			return def, nil
		}
		t, err := time.Parse(time.DateOnly, v)
		if err != nil || len(v) != len(time.DateOnly) {
			return time.Time{}, badRequest("invalid_date", name+": expected YYYY-MM-DD")
		}
		return t, nil
	}
	today := now.UTC().Truncate(24 * time.Hour)
	if to, err = day("to", toQ, today); err != nil {
		return
	}
	if from, err = day("from", fromQ, to.AddDate(0, 0, -29)); err != nil {
		return
	}
	switch {
	case from.After(to):
		err = badRequest("invalid_range", "from: must not be after to")
	case to.Sub(from) >= maxAnalyticsRange*24*time.Hour:
		err = badRequest("invalid_range", fmt.Sprintf("the range may span at most %d days", maxAnalyticsRange))
	}
	return
}
