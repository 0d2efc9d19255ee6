package gateway

import (
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/consent"
	"github.com/imagegate/imagegate/store"
)

type consentKey struct{}

// consentOf returns the request's consent state: the one a handler
// recorded during this request, else the consent cookie and Sec-GPC as
// the request brought them (a malformed cookie counts as no choice). It is
// computed on demand, so requests that never look at consent pay nothing.
func consentOf(c *fiber.Ctx) consent.State {
	if s, ok := c.Locals(consentKey{}).(consent.State); ok {
		return s
	}
	s := consent.ParseCookie(c.Cookies(cookieConsent))
	s.GPC = c.Get("Sec-GPC") == "1"
	return s
}

func (g *Gateway) consentView(s consent.State) consent.View {
	return s.View(g.cfg.CookiePolicyRevision, g.cfg.CookiePolicyUpdated)
}

// getConsent answers the visitor's choice. A GPC signal not yet on record
// is recorded here (once per browser), not on every API call, so clients
// that drop cookies cannot turn GPC into a write per request elsewhere.
func (g *Gateway) getConsent(c *fiber.Ctx) error {
	s, err := g.recordGPC(c, consentOf(c))
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(g.consentView(s))
}

// recordGPC records a Sec-GPC: 1 opt-out of analytics the first time a
// browser sends it, and withdraws any analytics cookie.
//
// gpcRecordPolicy bounds the rows one address's cookie-less, signed-out
// requests write.
var gpcRecordPolicy = LimitPolicy{Quota: 30, Window: time.Hour}

func (g *Gateway) recordGPC(c *fiber.Ctx, s consent.State) (consent.State, error) {
	if !s.GPC || s.GPCRecorded {
		return s, nil
	}
	p := principalOf(c)
	if s.Visitor == "" && p.account == nil && !g.gpcRecords.Allow("gpc:"+g.ips.Addr(c).String()) {
		// A client that never keeps the cookie would write a row per
		// request. Past the throttle its opt-out is still honoured
		// (analytics stay off while Sec-GPC is sent), just not written
		// down again.
		return s, nil
	}
	if s.Visitor == "" {
		s.Visitor = consent.NewVisitorID()
	}
	subject := s.Visitor
	if p.account != nil {
		subject = p.account.ID
	}
	if _, err := g.store.RecordConsent(s.Proof(subject, g.cfg.CookiePolicyRevision, store.ConsentGPC)); err != nil {
		return s, err
	}
	s.GPCRecorded, s.Analytics = true, false
	setCookie(c, cookieConsent, s.CookieValue())
	clearCookie(c, cookieAnalytics)
	c.Locals(consentKey{}, s)
	return s, nil
}

type consentPut struct {
	Preferences *bool  `json:"preferences"`
	Analytics   *bool  `json:"analytics"`
	Source      string `json:"source"`
}

// putConsent records a choice. Rejecting everything is the same call as
// accepting everything, with false instead of true (promise K1).
func (g *Gateway) putConsent(c *fiber.Ctx) error {
	var req consentPut
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Preferences == nil || req.Analytics == nil {
		return badRequest("missing_field", "preferences and analytics: both are required (true or false)")
	}
	source := store.ConsentBanner
	switch req.Source {
	case "", store.ConsentBanner:
	case store.ConsentSettings:
		source = store.ConsentSettings
	default:
		return badRequest("invalid_source", `source: must be "banner" or "settings"`)
	}
	s := consentOf(c)
	if s.Visitor == "" {
		s.Visitor = consent.NewVisitorID()
	}
	subject := s.Visitor
	if p := principalOf(c); p.account != nil {
		subject = p.account.ID
	}
	s = s.Decide(*req.Preferences, *req.Analytics, g.cfg.CookiePolicyRevision)
	if _, err := g.store.RecordConsent(s.Proof(subject, g.cfg.CookiePolicyRevision, source)); err != nil {
		return err
	}
	c.Locals(consentKey{}, s)
	setCookie(c, cookieConsent, s.CookieValue())
	if !s.Preferences {
		clearCookie(c, cookiePrefs)
	}
	if !s.Analytics {
		clearCookie(c, cookieAnalytics)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(g.consentView(s))
}

// gpcJSON serves /.well-known/gpc.json: this site honours Global Privacy
// Control.
func (g *Gateway) gpcJSON(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"gpc": true, "lastUpdate": g.cfg.CookiePolicyUpdated})
}

// cookiesJSON serves the cookie registry (promise K6).
func (g *Gateway) cookiesJSON(c *fiber.Ctx) error {
	return c.JSON(consent.Cookies())
}
