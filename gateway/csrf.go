package gateway

import (
	"net/url"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// errCrossOrigin refuses a cross-origin state-changing browser request.
var errCrossOrigin = &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "cross_origin",
	Msg: "cross-origin request refused: state-changing requests must come from this site's own pages"}

// crossOrigin protects state-changing requests against CSRF the way Go's
// net/http.CrossOriginProtection does: safe methods pass; a browser's
// Sec-Fetch-Site must say same-origin (or none, for a typed URL); without
// it, an Origin header must match the Host; a request with neither header
// is not from a browser (an SDK, curl) and passes, as does one with an
// Authorization header, which browsers never attach on their own. So
// cookie-authenticated routes need no token plumbing and API clients work
// unchanged.
func (g *Gateway) crossOrigin(c *fiber.Ctx) error {
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return c.Next()
	}
	// Browsers attach neither Authorization nor a partner key on their
	// own; a page on another origin can send Imagegate-Key only after a
	// CORS preflight, which only the generation route answers, and such
	// requests never act on cookies (partnerAuth).
	if c.Get(fiber.HeaderAuthorization) != "" || (c.Get(headerPartnerKey) != "" && c.Path() == partnerRoute) {
		return c.Next()
	}
	origin := c.Get(fiber.HeaderOrigin)
	switch c.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return c.Next()
	case "":
	default:
		if g.trustedOrigin(origin) {
			return c.Next()
		}
		return errCrossOrigin
	}
	if origin == "" {
		return c.Next()
	}
	if g.trustedOrigin(origin) {
		return c.Next()
	}
	if u, err := url.Parse(origin); err == nil && origin != "null" && strings.EqualFold(u.Host, string(c.Request().Host())) {
		return c.Next()
	}
	return errCrossOrigin
}

func (g *Gateway) trustedOrigin(origin string) bool {
	return origin != "" && slices.Contains(g.cfg.TrustedOrigins, strings.ToLower(origin))
}
