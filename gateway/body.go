package gateway

import (
	"bytes"
	"fmt"

	"github.com/gofiber/fiber/v2"
)

// errEncodedBody refuses a request body sent in a content coding.
var errEncodedBody = &apiError{Status: fiber.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "encoded_body",
	Msg: "request bodies must not be compressed: send them without Content-Encoding"}

var identity = []byte("identity")

// plainBodies refuses request bodies in a content coding (gzip, deflate,
// br). Fiber's c.Body() decodes those without bound, so a small body could
// inflate into gigabytes before any size check saw it; no client of this
// API needs to compress what it sends. Every Content-Encoding header is
// looked at, since a duplicate must not smuggle one past.
func plainBodies(c *fiber.Ctx) error {
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return c.Next() // no body is read
	}
	for _, v := range c.Request().Header.PeekAll(fiber.HeaderContentEncoding) {
		if v = bytes.TrimSpace(v); len(v) > 0 && !bytes.EqualFold(v, identity) {
			return errEncodedBody
		}
	}
	return c.Next()
}

// smallBody bounds the body of the JSON and form routes to MaxJSONBytes.
// The generation route checks the same bound itself, after its rate
// charge; image uploads (edits) and the Stripe webhook take more, up to the
// server's body limit.
func (g *Gateway) smallBody(c *fiber.Ctx) error {
	if len(c.Request().Body()) > g.cfg.MaxJSONBytes {
		return errBodyTooLarge(g.cfg.MaxJSONBytes)
	}
	return c.Next()
}

// errBodyTooLarge refuses a body over limit bytes.
func errBodyTooLarge(limit int) *apiError {
	return &apiError{Status: fiber.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
		Msg: fmt.Sprintf("request body larger than %d bytes", limit)}
}
