package gateway

import (
	"github.com/gofiber/fiber/v2"
)

// healthz answers while the process can serve HTTP at all.
func (g *Gateway) healthz(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"status": "ok"})
}

// readyz answers 200 only when a generation could succeed: the model
// catalogue is known and an inference endpoint passed its last probe.
func (g *Gateway) readyz(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	models := len(g.catalog.list()) > 0
	tier := g.gen.Ready()
	if !models || !tier {
		c.Set(fiber.HeaderRetryAfter, "2")
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "not ready", "models": models, "inference": tier})
	}
	return c.JSON(fiber.Map{"status": "ready", "models": true, "inference": true})
}
