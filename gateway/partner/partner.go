// Package partner decides what a partner site's keys may do: it resolves
// a publishable key and the request's Origin (or an embed token issued to
// the widget's frame, or a secret key) to a partner, refuses unknown keys,
// disabled partners and origins not on the partner's list, applies the
// partner's rate limit and monthly image quota, counts images per partner
// per day, and delivers signed completion callbacks to the partner's
// server (webhook.go). The gateway wires it between its HTTP routes and
// the store; nothing here knows about HTTP frameworks.
package partner

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/imagegate/imagegate/store"
)

// Sentinel errors the gateway maps to HTTP answers.
var (
	// ErrUnknownKey: no partner has this key.
	ErrUnknownKey = errors.New("partner: unknown key")
	// ErrDisabled: the operator disabled the partner.
	ErrDisabled = errors.New("partner: partner disabled")
	// ErrOrigin: the request's origin is not one of the partner's.
	ErrOrigin = errors.New("partner: origin not allowed")
	// ErrQuota: the month's image quota is used up.
	ErrQuota = errors.New("partner: monthly quota exceeded")
	// ErrBadEmbedToken: an embed token that is malformed, forged,
	// expired or issued to another partner.
	ErrBadEmbedToken = errors.New("partner: invalid embed token")
)

// RateLimitError refuses a request over the partner's rate limit.
type RateLimitError struct{ RetryAfter time.Duration }

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("partner: rate limited, retry after %s", e.RetryAfter)
}

// Store is the part of the data layer the engine reads and counts in;
// *store.DB implements it.
type Store interface {
	PartnerByPublishableKey(pk string) (store.Partner, error)
	PartnerBySecret(secret string) (store.Partner, error)
	ReservePartnerImages(id string, day time.Time, n int) error
}

// Config tunes the engine.
type Config struct {
	// EmbedKey signs the embed tokens the widget's frame carries; every
	// gateway of a deployment needs the same one (at least 32 bytes).
	EmbedKey []byte
	// EmbedTokenTTL is how long a frame may generate before it must be
	// reloaded (default 2h).
	EmbedTokenTTL time.Duration
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	if c.EmbedTokenTTL == 0 {
		c.EmbedTokenTTL = 2 * time.Hour
	}
	var errs []error
	if len(c.EmbedKey) < 32 {
		errs = append(errs, errors.New("partner: embed key must be at least 32 bytes"))
	}
	if c.EmbedTokenTTL < time.Minute {
		errs = append(errs, errors.New("partner: embed token TTL must be at least a minute"))
	}
	return errors.Join(errs...)
}

// Engine is safe for concurrent use.
type Engine struct {
	cfg   Config
	store Store
	now   func() time.Time

	mu       sync.Mutex
	limiters map[string]*limiter // by partner id; partners are few
}

type limiter struct {
	perMinute int
	lim       *rate.Limiter
}

// New returns an engine over st; now is the clock (time.Now in
// production).
func New(cfg Config, st Store, now func() time.Time) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, store: st, now: now, limiters: map[string]*limiter{}}, nil
}

// Request is what a browser request with a publishable key presents.
type Request struct {
	// Key is the publishable key (pk_…).
	Key string
	// Origin is the request's Origin header.
	Origin string
	// SelfOrigin is the gateway's own origin: a request from it with a
	// publishable key comes from the widget's frame and must carry
	// EmbedToken.
	SelfOrigin string
	EmbedToken string
}

// Publishable resolves a browser request made with a publishable key. It
// is accepted from one of the partner's origins, or from the gateway's
// own origin (the widget's frame) with an embed token issued for one of
// them. A publishable key sits in public page source, so it is worth
// only what the browser's Origin header vouches for.
func (e *Engine) Publishable(ctx context.Context, r Request) (store.Partner, error) {
	if !strings.HasPrefix(r.Key, store.PublishableKeyPrefix) || len(r.Key) > 64 {
		return store.Partner{}, ErrUnknownKey
	}
	p, err := e.lookup(e.store.PartnerByPublishableKey(r.Key))
	if err != nil {
		return store.Partner{}, err
	}
	switch {
	case r.Origin != "" && AllowsOrigin(p, r.Origin):
		return p, nil
	case r.Origin != "" && r.Origin == r.SelfOrigin && r.EmbedToken != "":
		host, err := e.checkEmbedToken(r.EmbedToken, p.ID)
		if err != nil {
			return store.Partner{}, err
		}
		if !AllowsOrigin(p, host) {
			return store.Partner{}, ErrOrigin // the origin was removed since
		}
		return p, nil
	}
	return store.Partner{}, ErrOrigin
}

// Secret resolves a server-side request made with a partner's secret key;
// no Origin is involved.
func (e *Engine) Secret(ctx context.Context, secret string) (store.Partner, error) {
	if !strings.HasPrefix(secret, store.PartnerSecretPrefix) || len(secret) > 128 {
		return store.Partner{}, ErrUnknownKey
	}
	return e.lookup(e.store.PartnerBySecret(secret))
}

// Lookup resolves a publishable key alone, for serving the widget's
// frame, whose origin checks are the caller's (frame-ancestors).
func (e *Engine) Lookup(ctx context.Context, pk string) (store.Partner, error) {
	if !strings.HasPrefix(pk, store.PublishableKeyPrefix) || len(pk) > 64 {
		return store.Partner{}, ErrUnknownKey
	}
	return e.lookup(e.store.PartnerByPublishableKey(pk))
}

func (e *Engine) lookup(p store.Partner, err error) (store.Partner, error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Partner{}, ErrUnknownKey
	case err != nil:
		return store.Partner{}, fmt.Errorf("partner: lookup: %w", err)
	case p.Disabled:
		return store.Partner{}, ErrDisabled
	}
	return p, nil
}

// AllowsOrigin reports whether origin (as a browser sends it) is one of
// the partner's.
func AllowsOrigin(p store.Partner, origin string) bool {
	o, err := store.ParseOrigin(origin)
	return err == nil && o == origin && slices.Contains(p.Origins, o)
}

// Allow charges one request to the partner's rate limit (RateLimit
// requests a minute, all its visitors together, bursts up to the same).
func (e *Engine) Allow(p store.Partner) error {
	e.mu.Lock()
	l := e.limiters[p.ID]
	if l == nil || l.perMinute != p.RateLimit {
		// A changed limit starts a fresh bucket: simpler than rescaling,
		// and an operator changes it rarely.
		l = &limiter{perMinute: p.RateLimit, lim: rate.NewLimiter(rate.Limit(float64(p.RateLimit)/60), p.RateLimit)}
		e.limiters[p.ID] = l
	}
	e.mu.Unlock()
	now := e.now()
	res := l.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return &RateLimitError{RetryAfter: d}
	}
	return nil
}

// Reserve counts n images to the partner today, refusing with ErrQuota
// when the month's quota cannot take them. Release gives them back when
// the generation fails.
func (e *Engine) Reserve(ctx context.Context, p store.Partner, n int) error {
	err := e.store.ReservePartnerImages(p.ID, e.now(), n)
	switch {
	case errors.Is(err, store.ErrPartnerQuota):
		return ErrQuota
	case err != nil:
		return fmt.Errorf("partner: reserve: %w", err)
	}
	return nil
}

// Release gives back n images Reserve counted.
func (e *Engine) Release(ctx context.Context, p store.Partner, n int) error {
	if err := e.store.ReservePartnerImages(p.ID, e.now(), -n); err != nil {
		return fmt.Errorf("partner: release: %w", err)
	}
	return nil
}

// FrameAncestors is the CSP frame-ancestors directive naming exactly the
// partner's origins. Origins are canonical (store.ParseOrigin), so they
// cannot carry a ';' or a space into the policy.
func FrameAncestors(p store.Partner) string {
	return "frame-ancestors " + strings.Join(p.Origins, " ")
}

// embedTokenVersion starts every embed token.
const embedTokenVersion = "e1"

// EmbedToken issues the token a frame serving host (one of the partner's
// origins) presents with its generation requests.
func (e *Engine) EmbedToken(p store.Partner, host string) string {
	exp := strconv.FormatInt(e.now().Add(e.cfg.EmbedTokenTTL).Unix(), 10)
	h := base64.RawURLEncoding.EncodeToString([]byte(host))
	body := embedTokenVersion + "." + p.ID + "." + h + "." + exp
	return body + "." + e.mac(body)
}

func (e *Engine) mac(body string) string {
	m := hmac.New(sha256.New, e.cfg.EmbedKey)
	m.Write([]byte("imagegate embed token\x00"))
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkEmbedToken returns the host origin the token was issued for, if it
// is authentic, unexpired and names partnerID.
func (e *Engine) checkEmbedToken(tok, partnerID string) (string, error) {
	host, id, exp, err := e.parseEmbedToken(tok)
	if err != nil {
		return "", err
	}
	if id != partnerID || !e.now().Before(exp) {
		return "", ErrBadEmbedToken
	}
	return host, nil
}

// parseEmbedToken checks the MAC first, so nothing of a forged token is
// believed.
func (e *Engine) parseEmbedToken(tok string) (host, id string, exp time.Time, err error) {
	if len(tok) > 1024 {
		return "", "", time.Time{}, ErrBadEmbedToken
	}
	i := strings.LastIndexByte(tok, '.')
	if i < 0 {
		return "", "", time.Time{}, ErrBadEmbedToken
	}
	body, sig := tok[:i], tok[i+1:]
	if !hmac.Equal([]byte(sig), []byte(e.mac(body))) {
		return "", "", time.Time{}, ErrBadEmbedToken
	}
	parts := strings.Split(body, ".")
	if len(parts) != 4 || parts[0] != embedTokenVersion {
		return "", "", time.Time{}, ErrBadEmbedToken
	}
	h, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", "", time.Time{}, ErrBadEmbedToken
	}
	unix, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return "", "", time.Time{}, ErrBadEmbedToken
	}
	return string(h), parts[1], time.Unix(unix, 0), nil
}
