package ratelimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/clientip"
)

// LoginGuardConfig limits sign-in attempts so that guessing passwords is
// slow and yet nobody can lock a victim out (promise S4). Every attempt
// counts until it succeeds; three buckets apply:
//
//   - per (account, source): strict. A source is a client address block
//     (/32, /64). A success from there empties the count.
//   - per source, across accounts: moderate; stops one address spraying
//     guesses over many accounts.
//   - per account, from sources that have not signed in to it before:
//     generous; stops a distributed guesser. Sources that have signed in
//     successfully (within KnownSourceTTL) skip it, so an attack on an
//     account can at worst delay sign-ins from new places, never from the
//     owner's usual ones — the design OWASP's Authentication Cheat Sheet
//     recommends over per-account lockout.
//
// One attacking source is held to the strict pair rate, which Validate
// requires to be well under the per-account rate, so it alone cannot keep
// the account bucket empty even for new sources.
type LoginGuardConfig struct {
	// PerAccountSource: 5 attempts, refilling over 15 minutes.
	PerAccountSource Policy
	// PerSource: 50 attempts, refilling over 15 minutes.
	PerSource Policy
	// PerAccount: 100 attempts from new sources, refilling over an hour.
	PerAccount Policy
	// KnownSourceTTL is how long a success vouches for its source
	// (30 days).
	KnownSourceTTL time.Duration
	// MaxKeys bounds the buckets, and separately the known sources,
	// remembered at once (131,072 each: about 27 MiB and 16 MiB at the
	// per-entry sizes BenchmarkRateLimiterMillionIPs measures). Past
	// the cap the least recently used go first, so the buckets of an
	// account under attack, touched on every attempt, are the last to go.
	MaxKeys int
}

const defaultLoginMaxKeys = 1 << 17

func (c *LoginGuardConfig) setDefaults() {
	if c.PerAccountSource == (Policy{}) {
		c.PerAccountSource = Policy{Quota: 5, Window: 15 * time.Minute}
	}
	if c.PerSource == (Policy{}) {
		c.PerSource = Policy{Quota: 50, Window: 15 * time.Minute}
	}
	if c.PerAccount == (Policy{}) {
		c.PerAccount = Policy{Quota: 100, Window: time.Hour}
	}
	if c.KnownSourceTTL == 0 {
		c.KnownSourceTTL = 30 * 24 * time.Hour
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = defaultLoginMaxKeys
	}
}

// Validate fills defaults and reports every problem at once.
func (c *LoginGuardConfig) Validate() error {
	c.setDefaults()
	errs := []error{
		c.PerAccountSource.validate("sign-in per account and source", 1),
		c.PerSource.validate("sign-in per source", 1),
		c.PerAccount.validate("sign-in per account", 1),
	}
	// At least twice the pair's burst and rate, so a single source can
	// never hold the account bucket below half full.
	if c.PerAccount.Quota < 2*c.PerAccountSource.Quota || c.PerAccount.limit() < 2*c.PerAccountSource.limit() {
		errs = append(errs, errors.New("gateway: sign-in per-account limit must be at least twice the per-account-and-source limit in quota and rate, or one source could lock new sources out"))
	}
	if c.KnownSourceTTL < time.Minute {
		errs = append(errs, fmt.Errorf("gateway: sign-in known-source TTL %s is under a minute", c.KnownSourceTTL))
	}
	if c.MaxKeys < 1 {
		errs = append(errs, errors.New("gateway: sign-in max keys must be positive"))
	}
	return errors.Join(errs...)
}

// LoginGuard applies LoginGuardConfig.
type LoginGuard struct {
	cfg     LoginGuardConfig
	now     func() time.Time
	buckets *keyedStore[tokenBucket]
	known   knownKeys // sources that signed in, until KnownSourceTTL after
}

// NewLoginGuard builds the guard; now is the clock (time.Now outside
// tests).
func NewLoginGuard(cfg LoginGuardConfig, now func() time.Time) (*LoginGuard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		return nil, errors.New("gateway: sign-in guard needs a clock")
	}
	return &LoginGuard{
		cfg:     cfg,
		now:     now,
		buckets: newKeyedStore(cfg.MaxKeys, rateBucketIdle),
		known:   newKnownKeys(cfg.MaxKeys),
	}, nil
}

// loginPairKey keys an (account, source) pair: the account's opaque id and
// the client address block.
func loginPairKey(ns rateNamespace, addr netip.Addr, account string) rateKey {
	block := clientip.Prefix(addr).Addr().As16()
	return hashedRateKey(ns, account, string(block[:]))
}

// attempt counts a sign-in attempt on account from addr and reports
// whether it may go ahead; if not, retryAfter (≥ 1 s) says when it may.
// A refused attempt counts nothing. Call it before checking the password,
// and succeeded after a correct one: every attempt is presumed to fail, so
// concurrent guesses are bounded as tightly as sequential ones.
//
// account is an opaque key for the account named in the attempt — derive
// it from the submitted identifier (an HMAC of the normalised email, say)
// whether or not such an account exists, so that limits never reveal which
// accounts exist and no email is held in memory.
func (g *LoginGuard) Attempt(addr netip.Addr, account string) (ok bool, retryAfter time.Duration) {
	now := g.now()
	pair := loginPairKey(rateNSLoginPair, addr, account)
	subs := make([]rateSubject, 0, 3)
	subs = append(subs,
		rateSubject{name: "signin-pair", key: pair, policy: g.cfg.PerAccountSource},
		rateSubject{name: "signin-source", key: addrRateKey(rateNSLoginSource, addr), policy: g.cfg.PerSource},
	)
	if !g.known.known(rateKey{ns: rateNSLoginKnown, id: pair.id}, now) {
		subs = append(subs, rateSubject{name: "signin-account", key: hashedRateKey(rateNSLoginAccount, account), policy: g.cfg.PerAccount})
	}
	d := chargeBuckets(g.buckets, now, subs, 1)
	if !d.allowed {
		return false, time.Duration(d.retryAfter) * time.Second
	}
	return true, 0
}

// succeeded records a correct password for account from addr: the pair's
// count is forgiven and the source becomes known to the account for
// KnownSourceTTL.
func (g *LoginGuard) Succeeded(addr netip.Addr, account string) {
	now := g.now()
	pair := loginPairKey(rateNSLoginPair, addr, account)
	sh := &g.buckets.shards[g.buckets.shardIndex(pair)]
	sh.mu.Lock()
	g.buckets.remove(sh, pair)
	sh.mu.Unlock()

	g.known.remember(rateKey{ns: rateNSLoginKnown, id: pair.id}, now, now.Add(g.cfg.KnownSourceTTL))
}

// sweep forgets refilled buckets and expired known sources.
func (g *LoginGuard) Sweep() int {
	now := g.now()
	return g.buckets.sweep(now) + g.known.sweep(now)
}

// LoginThrottled is the 429 for a refused attempt. It says nothing about
// which limit refused, or whether the account exists.
func LoginThrottled(retryAfter time.Duration) *apierror.Error {
	secs := max(1, ceilSeconds(retryAfter))
	return &apierror.Error{
		Status:     http.StatusTooManyRequests,
		Type:       "rate_limit_error",
		Code:       "too_many_attempts",
		Msg:        fmt.Sprintf("too many sign-in attempts; retry in %d s", secs),
		RetryAfter: int(secs),
	}
}

// Throttle limits how often something may happen per key within a
// policy: how often one address can be sent account mail on a stranger's
// request (so those routes cannot flood an inbox), how often one client's
// refusals are written to the security log (so guessing cannot flood it),
// how often a cookie-less client's GPC signal is written to the consent
// log.
type Throttle struct {
	name    string
	policy  Policy
	buckets *keyedStore[tokenBucket]
	now     func() time.Time
}

// NewThrottle is a Throttle named name (its bucket label) allowing policy.
func NewThrottle(name string, policy Policy, now func() time.Time) *Throttle {
	return &Throttle{name: name, policy: policy, buckets: newKeyedStore(defaultRateMaxKeys, rateBucketIdle), now: now}
}

// Allow reports whether key may act once more, and charges it if so.
func (m *Throttle) Allow(key string) bool {
	subs := []rateSubject{{name: m.name, key: hashedRateKey(rateNSAccount, key), policy: m.policy}}
	return chargeBuckets(m.buckets, m.now(), subs, 1).allowed
}
