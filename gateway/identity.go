package gateway

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/store"
)

// principal is who a request acts for.
type principal struct {
	// account is the signed-in account, nil for anonymous visitors.
	account *store.Account
	// session is the session token when the request came with the session
	// cookie (browser), empty otherwise.
	session string
	// signedIn is when the session's sign-in happened.
	signedIn time.Time
	// apiKeyID is set when the request authenticated with an API key;
	// scopes are what the key was granted.
	apiKeyID string
	scopes   []string
}

// hasScope reports whether the request's API key was granted scope.
func (p *principal) hasScope(scope string) bool { return slices.Contains(p.scopes, scope) }

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
// the store, nothing is cached. A credential not seen to work lately is
// charged to its client address before the store is asked (see
// ratelimit.CredentialGuardConfig), so guessing keys or replaying ended
// sessions is limited before it costs a lookup.
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
		if err := g.mayLookUp(c, secret); err != nil {
			return err
		}
		k, err := g.store.ValidateAPIKey(secret)
		if errors.Is(err, store.ErrNotFound) {
			g.lookupFailed(secret)
			return &apiError{Status: fiber.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key", Msg: "invalid API key"}
		}
		if err != nil {
			return err
		}
		g.lookupWorked(secret)
		acct, err := g.activeAccount(k.AccountID)
		if err != nil {
			return err
		}
		g.grantPlan(acct)
		p.account, p.apiKeyID, p.scopes = acct, k.ID, k.Scopes
		return c.Next()
	}
	if token != "" {
		if err := g.mayLookUp(c, token); err != nil {
			return err
		}
		s, err := g.store.ValidateSession(token)
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired):
			g.lookupFailed(token)
			clearCookie(c, cookieSession)
		case err != nil:
			return err
		default:
			g.lookupWorked(token)
			acct, err := g.activeAccount(s.AccountID)
			if err != nil {
				// A gone or inactive account ends the session; a store
				// that cannot answer (the database or the key service
				// down) does not: the visitor is still signed in once
				// it is back.
				var ae *apiError
				if errors.As(err, &ae) {
					clearCookie(c, cookieSession)
				}
				return err
			}
			g.grantPlan(acct)
			p.account, p.session, p.signedIn = acct, token, s.Created
		}
	}
	return c.Next()
}

// mayLookUp asks the credential guard whether credential may be looked up.
func (g *Gateway) mayLookUp(c *fiber.Ctx, credential string) error {
	if g.creds == nil {
		return nil
	}
	if ok, wait := g.creds.Lookup(g.ips.Addr(c), credential); !ok {
		return ratelimit.CredentialsThrottled(wait)
	}
	return nil
}

func (g *Gateway) lookupFailed(credential string) {
	if g.creds != nil {
		g.creds.Failed(credential)
	}
}

func (g *Gateway) lookupWorked(credential string) {
	if g.creds != nil {
		g.creds.Validated(credential)
	}
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
