package gateway

import (
	"bytes"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// cookieCategory is a consent category (promise K1).
type cookieCategory string

const (
	categoryNecessary   cookieCategory = "necessary"
	categoryPreferences cookieCategory = "preferences"
	categoryAnalytics   cookieCategory = "analytics"
)

// Cookie names.
const (
	cookieSession   = "__Host-imagegate_session"
	cookieOAuth     = "__Host-imagegate_oauth"
	cookieConsent   = "__Host-imagegate_consent"
	cookiePrefs     = "__Host-imagegate_prefs"
	cookieAnalytics = "__Host-imagegate_visit"
)

// cookieSpec declares a cookie the gateway may set. The cookie policy
// (GET /cookies, GET /v1/cookies) is rendered from these declarations, and
// the consent filter drops any Set-Cookie whose name is not declared here
// or whose category the visitor has not allowed (promises K1, K6).
type cookieSpec struct {
	Name     string         `json:"name"`
	Category cookieCategory `json:"category"`
	Purpose  string         `json:"purpose"`
	Lifetime string         `json:"lifetime"`
	// maxAge is the cookie's Max-Age; zero makes a browser-session cookie.
	maxAge time.Duration
	// script marks a cookie the site's own pages may read (no HttpOnly).
	script bool
	// strict sends the cookie with same-site navigations only
	// (SameSite=Strict) instead of Lax.
	strict bool
}

func (s cookieSpec) sameSite() string {
	if s.strict {
		return fiber.CookieSameSiteStrictMode
	}
	return fiber.CookieSameSiteLaxMode
}

// cookieRegistry is every cookie imagegate can set. All are first-party,
// host-only (__Host-), Secure and SameSite=Lax.
var cookieRegistry = []cookieSpec{
	{Name: cookieSession, Category: categoryNecessary,
		Purpose: "Keeps you signed in. Holds a random session token; the server stores only its hash.",
		// The session itself ends earlier on inactivity or sign-out.
		Lifetime: "30 days at most (ends at sign-out or after 7 days without use)", maxAge: 30 * 24 * time.Hour},
	{Name: cookieOAuth, Category: categoryNecessary,
		Purpose:  "Protects Sign in with Google against forged requests (state and PKCE verifier).",
		Lifetime: "10 minutes", maxAge: 10 * time.Minute},
	{Name: cookieAdmin, Category: categoryNecessary,
		Purpose:  "Keeps an operator signed in to the dashboard at /admin (operators only; SameSite=Strict).",
		Lifetime: "30 minutes", maxAge: adminSessionTTL, strict: true},
	{Name: cookieConsent, Category: categoryNecessary,
		Purpose:  "Remembers your cookie choice and the policy revision you answered, so we do not ask again.",
		Lifetime: "1 year", maxAge: 365 * 24 * time.Hour},
	{Name: cookiePrefs, Category: categoryPreferences,
		Purpose:  "Remembers your default image size, style and output format.",
		Lifetime: "1 year", maxAge: 365 * 24 * time.Hour, script: true},
	{Name: cookieAnalytics, Category: categoryAnalytics,
		Purpose:  "First-party, aggregated analytics: holds only when your visit started and when you were last active, to measure visit length. No identifier, never shared.",
		Lifetime: "30 minutes after your last page view", maxAge: 30 * time.Minute},
}

func cookieSpecFor(name string) (cookieSpec, bool) {
	for _, s := range cookieRegistry {
		if s.Name == name {
			return s, true
		}
	}
	return cookieSpec{}, false
}

// setCookie sets a declared cookie with the attributes its declaration
// implies. Setting an undeclared name panics: it is a programming error
// that tests catch.
func setCookie(c *fiber.Ctx, name, value string) {
	spec, ok := cookieSpecFor(name)
	if !ok {
		panic("gateway: cookie " + name + " is not in the registry")
	}
	ck := &fiber.Cookie{
		Name: name, Value: value, Path: "/", Secure: true, HTTPOnly: !spec.script,
		SameSite: spec.sameSite(), MaxAge: int(spec.maxAge / time.Second),
	}
	if spec.maxAge == 0 {
		ck.SessionOnly = true
	}
	c.Cookie(ck)
}

// clearCookie tells the browser to delete a declared cookie. Deleting is
// always allowed, consent or not.
func clearCookie(c *fiber.Ctx, name string) {
	spec, ok := cookieSpecFor(name)
	if !ok {
		panic("gateway: cookie " + name + " is not in the registry")
	}
	c.Cookie(&fiber.Cookie{Name: name, Value: "", Path: "/", Secure: true, HTTPOnly: true,
		SameSite: spec.sameSite(), MaxAge: -1, Expires: time.Unix(0, 0)})
}

// filterCookies runs after the handler and removes every Set-Cookie the
// visitor's consent does not allow: undeclared names always (and counted,
// so tests fail), non-necessary categories unless allowed. Deletions pass.
// It filters in a deferred call, so a handler that panics after setting a
// cookie cannot slip it past (the recover middleware is outermost).
func (g *Gateway) filterCookies(c *fiber.Ctx) error {
	defer g.dropDisallowedCookies(c)
	return c.Next()
}

func (g *Gateway) dropDisallowedCookies(c *fiber.Ctx) {
	h := &c.Response().Header
	var drop [][]byte
	var consent *consentState // read once, and only if a cookie needs it
	h.VisitAllCookie(func(name, value []byte) {
		spec, declared := cookieSpecFor(string(name))
		if !declared {
			g.metrics.undeclaredCookies.Inc()
			g.logger.Error("undeclared cookie dropped", "cookie", string(name))
			drop = append(drop, bytes.Clone(name))
			return
		}
		if spec.Category == categoryNecessary || isDeletion(value) {
			return
		}
		if consent == nil {
			s := consentOf(c)
			consent = &s
		}
		if !consent.allowedBy(spec.Category, g.cfg.CookiePolicyRevision) {
			drop = append(drop, bytes.Clone(name))
		}
	})
	for _, name := range drop {
		h.DelCookieBytes(name)
	}
}

// isDeletion reports whether a raw Set-Cookie value expires the cookie.
func isDeletion(raw []byte) bool {
	var ck fasthttp.Cookie
	if ck.ParseBytes(raw) != nil {
		return false
	}
	return !ck.Expire().IsZero() && ck.Expire().Before(time.Now())
}
