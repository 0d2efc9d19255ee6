package gateway

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/analytics"
	"github.com/imagegate/imagegate/gateway/consent"
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
		Path:    analytics.NormalizePath(*req.Path),
		Device:  analytics.DeviceClass(c.Get(fiber.HeaderUserAgent), c.Get("Sec-CH-UA-Mobile")),
		Country: g.countryOf(c),
	}
	start, last, ok := analytics.ParseVisitCookie(c.Cookies(cookieAnalytics), now)
	if ok {
		v.VisitStart, v.LastSeen = start, last
	} else {
		start = now
	}
	if err := g.store.RecordPageView(v); err != nil {
		return err
	}
	setCookie(c, cookieAnalytics, analytics.VisitCookie(start, now))
	return c.SendStatus(fiber.StatusNoContent)
}

// analyticsAllowed reports whether this request may be counted: analytics
// consent for the policy in force, no GPC or DNT signal, and no opt-out on the
// signed-in account.
func (g *Gateway) analyticsAllowed(c *fiber.Ctx) bool {
	// Do Not Track is honoured like GPC, for browsers that send only it.
	if c.Get("DNT") == "1" || !consentOf(c).AllowedBy(consent.Analytics, g.cfg.CookiePolicyRevision) {
		return false
	}
	p := principalOf(c)
	return p.account == nil || !p.account.Settings.NoAnalytics
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
	return analytics.ParseCountry(c.Get(HeaderCFIPCountry))
}

// The operator's view: GET /v1/admin/analytics?from=YYYY-MM-DD&to=YYYY-MM-DD.

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
	from, to, err := analytics.ParseDayRange(c.Query("from"), c.Query("to"), g.now())
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
