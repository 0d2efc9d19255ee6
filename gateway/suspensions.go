package gateway

import (
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/store"
)

// Security-log kinds of suspension review.
const (
	// eventSuspensionsListed records an operator reading the list.
	eventSuspensionsListed = "admin_suspensions"
	// eventSuspensionLifted records an operator lifting a suspension,
	// under the account it concerns.
	eventSuspensionLifted = "account_unsuspended"
)

// suspensionStore lists suspended accounts and lifts suspensions; the
// security log says why each one was suspended.
type suspensionStore interface {
	SuspendedAccounts() ([]string, error)
	LiftSuspension(id string) error
	SecurityEvents(accountID string) ([]store.SecurityEvent, error)
}

// suspensionJSON is one suspended account as the review lists it: when and
// why (the security log's detail, e.g. the moderation report) it was
// suspended, if the log still holds the event.
type suspensionJSON struct {
	Account string     `json:"account"`
	Since   *time.Time `json:"since,omitempty"`
	Reason  string     `json:"reason,omitempty"`
}

func (g *Gateway) suspensionRoutes(admin fiber.Router) {
	admin.Get("/suspensions", g.adminSuspensions)
	admin.Post("/suspensions/lift", g.adminLiftSuspension)
}

// adminSuspensions lists suspended accounts (GET /v1/admin/suspensions).
func (g *Gateway) adminSuspensions(c *fiber.Ctx) error {
	ids, err := g.store.SuspendedAccounts()
	if err != nil {
		return err
	}
	out := struct {
		Suspensions []suspensionJSON `json:"suspensions"`
	}{Suspensions: make([]suspensionJSON, len(ids))}
	for i, id := range ids {
		out.Suspensions[i].Account = id
		events, err := g.store.SecurityEvents(id)
		if err != nil {
			return err
		}
		for _, ev := range events { // oldest first: the last one wins
			if ev.Kind == moderation.EventAccountSuspended {
				out.Suspensions[i].Since = &ev.Time
				out.Suspensions[i].Reason = ev.Detail
			}
		}
	}
	g.securityEvent(c, eventSuspensionsListed, "", "")
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(out)
}

type liftJSON struct {
	Account string `json:"account"`
}

// adminLiftSuspension makes a suspended account active again
// (POST /v1/admin/suspensions/lift). Its owner signs in afresh: the
// suspension ended every session.
func (g *Gateway) adminLiftSuspension(c *fiber.Ctx) error {
	var req liftJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Account == "" {
		return badRequest("missing_field", "account: required")
	}
	id := strings.Clone(req.Account)
	switch err := g.store.LiftSuspension(id); {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such account"}
	case errors.Is(err, store.ErrNotSuspended):
		return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "not_suspended", Msg: "account: not suspended"}
	case err != nil:
		return err
	}
	g.securityEvent(c, eventSuspensionLifted, id, "lifted by admin")
	return c.JSON(fiber.Map{"account": id, "status": string(store.StatusActive)})
}
