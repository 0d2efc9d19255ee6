package gateway

import (
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
)

// BillingConfig configures payments through Stripe. It is being built
// (issue 4); until then billing stays off.
type BillingConfig struct{}

// Validate reports every problem at once.
func (c *BillingConfig) Validate() error { return nil }

type billingStore interface{}

type billing struct{}

func newBilling(cfg BillingConfig, st billingStore, logger *slog.Logger, now func() time.Time) (*billing, error) {
	return nil, nil
}

var errBillingOff = &apiError{Status: fiber.StatusServiceUnavailable, Type: "server_error", Code: "payments_not_configured",
	Msg: "payments not configured", RetryAfter: 3600}

// billingRoutes registers the billing routes; with billing off they answer
// 503 "payments not configured".
func (g *Gateway) billingRoutes(app fiber.Router, account func(...fiber.Handler) []fiber.Handler) {
	off := func(c *fiber.Ctx) error { return errBillingOff }
	app.Get("/v1/billing", account(off)...)
	app.Post("/v1/billing/checkout", account(off)...)
	app.Post("/v1/billing/portal", account(off)...)
	app.Post("/v1/billing/webhook", off)
}
