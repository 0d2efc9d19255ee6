package ratelimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/gateway/apierror"
)

// CredentialGuardConfig limits lookups of credentials the gateway has not
// seen work (promise S4): API keys and session cookies it must look up in
// the store to judge. Guessing API keys or replaying stale cookies would
// otherwise cost the guesser nothing and the store one read each, with
// no limit at all (the gateway resolves credentials before the request
// Limiter, which needs to know who is asking).
//
// Every lookup of a credential that has not recently validated is charged
// one unit, before the store is asked, to its client address block
// (/32, /64). A credential that validated is remembered (by a hash, never
// the secret) for KnownTTL and skips the charge, so the owner of a working
// key or session keeps going while a guesser on the same address is held
// back; a revoked one is forgotten at its next failed lookup.
type CredentialGuardConfig struct {
	// PerSource: 30 unproven lookups, refilling over 5 minutes.
	PerSource Policy
	// KnownTTL is how long a validated credential skips the charge
	// (1 hour). It never skips the store: revocation stays immediate.
	KnownTTL time.Duration
	// MaxKeys bounds the buckets, and separately the known credentials,
	// remembered at once (131,072 each).
	MaxKeys int
}

const defaultCredentialMaxKeys = 1 << 17

// Namespaces of the guard's keys, after the limiter's own.
const (
	rateNSCredentialSource rateNamespace = rateNSFreeQuota + 1 + iota // client address block, unproven lookups
	rateNSCredentialKnown                                             // hash of a credential that validated
)

func (c *CredentialGuardConfig) setDefaults() {
	if c.PerSource == (Policy{}) {
		c.PerSource = Policy{Quota: 30, Window: 5 * time.Minute}
	}
	if c.KnownTTL == 0 {
		c.KnownTTL = time.Hour
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = defaultCredentialMaxKeys
	}
}

// Validate fills defaults and reports every problem at once.
func (c *CredentialGuardConfig) Validate() error {
	c.setDefaults()
	errs := []error{c.PerSource.validate("credential lookups per source", 1)}
	if c.KnownTTL < time.Minute {
		errs = append(errs, fmt.Errorf("ratelimit: credential known TTL %s is under a minute", c.KnownTTL))
	}
	if c.MaxKeys < 1 {
		errs = append(errs, errors.New("ratelimit: credential guard max keys must be positive"))
	}
	return errors.Join(errs...)
}

// CredentialGuard applies CredentialGuardConfig.
type CredentialGuard struct {
	cfg     CredentialGuardConfig
	now     func() time.Time
	buckets *keyedStore[tokenBucket]
	known   knownKeys // credentials that validated, until KnownTTL after

	refused atomic.Uint64
}

// NewCredentialGuard builds the guard; now is the clock (time.Now outside
// tests).
func NewCredentialGuard(cfg CredentialGuardConfig, now func() time.Time) (*CredentialGuard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		return nil, errors.New("ratelimit: credential guard needs a clock")
	}
	return &CredentialGuard{
		cfg:     cfg,
		now:     now,
		buckets: newKeyedStore(cfg.MaxKeys, rateBucketIdle),
		known:   newKnownKeys(cfg.MaxKeys),
	}, nil
}

// Lookup reports whether credential (an API key or session token, as
// sent) may be looked up for a request from addr; if not, retryAfter
// (≥ 1 s) says when. Call it before the store, then Validated or Failed.
func (g *CredentialGuard) Lookup(addr netip.Addr, credential string) (ok bool, retryAfter time.Duration) {
	now := g.now()
	if g.known.known(hashedRateKey(rateNSCredentialKnown, credential), now) {
		return true, 0
	}
	d := chargeBuckets(g.buckets, now, []rateSubject{{name: "credentials", key: addrRateKey(rateNSCredentialSource, addr), policy: g.cfg.PerSource}}, 1)
	if !d.allowed {
		g.refused.Add(1)
		return false, time.Duration(d.retryAfter) * time.Second
	}
	return true, 0
}

// Refused counts the lookups Lookup refused.
func (g *CredentialGuard) Refused() uint64 { return g.refused.Load() }

// Validated remembers that credential works, for KnownTTL.
func (g *CredentialGuard) Validated(credential string) {
	now := g.now()
	g.known.remember(hashedRateKey(rateNSCredentialKnown, credential), now, now.Add(g.cfg.KnownTTL))
}

// Failed forgets credential: it was revoked or never existed.
func (g *CredentialGuard) Failed(credential string) {
	g.known.forget(hashedRateKey(rateNSCredentialKnown, credential))
}

// Sweep forgets refilled buckets and expired credentials, and reports
// how many.
func (g *CredentialGuard) Sweep() int {
	now := g.now()
	return g.buckets.sweep(now) + g.known.sweep(now)
}

// CredentialsThrottled is the 429 for a refused lookup.
func CredentialsThrottled(retryAfter time.Duration) *apierror.Error {
	secs := max(1, ceilSeconds(retryAfter))
	return &apierror.Error{
		Status:     http.StatusTooManyRequests,
		Type:       "rate_limit_error",
		Code:       "too_many_credential_failures",
		Msg:        fmt.Sprintf("too many unknown API keys or ended sessions from your address; retry in %d s", secs),
		RetryAfter: int(secs),
	}
}
