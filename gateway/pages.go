package gateway

import (
	"github.com/gofiber/fiber/v2"
)

// page renders a one-message page, for handlers that answer a form post
// from an emailed link.
func (g *Gateway) page(c *fiber.Ctx, title, message string) error {
	return g.message(c, title, message, "/", "Home")
}
