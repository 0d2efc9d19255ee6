package gateway

import (
	"net/netip"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/ratelimit"
)

// What the gateway asks of package ratelimit's engines; New wires the
// concrete ones.

// rateLimiter is the per-route rate limit middleware (a *ratelimit.Limiter).
type rateLimiter interface {
	Limit(cost int, who func(*fiber.Ctx) ratelimit.Identity) fiber.Handler
	Stats() ratelimit.Stats
	Sweep() int
}

// loginGuard brakes password guessing (a *ratelimit.LoginGuard).
type loginGuard interface {
	Attempt(addr netip.Addr, account string) (ok bool, retryAfter time.Duration)
	Succeeded(addr netip.Addr, account string)
	Sweep() int
}

// credentialGuard brakes lookups of API keys and session cookies not seen
// to work (a *ratelimit.CredentialGuard).
type credentialGuard interface {
	Lookup(addr netip.Addr, credential string) (ok bool, retryAfter time.Duration)
	Validated(credential string)
	Failed(credential string)
	Sweep() int
	Refused() uint64
}

// freeQuota holds anonymous visitors' free images a day (a *ratelimit.Quota).
type freeQuota interface {
	Reserve(addr netip.Addr, n int) (*ratelimit.Hold, error)
	Sweep() int
}

// throttle allows something a few times per key (a *ratelimit.Throttle).
type throttle interface {
	Allow(key string) bool
}
