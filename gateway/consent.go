package gateway

import (
	"crypto/rand"
	"encoding/base32"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/store"
)

// consentState is the visitor's cookie choice as it applies to this
// request (promises K1, K2, K5).
type consentState struct {
	visitor string // random id from the consent cookie; empty before one is set
	// revision is the cookie-policy revision the stored choice answered.
	revision    int
	decided     bool // the visitor answered (any revision)
	preferences bool
	analytics   bool
	gpc         bool // this request carries Sec-GPC: 1
	gpcRecorded bool // a GPC opt-out is already recorded for this visitor
}

// current reports whether the choice answers the policy in force; a
// choice for an older revision is stale and the visitor is asked again.
func (s consentState) current(revision int) bool { return s.decided && s.revision == revision }

type consentKey struct{}

// consentOf returns the request's consent state: the one a handler
// recorded during this request, else the consent cookie and Sec-GPC as
// the request brought them (a malformed cookie counts as no choice). It is
// computed on demand, so requests that never look at consent pay nothing.
func consentOf(c *fiber.Ctx) consentState {
	if s, ok := c.Locals(consentKey{}).(consentState); ok {
		return s
	}
	s := parseConsentCookie(c.Cookies(cookieConsent))
	s.gpc = c.Get("Sec-GPC") == "1"
	return s
}

// allowedBy reports whether a category may be set under this state at the
// given policy revision. GPC always vetoes analytics.
func (s consentState) allowedBy(cat cookieCategory, revision int) bool {
	switch cat {
	case categoryNecessary:
		return true
	case categoryPreferences:
		return s.current(revision) && s.preferences
	case categoryAnalytics:
		return s.current(revision) && s.analytics && !s.gpc
	}
	return false
}

// The consent cookie is "<visitor>.<revision>.<flags>": flags are letters
// d (decided), p (preferences), a (analytics), g (GPC opt-out recorded),
// or "-" for none.
func parseConsentCookie(v string) consentState {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || !validVisitor(parts[0]) {
		return consentState{}
	}
	rev, err := strconv.Atoi(parts[1])
	if err != nil || rev < 0 || rev > 1_000_000 {
		return consentState{}
	}
	s := consentState{visitor: parts[0], revision: rev}
	for _, f := range parts[2] {
		switch f {
		case 'd':
			s.decided = true
		case 'p':
			s.preferences = true
		case 'a':
			s.analytics = true
		case 'g':
			s.gpcRecorded = true
		case '-':
		default:
			return consentState{}
		}
	}
	return s
}

func (s consentState) cookieValue() string {
	flags := ""
	for _, f := range []struct {
		on bool
		c  string
	}{{s.decided, "d"}, {s.preferences, "p"}, {s.analytics, "a"}, {s.gpcRecorded, "g"}} {
		if f.on {
			flags += f.c
		}
	}
	if flags == "" {
		flags = "-"
	}
	return s.visitor + "." + strconv.Itoa(s.revision) + "." + flags
}

var visitorEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func newVisitorID() string {
	var b [16]byte
	rand.Read(b[:])
	return "v" + visitorEncoding.EncodeToString(b[:])
}

func validVisitor(v string) bool {
	if len(v) != 27 || v[0] != 'v' {
		return false
	}
	_, err := visitorEncoding.DecodeString(v[1:])
	return err == nil
}

// consentJSON is the body of GET and PUT /v1/consent.
type consentJSON struct {
	// Revision is the cookie policy in force; Decided says whether the
	// visitor answered it (false: show the banner).
	Revision    int  `json:"revision"`
	Decided     bool `json:"decided"`
	Stale       bool `json:"stale"`
	Preferences bool `json:"preferences"`
	Analytics   bool `json:"analytics"`
	GPC         bool `json:"gpc"`
	// Updated is when the cookie policy last changed (YYYY-MM-DD).
	Updated string `json:"updated"`
}

func (g *Gateway) consentView(s consentState) consentJSON {
	cur := s.current(g.cfg.CookiePolicyRevision)
	return consentJSON{
		Revision: g.cfg.CookiePolicyRevision, Decided: cur, Stale: s.decided && !cur,
		Preferences: cur && s.preferences, Analytics: cur && s.analytics && !s.gpc,
		GPC: s.gpc, Updated: g.cfg.CookiePolicyUpdated,
	}
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

func (g *Gateway) recordGPC(c *fiber.Ctx, s consentState) (consentState, error) {
	if !s.gpc || s.gpcRecorded {
		return s, nil
	}
	p := principalOf(c)
	if s.visitor == "" && p.account == nil && !g.gpcRecords.Allow("gpc:"+g.ips.Addr(c).String()) {
		// A client that never keeps the cookie would write a row per
		// request. Past the throttle its opt-out is still honoured
		// (analytics stay off while Sec-GPC is sent), just not written
		// down again.
		return s, nil
	}
	if s.visitor == "" {
		s.visitor = newVisitorID()
	}
	subject := s.visitor
	if p.account != nil {
		subject = p.account.ID
	}
	_, err := g.store.RecordConsent(store.Consent{
		Subject: subject, Visitor: s.visitor, Revision: g.cfg.CookiePolicyRevision,
		Preferences: s.current(g.cfg.CookiePolicyRevision) && s.preferences, Analytics: false, Source: store.ConsentGPC,
	})
	if err != nil {
		return s, err
	}
	s.gpcRecorded, s.analytics = true, false
	setCookie(c, cookieConsent, s.cookieValue())
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
	if s.visitor == "" {
		s.visitor = newVisitorID()
	}
	analytics := *req.Analytics && !s.gpc
	subject := s.visitor
	if p := principalOf(c); p.account != nil {
		subject = p.account.ID
	}
	_, err := g.store.RecordConsent(store.Consent{
		Subject: subject, Visitor: s.visitor, Revision: g.cfg.CookiePolicyRevision,
		Preferences: *req.Preferences, Analytics: analytics, Source: source,
	})
	if err != nil {
		return err
	}
	s.decided, s.revision, s.preferences, s.analytics = true, g.cfg.CookiePolicyRevision, *req.Preferences, analytics
	s.gpcRecorded = s.gpcRecorded || s.gpc
	c.Locals(consentKey{}, s)
	setCookie(c, cookieConsent, s.cookieValue())
	if !s.preferences {
		clearCookie(c, cookiePrefs)
	}
	if !analytics {
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
	return c.JSON(cookieRegistry)
}
