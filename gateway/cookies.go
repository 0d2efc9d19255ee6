package gateway

import (
	"bytes"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/gateway/consent"
)

// Cookie names, declared in the consent registry.
const (
	cookieSession   = consent.CookieSession
	cookieOAuth     = consent.CookieOAuth
	cookieConsent   = consent.CookieConsent
	cookiePrefs     = consent.CookiePrefs
	cookieAnalytics = consent.CookieAnalytics
)

func sameSite(s consent.Spec) string {
	if s.Strict() {
		return fiber.CookieSameSiteStrictMode
	}
	return fiber.CookieSameSiteLaxMode
}

// setCookie sets a declared cookie with the attributes its declaration
// implies. Setting an undeclared name panics: it is a programming error
// that tests catch.
func setCookie(c *fiber.Ctx, name, value string) {
	spec, ok := consent.Lookup(name)
	if !ok {
		panic("gateway: cookie " + name + " is not in the registry")
	}
	ck := &fiber.Cookie{
		Name: name, Value: value, Path: "/", Secure: true, HTTPOnly: !spec.Script(),
		SameSite: sameSite(spec), MaxAge: int(spec.MaxAge() / time.Second),
	}
	if spec.MaxAge() == 0 {
		ck.SessionOnly = true
	}
	c.Cookie(ck)
}

// clearCookie tells the browser to delete a declared cookie. Deleting is
// always allowed, consent or not.
func clearCookie(c *fiber.Ctx, name string) {
	spec, ok := consent.Lookup(name)
	if !ok {
		panic("gateway: cookie " + name + " is not in the registry")
	}
	c.Cookie(&fiber.Cookie{Name: name, Value: "", Path: "/", Secure: true, HTTPOnly: true,
		SameSite: sameSite(spec), MaxAge: -1, Expires: time.Unix(0, 0)})
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

// cookieChoice is what the Set-Cookie filter asks of a visitor's consent
// (consent.State answers it): whether a cookie of this category may be set
// under the cookie policy at revision.
type cookieChoice interface {
	AllowedBy(cat consent.Category, revision int) bool
}

func (g *Gateway) dropDisallowedCookies(c *fiber.Ctx) {
	h := &c.Response().Header
	var drop [][]byte
	var choice cookieChoice // read once, and only if a cookie needs it
	h.VisitAllCookie(func(name, value []byte) {
		spec, declared := consent.Lookup(string(name))
		if !declared {
			g.metrics.undeclaredCookies.Inc()
			g.logger.Error("undeclared cookie dropped", "cookie", string(name))
			drop = append(drop, bytes.Clone(name))
			return
		}
		if spec.Category == consent.Necessary || isDeletion(value) {
			return
		}
		if choice == nil {
			choice = consentOf(c)
		}
		if !choice.AllowedBy(spec.Category, g.cfg.CookiePolicyRevision) {
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
