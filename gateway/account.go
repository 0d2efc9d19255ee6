package gateway

import (
	"errors"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/store"
)

// accountJSON is GET /v1/account. It never carries the password hash.
type accountJSON struct {
	ID            string       `json:"id"`
	Email         string       `json:"email"`
	EmailVerified bool         `json:"email_verified"`
	Plan          string       `json:"plan"`
	Credits       int64        `json:"credits"`
	Created       int64        `json:"created"`
	GoogleLinked  bool         `json:"google_linked"`
	Settings      settingsJSON `json:"settings"`
}

func accountView(a store.Account) accountJSON {
	return accountJSON{
		ID: a.ID, Email: a.Email, EmailVerified: a.EmailVerified, Plan: a.Plan,
		Credits: a.Available(), Created: a.Created.Unix(), GoogleLinked: a.GoogleSubject != "", Settings: settingsView(a.Settings, false),
	}
}

func (g *Gateway) getAccount(c *fiber.Ctx) error {
	acct := *principalOf(c).account
	g.grantPlan(&acct)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(accountView(acct))
}

type apiKeyJSON struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Hint     string   `json:"hint"`
	Key      string   `json:"key,omitempty"` // only in the creation response
	Scopes   []string `json:"scopes"`
	Created  int64    `json:"created"`
	LastUsed int64    `json:"last_used,omitempty"`
	// Flagged is when a password change or reset kept the key working
	// for review; FlaggedBy names it ("password_change", "password_reset").
	Flagged   int64  `json:"flagged,omitempty"`
	FlaggedBy string `json:"flagged_by,omitempty"`
}

func apiKeyView(k store.APIKey) apiKeyJSON {
	v := apiKeyJSON{ID: k.ID, Name: k.Name, Hint: k.Hint + "…", Scopes: k.Scopes, Created: k.Created.Unix(), FlaggedBy: k.FlaggedBy}
	if !k.LastUsed.IsZero() {
		v.LastUsed = k.LastUsed.Unix()
	}
	if !k.Flagged.IsZero() {
		v.Flagged = k.Flagged.Unix()
	}
	return v
}

type newKeyJSON struct {
	Name string `json:"name"`
	// Scopes the key may use; absent: store.DefaultAPIKeyScopes
	// (images:write only).
	Scopes *[]string `json:"scopes"`
}

// keyScopes validates the scopes a key is asked for: nil (the default)
// or a non-empty list of known scopes.
func keyScopes(asked *[]string) ([]string, error) {
	if asked == nil {
		return nil, nil
	}
	known := strings.Join(store.Scopes, ", ")
	if len(*asked) == 0 {
		return nil, badRequest("invalid_scope", "scopes: name at least one of "+known)
	}
	out := make([]string, 0, len(*asked))
	for _, s := range *asked {
		if !slices.Contains(store.Scopes, s) {
			return nil, badRequest("invalid_scope", "scopes: each must be one of "+known)
		}
		out = append(out, strings.Clone(s))
	}
	return out, nil
}

// maxAPIKeys bounds the keys of one account.
const maxAPIKeys = 20

func (g *Gateway) createAPIKey(c *fiber.Ctx) error {
	p := principalOf(c)
	var req newKeyJSON
	if len(c.Body()) > 0 {
		if err := decodeJSON(c.Body(), &req); err != nil {
			return err
		}
	}
	scopes, err := keyScopes(req.Scopes)
	if err != nil {
		return err
	}
	name := strings.TrimSpace(req.Name)
	if name == "" {
		name = "key " + time.Now().UTC().Format("2006-01-02")
	}
	if utf8.RuneCountInString(name) > 64 || strings.ContainsAny(name, "\r\n\t") {
		return badRequest("invalid_name", "name: at most 64 characters on one line")
	}
	keys, err := g.store.APIKeys(p.account.ID)
	if err != nil {
		return err
	}
	if len(keys) >= maxAPIKeys {
		return badRequest("too_many_keys", "this account already has 20 API keys; delete one first")
	}
	secret, k, err := g.store.CreateAPIKey(p.account.ID, strings.Clone(name), scopes)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAPIKeyCreated, p.account.ID, k.ID)
	v := apiKeyView(k)
	v.Key = secret
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(v)
}

func (g *Gateway) listAPIKeys(c *fiber.Ctx) error {
	keys, err := g.store.APIKeys(principalOf(c).account.ID)
	if err != nil {
		return err
	}
	out := make([]apiKeyJSON, len(keys))
	for i, k := range keys {
		out[i] = apiKeyView(k)
	}
	return c.JSON(fiber.Map{"data": out})
}

func (g *Gateway) deleteAPIKey(c *fiber.Ctx) error {
	p := principalOf(c)
	id := strings.Clone(c.Params("id"))
	err := g.store.DeleteAPIKey(p.account.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such API key"}
	}
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAPIKeyDeleted, p.account.ID, id)
	return c.SendStatus(fiber.StatusNoContent)
}
