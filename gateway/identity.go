package gateway

import (
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/store"
)

// principal is who a request acts for.
type principal struct {
	// account is the signed-in account, nil for anonymous visitors.
	account *store.Account
	// session is the session token when the request came with the session
	// cookie (browser), empty otherwise.
	session string
	// apiKeyID is set when the request authenticated with an API key.
	apiKeyID string
}

type principalKey struct{}

// principalOf returns the request's principal (see identify).
func principalOf(c *fiber.Ctx) *principal {
	if p, ok := c.Locals(principalKey{}).(*principal); ok {
		return p
	}
	return &anonymous
}

// anonymous is the principal of requests without credentials; it is never
// modified.
var anonymous principal

// errUnauthenticated is a route that needs an account, reached without one.
var errUnauthenticated = &apiError{Status: fiber.StatusUnauthorized, Type: "authentication_error", Code: "unauthenticated", Msg: "sign in or send an API key"}

// identify resolves the request's principal from an API key
// (Authorization: Bearer sk_…) or the session cookie. A bad API key is
// refused; a stale session cookie is cleared and the request goes on
// anonymously. Revocation is immediate: every request validates against
// the store, nothing is cached.
func (g *Gateway) identify(c *fiber.Ctx) error {
	if partnerOf(c) != nil {
		return c.Next() // a partner's visitor: anonymous here (partnerAuth)
	}
	auth, token := c.Get(fiber.HeaderAuthorization), c.Cookies(cookieSession)
	if auth == "" && token == "" {
		return c.Next() // anonymous: nothing to look up or remember
	}
	p := &principal{}
	c.Locals(principalKey{}, p)
	if auth != "" {
		scheme, secret, _ := strings.Cut(auth, " ")
		secret = strings.TrimSpace(secret)
		if !strings.EqualFold(scheme, "Bearer") || !strings.HasPrefix(secret, store.APIKeyPrefix) {
			return &apiError{Status: fiber.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key", Msg: "Authorization: expected Bearer sk_…"}
		}
		k, err := g.store.ValidateAPIKey(secret)
		if errors.Is(err, store.ErrNotFound) {
			return &apiError{Status: fiber.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key", Msg: "invalid API key"}
		}
		if err != nil {
			return err
		}
		acct, err := g.activeAccount(k.AccountID)
		if err != nil {
			return err
		}
		g.grantPlan(acct)
		p.account, p.apiKeyID = acct, k.ID
		return c.Next()
	}
	if token != "" {
		s, err := g.store.ValidateSession(token)
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired):
			clearCookie(c, cookieSession)
		case err != nil:
			return err
		default:
			acct, err := g.activeAccount(s.AccountID)
			if err != nil {
				clearCookie(c, cookieSession)
				return err
			}
			g.grantPlan(acct)
			p.account, p.session = acct, token
		}
	}
	return c.Next()
}

// activeAccount loads an account that may act, or refuses.
func (g *Gateway) activeAccount(id string) (*store.Account, error) {
	acct, err := g.store.Account(id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrKeyDestroyed) {
			return nil, errUnauthenticated
		}
		return nil, err
	}
	if acct.Status != store.StatusActive {
		return nil, &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "account_inactive", Msg: "this account is suspended or being deleted"}
	}
	return &acct, nil
}

// requireAccount is middleware for routes that need a signed-in account.
func requireAccount(c *fiber.Ctx) error {
	if principalOf(c).account == nil {
		return errUnauthenticated
	}
	return c.Next()
}
