package gateway

import (
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/store"
)

// Security-log kinds of erasure.
const (
	eventErasureRequested = "erasure_requested"
	eventAdminErasure     = "admin_erasure"
)

type deleteAccountJSON struct {
	Password string `json:"password"`
}

// deleteAccount erases the signed-in account (promise R3): only from a
// browser session signed in within recentSignIn (authorize), and an
// account with a password must enter it too; then it starts a durable job
// that finishes even if the process restarts. The answer comes at once; a
// confirmation email follows when everything is gone.
func (g *Gateway) deleteAccount(c *fiber.Ctx) error {
	p := principalOf(c)
	var req deleteAccountJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	acct := p.account
	// A Google-only account has no password to re-enter: its recent
	// sign-in is the re-authentication.
	if acct.PasswordHash != "" {
		ip, who := g.ips.Addr(c), guardKey(acct.Email)
		if ok, wait := g.logins.Attempt(ip, who); !ok {
			return ratelimit.LoginThrottled(wait)
		}
		if len(req.Password) > maxPasswordBytes {
			return &apiError{Status: fiber.StatusForbidden, Type: "authentication_error", Code: "invalid_credentials", Msg: "password: incorrect"}
		}
		ctx, cancel := authContext()
		defer cancel()
		ok, err := g.passwords.verify(ctx, req.Password, acct.PasswordHash)
		if err != nil {
			return hashError(err)
		}
		if !ok {
			return &apiError{Status: fiber.StatusForbidden, Type: "authentication_error", Code: "invalid_credentials", Msg: "password: incorrect"}
		}
		g.logins.Succeeded(ip, who)
	}
	g.securityEvent(c, eventErasureRequested, acct.ID, "")
	if _, err := g.store.BeginErasure(acct.ID, store.ErasureByUser); err != nil {
		return err
	}
	g.life.wake()
	clearCookie(c, cookieSession)
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"status": "deleting",
		"message": "your account is being deleted; a confirmation email follows when everything is gone"})
}

type adminDeleteJSON struct {
	Account string `json:"account"`
	Email   string `json:"email"`
	// Reason: "admin" (default; e.g. a rights request by email) or
	// "minor" (promise A4).
	Reason string `json:"reason"`
}

// adminDeleteAccount starts an erasure for an operator
// (POST /v1/admin/accounts/delete), by account id or email.
func (g *Gateway) adminDeleteAccount(c *fiber.Ctx) error {
	var req adminDeleteJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	reason := store.ErasureByAdmin
	switch req.Reason {
	case "", store.ErasureByAdmin:
	case store.ErasureMinor:
		reason = store.ErasureMinor
	default:
		return badRequest("invalid_reason", `reason: "admin" or "minor"`)
	}
	var acct store.Account
	var err error
	switch {
	case req.Account != "" && req.Email == "":
		acct, err = g.store.Account(strings.Clone(req.Account))
	case req.Email != "" && req.Account == "":
		acct, err = g.store.AccountByEmail(strings.Clone(req.Email))
	default:
		return badRequest("invalid_request", "name exactly one of account or email")
	}
	if errors.Is(err, store.ErrNotFound) {
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such account"}
	}
	if err != nil {
		return err
	}
	if _, err := g.store.BeginErasure(acct.ID, reason); err != nil {
		return err
	}
	g.securityEvent(c, eventAdminErasure, acct.ID, "reason="+reason)
	g.life.wake()
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"status": "deleting", "account": acct.ID})
}

// adminErasures lists erasures not yet finished (GET /v1/admin/accounts/erasures).
func (g *Gateway) adminErasures(c *fiber.Ctx) error {
	jobs, err := g.store.PendingErasures()
	if err != nil {
		return err
	}
	type jobJSON struct {
		Account string    `json:"account"`
		Reason  string    `json:"reason"`
		Started time.Time `json:"started"`
	}
	out := make([]jobJSON, len(jobs))
	for i, j := range jobs {
		out[i] = jobJSON{j.AccountID, j.Reason, j.Started}
	}
	return c.JSON(fiber.Map{"data": out})
}
