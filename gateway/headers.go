package gateway

import (
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// securityHeader is a header every response carries, as canonical bytes
// so setting it costs no normalisation on the hot path.
type securityHeader struct{ key, value []byte }

func header(k, v string) securityHeader { return securityHeader{[]byte(k), []byte(v)} }

var (
	securityHeaderSet = []securityHeader{
		header("X-Content-Type-Options", "nosniff"),
		header("X-Frame-Options", "DENY"),
		header("Referrer-Policy", "no-referrer"),
		header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
		header("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
		header("Cross-Origin-Opener-Policy", "same-origin"),
	}
	// Output images are embedded by partner pages; everything else is ours.
	corpCrossOrigin = header("Cross-Origin-Resource-Policy", "cross-origin")
	corpSameOrigin  = header("Cross-Origin-Resource-Policy", "same-origin")
	hsts            = header("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
)

// securityHeaders sets the headers every response carries (promise S2).
// The API serves JSON and images only, so the policy forbids everything a
// page would need; pages set their own policy.
func (g *Gateway) securityHeaders(c *fiber.Ctx) error {
	g.setSecurityHeaders(&c.Response().Header, strings.HasPrefix(c.Path(), "/o/"))
	return c.Next()
}

// setSecurityHeaders sets them on h; output is whether the path is an
// output image's (/o/…), which partner pages embed.
func (g *Gateway) setSecurityHeaders(h *fasthttp.ResponseHeader, output bool) {
	for _, sh := range securityHeaderSet {
		h.SetCanonical(sh.key, sh.value)
	}
	corp := corpSameOrigin
	if output {
		corp = corpCrossOrigin
	}
	h.SetCanonical(corp.key, corp.value)
	if g.cfg.HSTS {
		h.SetCanonical(hsts.key, hsts.value)
	}
}
