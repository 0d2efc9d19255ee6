package gateway

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/partner"
	"github.com/imagegate/imagegate/gateway/web"
	"github.com/imagegate/imagegate/gateway/widget"
	"github.com/imagegate/imagegate/store"
)

// embedRoutes serves the partner widget: embed.js for partner pages, the
// frame page they embed, and its script.
func (g *Gateway) embedRoutes(app *fiber.App, limit fiber.Handler) {
	js, frameJS := widget.Script(), widget.FrameScript()
	app.Get("/embed.js", limit, g.embedAsset(js, widget.ETag(js), 3600))
	app.Get("/embed/frame.js", limit, g.embedAsset(frameJS, widget.ETag(frameJS), 3600))
	app.Get("/embed/frame", limit, g.embedFrame)
}

// asset serves embedded script bytes, cacheable for maxAge seconds and
// revalidated by ETag. Partner pages load embed.js cross-origin.
func (g *Gateway) embedAsset(body []byte, etag string, maxAge int) fiber.Handler {
	cc := fmt.Sprintf("public, max-age=%d", maxAge)
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderCacheControl, cc)
		c.Set(fiber.HeaderETag, etag)
		c.Set(fiber.HeaderCrossOriginResourcePolicy, "cross-origin")
		c.Set(fiber.HeaderContentType, "text/javascript; charset=utf-8")
		if c.Get(fiber.HeaderIfNoneMatch) == etag {
			return c.SendStatus(fiber.StatusNotModified)
		}
		return c.Send(body)
	}
}

var errFrameOnly = &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "embed_frame_only",
	Msg: "the generator widget works only inside a partner's page: embed it with embed.js"}

// embedFrame serves the generator frame for a partner's page
// (GET /embed/frame?key=pk_…&origin=<the page's origin>[&results=1]). Its
// Content-Security-Policy lets exactly the partner's origins frame it and
// runs only scripts carrying this response's nonce. The frame sets no
// cookie. A browser loading it other than as a frame (Sec-Fetch-Dest) is
// refused, so the key cannot be spent from a tab of its own.
func (g *Gateway) embedFrame(c *fiber.Ctx) error {
	if dest := c.Get("Sec-Fetch-Dest"); dest != "" && dest != "iframe" {
		return errFrameOnly
	}
	p, err := g.partners.Lookup(context.Background(), c.Query("key"))
	if err != nil {
		return partnerError(err)
	}
	host := c.Query("origin")
	if !partner.AllowsOrigin(p, host) {
		return partnerError(partner.ErrOrigin)
	}
	nonce := web.Nonce()
	var buf bytes.Buffer
	err = widget.RenderFrame(&buf, widget.Frame{
		Nonce: nonce, Host: host, Key: p.PublishableKey, Token: g.partners.EmbedToken(p, host),
		Results: c.Query("results") == "1", Sizes: g.partnerSizes(p), DefaultSize: g.cfg.DefaultSize,
		Partner: p.Name, PrivacyURL: g.siteOrigin(c) + "/privacy",
	})
	if err != nil {
		return err
	}
	h := &c.Response().Header
	h.Del(fiber.HeaderXFrameOptions) // frame-ancestors decides
	h.Set(fiber.HeaderContentSecurityPolicy, g.frameCSP(p, nonce))
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	err = c.Send(buf.Bytes())
	h.DelAllCookies()
	return err
}

// frameCSP is the frame page's policy: scripts and styles only with the
// nonce, requests and images to this site (and the CDN serving outputs),
// framed only by the partner's origins.
func (g *Gateway) frameCSP(p store.Partner, nonce string) string {
	img := "'self'"
	if g.cfg.CDNURL != "" {
		if o, err := originOf(g.cfg.CDNURL); err == nil {
			img += " " + o
		}
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'nonce-" + nonce + "'",
		"style-src 'nonce-" + nonce + "'",
		"img-src " + img,
		"connect-src 'self'",
		"base-uri 'none'",
		"form-action 'none'",
		partner.FrameAncestors(p),
	}, "; ")
}

// partnerSizes lists the square sizes the partner's plan allows.
func (g *Gateway) partnerSizes(p store.Partner) []string {
	limit := g.cfg.Plans.plan(p.Plan).MaxSize
	var out []string
	for _, s := range []int{256, 512, 1024} {
		if s <= limit {
			out = append(out, fmt.Sprintf("%dx%d", s, s))
		}
	}
	return out
}
