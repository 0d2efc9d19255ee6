package edge

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/cloudflare-go"
	"golang.org/x/time/rate"
)

// This file holds the CDN purger over Cloudflare's API and the names it
// purges by: output URLs on the CDN and cache tags.
//
// # How a purge is sent
//
// Purger.Purge validates every item first (nothing is sent if one is
// invalid), drops duplicates, splits each kind into calls of at most
// PurgerConfig.MaxItemsPerCall items and sends them one after another
// through cloudflare-go's PurgeCache. What cloudflare-go v0.119 does by
// itself (cloudflare.go, makeRequestWithAuthTypeAndHeadersComplete) and
// what this file adds:
//
//   - cloudflare-go retries transport errors, 429 and every 5xx, up to
//     UsingRetryPolicy's count; Purger sets that count to
//     PurgerConfig.Retries. It sleeps between attempts on the real clock in
//     whole seconds and ignores Retry-After, so Purger sets its delays to
//     zero and waits in its own transport instead: exponential backoff from
//     RetryMinDelay to RetryMaxDelay, at least as long as Retry-After, on
//     the injectable PurgeClock.
//   - cloudflare-go returns at once, without retrying, when an attempt
//     fails with context.DeadlineExceeded, which is also what a per-attempt
//     timeout looks like. Purger bounds each attempt with AttemptTimeout
//     and retries a timed-out attempt itself, up to Retries times.
//   - cloudflare-go leaves the bodies of 429 and 5xx answers it retries
//     unclosed and throws away their error envelope. Purger's transport
//     reads and closes them, keeping the envelope for the report.
//   - cloudflare-go paces requests with its own real-time limiter; Purger
//     turns that off and paces every attempt, retries included, with its
//     own limiters: Rate for tag, host, prefix and purge-everything calls,
//     URLRate (counted in URLs) for URL purges.
//   - cloudflare-go does not look at "success" in a 2xx answer; Purger
//     treats "success": false as a failure.
//
// A call Cloudflare rejects as a whole (a 4xx other than a refusal of the
// credentials) is split in halves and retried to find the items it
// objects to, as long as exactly one half fails; the others are purged.
// When Cloudflare refuses the token or zone, nothing more is sent.

// Errors Purge returns; PurgeReport says item by item what happened.
var (
	// ErrInvalidPurge reports a request refused before anything was sent:
	// an item Cloudflare would reject, or an empty or contradictory
	// request. The error names every offending item.
	ErrInvalidPurge = errors.New("edge: invalid purge request")
	// ErrPurgeIncomplete reports that some items were not purged.
	ErrPurgeIncomplete = errors.New("edge: purge incomplete")
	// ErrPurgeUnauthorized reports that Cloudflare refused the API token
	// or the zone. Every later call would fail the same way, so none was
	// sent.
	ErrPurgeUnauthorized = errors.New("edge: cloudflare refused the api token or zone")
)

// Defaults and limits of PurgerConfig. The rates are Cloudflare's purge
// limits (developers.cloudflare.com/cache/how-to/purge-cache, "Purge
// limits"), applied per account:
//
//	                     Free        Pro     Business  Enterprise
//	tag/host/prefix/all  5 a minute  5 a s   10 a s    50 a s
//	URLs                 800 a s     1500/s  1500/s    3000/s
//	items per call       100         100     100       100 (URLs: 500)
const (
	// DefaultCloudflareAPIURL is the base of Cloudflare's v4 API.
	DefaultCloudflareAPIURL = "https://api.cloudflare.com/client/v4"
	// DefaultPurgeBatch is the most items one call carries.
	DefaultPurgeBatch = 100
	// MaxPurgeBatch is the most URLs one call may carry (Enterprise).
	// Tags, hosts and prefixes are always sent at most 100 a call.
	MaxPurgeBatch = 500
	// DefaultPurgeRate is how many tag, host, prefix and purge-everything
	// calls go out a second: the Free plan's 5 a minute, safe on every
	// plan. Pro may set 5, Business 10, Enterprise 50.
	DefaultPurgeRate = 5.0 / 60
	// DefaultPurgeURLRate is how many URLs a second are purged by URL:
	// the Free plan's 800. Pro and Business may set 1500, Enterprise 3000.
	DefaultPurgeURLRate = 800
	// DefaultPurgeRetries is how often a failed call is retried.
	DefaultPurgeRetries       = 3
	DefaultPurgeRetryMinDelay = time.Second
	DefaultPurgeRetryMaxDelay = 30 * time.Second
	// DefaultPurgeAttemptTimeout bounds one HTTP attempt, pacing excluded.
	DefaultPurgeAttemptTimeout = 30 * time.Second
	// MaxCacheTagLen is the longest cache tag a purge may name.
	MaxCacheTagLen = 1024
	// MaxPrefixSeparators is the most '/' a purge prefix may contain.
	MaxPrefixSeparators = 31

	minPurgeRate  = 1.0 / 3600        // slower would stall a purge for hours
	maxTagBatch   = 100               // tags, hosts, prefixes a call, on every plan
	maxRetryAfter = 5 * time.Minute   // longest Retry-After honoured
	maxErrorBody  = 64 << 10          // bytes kept of a retried answer
	maxQuotedItem = 120               // bytes of an item quoted in an error
	purgeAgent    = "imagegate-purge" // User-Agent of API calls
)

// PurgeClock is the time a Purger paces and backs off by. Tests pass a
// fake whose Sleep advances it at once (testpeer.Clock).
type PurgeClock interface {
	Now() time.Time
	// Sleep returns nil after d has passed, or ctx.Err() if ctx ends
	// first.
	Sleep(ctx context.Context, d time.Duration) error
}

// PurgerConfig configures a Purger. The zero value of every optional field
// means its default.
type PurgerConfig struct {
	// APIToken is a Cloudflare API token with the zone's Cache Purge
	// permission. Required; never logged.
	APIToken string
	// ZoneID is the id (32 hex digits, not the domain name) of the zone
	// serving the CDN URLs. Required.
	ZoneID string
	// BaseURL is the API base, used as given minus a trailing slash;
	// empty means DefaultCloudflareAPIURL. Tests point it at cftest.
	BaseURL string
	// MaxItemsPerCall bounds the items of one call, 1 to MaxPurgeBatch;
	// zero means DefaultPurgeBatch. Above 100 it applies to URLs only.
	MaxItemsPerCall int
	// Rate is how many tag, host, prefix and purge-everything calls go
	// out a second; zero means DefaultPurgeRate. Calls are spaced evenly
	// (no burst, though Cloudflare's bucket holds 25 on Free and Pro).
	// The plan's limit is per account and every Purger paces on its own:
	// with several processes purging, or purges from the dashboard, give
	// each a share.
	Rate float64
	// URLRate is how many URLs a second are purged by URL; zero means
	// DefaultPurgeURLRate. One full call may go at once.
	URLRate float64
	// Retries is how often a call that failed with a transport error, a
	// 429, a 5xx or a timeout is retried; zero means DefaultPurgeRetries,
	// negative means never.
	Retries int
	// RetryMinDelay and RetryMaxDelay bound the exponential backoff
	// between attempts; zero means DefaultPurgeRetryMinDelay and
	// DefaultPurgeRetryMaxDelay. A Retry-After answer waits longer if
	// asked to, up to five minutes.
	RetryMinDelay time.Duration
	RetryMaxDelay time.Duration
	// AttemptTimeout bounds one HTTP attempt, not counting the wait for
	// its turn; zero means DefaultPurgeAttemptTimeout.
	AttemptTimeout time.Duration
	// Clock paces calls and backoff; nil means the real clock.
	Clock PurgeClock
}

func (c *PurgerConfig) setDefaults() {
	if c.BaseURL == "" {
		c.BaseURL = DefaultCloudflareAPIURL
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
	if c.MaxItemsPerCall == 0 {
		c.MaxItemsPerCall = DefaultPurgeBatch
	}
	if c.Rate == 0 {
		c.Rate = DefaultPurgeRate
	}
	if c.URLRate == 0 {
		c.URLRate = DefaultPurgeURLRate
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultPurgeRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.RetryMinDelay == 0 {
		c.RetryMinDelay = DefaultPurgeRetryMinDelay
	}
	if c.RetryMaxDelay == 0 {
		c.RetryMaxDelay = DefaultPurgeRetryMaxDelay
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = DefaultPurgeAttemptTimeout
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
}

// Validate reports every problem with the configuration at once. It never
// repeats the token.
func (c PurgerConfig) Validate() error {
	var errs []error
	if c.APIToken == "" {
		errs = append(errs, errors.New("edge: cloudflare api token is missing"))
	} else if strings.IndexFunc(c.APIToken, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		errs = append(errs, errors.New("edge: cloudflare api token contains whitespace or a non-ASCII character (a pasted newline?)"))
	}
	if !isZoneID(c.ZoneID) {
		errs = append(errs, fmt.Errorf("edge: cloudflare zone id %.80q must be 32 lowercase hex digits (the zone's id, not its name)", c.ZoneID))
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("edge: cloudflare api url %q must be an absolute http(s) URL without query", c.BaseURL))
		}
	}
	if c.MaxItemsPerCall < 0 || c.MaxItemsPerCall > MaxPurgeBatch {
		errs = append(errs, fmt.Errorf("edge: purge batch size %d must be between 1 and %d", c.MaxItemsPerCall, MaxPurgeBatch))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"purge rate", c.Rate}, {"purge URL rate", c.URLRate}} {
		if r.v < 0 || math.IsNaN(r.v) || math.IsInf(r.v, 0) || r.v > 0 && r.v < minPurgeRate {
			errs = append(errs, fmt.Errorf("edge: %s %v per second must be finite and at least one per hour", r.name, r.v))
		}
	}
	if c.RetryMinDelay < 0 || c.RetryMaxDelay < 0 || c.AttemptTimeout < 0 {
		errs = append(errs, errors.New("edge: purge retry delays and attempt timeout must not be negative"))
	} else {
		d := c
		d.setDefaults()
		if d.RetryMinDelay > d.RetryMaxDelay {
			errs = append(errs, fmt.Errorf("edge: purge retry min delay %v exceeds max delay %v", d.RetryMinDelay, d.RetryMaxDelay))
		}
	}
	return errors.Join(errs...)
}

// ParseRate parses a rate as an operator writes it: "5/min", "5/m", "10/s",
// "3600/h", or a bare number meaning per second ("0.5"). It returns the
// rate per second, which is finite and positive.
func ParseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	var per float64
	switch strings.TrimSpace(unit) {
	case "", "s", "sec", "second":
		per = 1
	case "m", "min", "minute":
		per = 60
	case "h", "hour":
		per = 3600
	default:
		return 0, fmt.Errorf("edge: rate %.40q: unit must be s, min or h", s)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("edge: rate %.40q: want a positive number, optionally followed by /s, /min or /h", s)
	}
	return n / per, nil
}

// PurgeKind says what a purge item names.
type PurgeKind string

// The kinds of purge items, one per Cloudflare purge method.
const (
	PurgeByURL    PurgeKind = "url"        // a URL, purged exactly
	PurgeByTag    PurgeKind = "tag"        // a cache tag (Cache-Tag header)
	PurgeByHost   PurgeKind = "host"       // everything under a hostname
	PurgeByPrefix PurgeKind = "prefix"     // everything under "host/path"
	PurgeAll      PurgeKind = "everything" // the whole zone
)

// PurgeRequest names what to purge. Any mix of URLs, Tags, Hosts and
// Prefixes may be given; each kind goes in calls of its own, since
// Cloudflare takes one kind a call. Everything purges the whole zone and
// must come alone.
type PurgeRequest struct {
	// URLs are absolute http(s) URLs as the CDN caches them, for outputs
	// OutputURL (without the signature: the cache key ignores it).
	URLs []string
	// Tags are cache tags (ObjectTag, ModelTag, OwnerTagger.Tag,
	// OutputsTag): printable ASCII without space or comma, at most
	// MaxCacheTagLen. Cloudflare compares them case-insensitively.
	Tags []string
	// Hosts are bare hostnames ("cdn.example.com").
	Hosts []string
	// Prefixes are "host/path" without scheme, query or fragment, with
	// at most MaxPrefixSeparators slashes ("cdn.example.com/o").
	Prefixes []string
	// Everything purges every cached object of the zone.
	Everything bool
}

// purgeList is one kind's items, validated and without duplicates.
type purgeList struct {
	kind  PurgeKind
	items []string
}

// Validate reports every item Cloudflare would reject, each error naming
// the item, and an empty or contradictory request, all wrapping
// ErrInvalidPurge.
func (r PurgeRequest) Validate() error {
	_, err := r.normalize()
	return err
}

// normalize validates r and returns its non-empty lists, duplicates
// dropped (tags and hosts compared case-insensitively, as Cloudflare
// does), first spelling and order kept.
func (r PurgeRequest) normalize() ([]purgeList, error) {
	var errs []error
	var lists []purgeList
	for _, l := range []struct {
		kind     PurgeKind
		items    []string
		check    func(string) string
		foldCase bool
	}{
		{PurgeByURL, r.URLs, checkPurgeURL, false},
		{PurgeByTag, r.Tags, checkPurgeTag, true},
		{PurgeByHost, r.Hosts, checkPurgeHost, true},
		{PurgeByPrefix, r.Prefixes, checkPurgePrefix, false},
	} {
		seen := make(map[string]bool, len(l.items))
		var out []string
		for _, item := range l.items {
			if why := l.check(item); why != "" {
				errs = append(errs, fmt.Errorf("%w: %s %s %s", ErrInvalidPurge, l.kind, quoteItem(item), why))
				continue
			}
			key := item
			if l.foldCase {
				key = strings.ToLower(item)
			}
			if !seen[key] {
				seen[key] = true
				out = append(out, item)
			}
		}
		if len(out) > 0 {
			lists = append(lists, purgeList{l.kind, out})
		}
	}
	n := len(r.URLs) + len(r.Tags) + len(r.Hosts) + len(r.Prefixes)
	switch {
	case r.Everything && n > 0:
		errs = append(errs, fmt.Errorf("%w: purging everything cannot be combined with %d other items", ErrInvalidPurge, n))
	case !r.Everything && n == 0:
		errs = append(errs, fmt.Errorf("%w: nothing to purge", ErrInvalidPurge))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if r.Everything {
		lists = []purgeList{{kind: PurgeAll}}
	}
	return lists, nil
}

// quoteItem quotes an item for an error, cut short if long.
func quoteItem(s string) string {
	if len(s) > maxQuotedItem {
		return strconv.Quote(s[:maxQuotedItem]) + "..."
	}
	return strconv.Quote(s)
}

// checkPurgeURL says why u cannot be purged by URL, or "".
func checkPurgeURL(s string) string {
	if s == "" {
		return "is empty"
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f }); i >= 0 {
		return "contains a space, control or non-ASCII character: percent-encode it"
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "is not a valid URL"
	case u.Scheme != "http" && u.Scheme != "https" || u.Opaque != "" || u.Host == "":
		return "is not an absolute http or https URL"
	case u.User != nil:
		return "carries user info, which no cache key contains"
	case strings.Contains(s, "#"):
		return "has a fragment, which no cache key contains"
	case !isPurgeHostname(u.Hostname()):
		return "does not name a valid hostname"
	}
	return ""
}

// checkPurgeTag says why tag cannot be purged, or "".
func checkPurgeTag(tag string) string {
	switch {
	case tag == "":
		return "is empty"
	case len(tag) > MaxCacheTagLen:
		return fmt.Sprintf("is longer than %d characters", MaxCacheTagLen)
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; c <= ' ' || c > '~' || c == ',' {
			return "contains a space, a comma or a character outside printable ASCII"
		}
	}
	return ""
}

// checkPurgeHost says why host cannot be purged as a hostname, or "".
func checkPurgeHost(host string) string {
	switch {
	case host == "":
		return "is empty"
	case strings.Contains(host, "://"):
		return "must be a bare hostname, without scheme"
	case strings.ContainsAny(host, "/:?#"):
		return "must be a bare hostname, without port or path"
	case !isPurgeHostname(host):
		return "is not a valid hostname"
	}
	return ""
}

// checkPurgePrefix says why prefix cannot be purged by prefix, or "".
func checkPurgePrefix(prefix string) string {
	if prefix == "" {
		return "is empty"
	}
	if i := strings.IndexFunc(prefix, func(r rune) bool { return r <= ' ' || r >= 0x7f }); i >= 0 {
		return "contains a space, control or non-ASCII character: percent-encode it"
	}
	host, _, _ := strings.Cut(prefix, "/")
	switch {
	case strings.Contains(prefix, "://") || strings.Contains(host, ":"):
		return `must not include a scheme or port: write "host/path"`
	case strings.Contains(prefix, "?"):
		return "has a query string, which a prefix purge cannot match"
	case strings.Contains(prefix, "#"):
		return "has a fragment, which a prefix purge cannot match"
	case strings.Count(prefix, "/") > MaxPrefixSeparators:
		return fmt.Sprintf("has %d path separators, Cloudflare allows at most %d", strings.Count(prefix, "/"), MaxPrefixSeparators)
	case !isPurgeHostname(host):
		return `must start with a hostname: write "host/path"`
	}
	return ""
}

// isPurgeHostname reports whether s is a DNS name: dot-separated labels of
// letters, digits, '-' and '_', 1 to 63 bytes each, not starting or ending
// with '-', at most 253 bytes.
func isPurgeHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isZoneID reports whether s has the form of a Cloudflare zone id.
func isZoneID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// PurgeOutcome is what became of an item or a call.
type PurgeOutcome string

// The outcomes of purge items and calls.
const (
	OutcomePurged  PurgeOutcome = "purged"  // Cloudflare accepted the call
	OutcomeFailed  PurgeOutcome = "failed"  // see Reason
	OutcomePlanned PurgeOutcome = "planned" // dry run: would be sent
)

// PurgeReport is the result of Purge or Plan.
type PurgeReport struct {
	// DryRun is set by Plan: nothing was sent.
	DryRun bool
	// Batches are the calls, in the order they were sent (or would be).
	// A call Cloudflare rejected as a whole is followed by the calls that
	// split it to find the items it objected to.
	Batches []PurgeBatch
	// Items holds every distinct item of the request, in request order,
	// with its final outcome. A purge of everything is one item with
	// Kind PurgeAll and an empty Item.
	Items []PurgeItem
}

// PurgeBatch is one purge call.
type PurgeBatch struct {
	Kind PurgeKind
	// Items are what the call names; nil for PurgeAll.
	Items   []string
	Outcome PurgeOutcome
	// Reason says why the call failed, with Cloudflare's status, codes
	// and messages when it answered.
	Reason string
	// PurgeID is Cloudflare's id of a purged call.
	PurgeID string
	// Attempts counts the HTTP requests made for the call, retries
	// included; 0 for a call never sent.
	Attempts int
}

// PurgeItem is one item and what became of it.
type PurgeItem struct {
	Kind    PurgeKind
	Item    string
	Outcome PurgeOutcome
	Reason  string // why it failed
}

// Failed returns the items that were not purged.
func (r *PurgeReport) Failed() []PurgeItem {
	var out []PurgeItem
	for _, it := range r.Items {
		if it.Outcome == OutcomeFailed {
			out = append(out, it)
		}
	}
	return out
}

// Count returns how many items have outcome o.
func (r *PurgeReport) Count(o PurgeOutcome) int {
	n := 0
	for _, it := range r.Items {
		if it.Outcome == o {
			n++
		}
	}
	return n
}

// PurgeStats are a Purger's running totals, for metrics.
type PurgeStats struct {
	Requests    uint64 // HTTP requests sent to the API, retries included
	RateLimited uint64 // of which Cloudflare answered 429
	Purged      uint64 // items purged
	Failed      uint64 // items that failed
}

// Purger purges the CDN through Cloudflare's API. It is safe for
// concurrent use; concurrent purges share the pacing, so together they
// stay within the configured rates.
type Purger struct {
	api       *cloudflare.API
	zoneID    string
	maxURLs   int
	maxOthers int
	retries   int
	clock     PurgeClock
	pacer     *pacer
	logger    *slog.Logger
	purged    atomic.Uint64
	failed    atomic.Uint64
}

// NewPurger returns a Purger for cfg that logs to logger (nil: nowhere).
// It makes no API call: a wrong token shows up on the first purge as
// ErrPurgeUnauthorized.
func NewPurger(cfg PurgerConfig, logger *slog.Logger) (*Purger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base := http.DefaultTransport
	if t, ok := base.(*http.Transport); ok {
		base = t.Clone() // our own connection pool
	}
	pc := &pacer{
		base:           base,
		clock:          cfg.Clock,
		calls:          rate.NewLimiter(rate.Limit(cfg.Rate), 1),
		urls:           rate.NewLimiter(rate.Limit(cfg.URLRate), cfg.MaxItemsPerCall),
		minDelay:       cfg.RetryMinDelay,
		maxDelay:       cfg.RetryMaxDelay,
		attemptTimeout: cfg.AttemptTimeout,
	}
	api, err := cloudflare.NewWithAPIToken(cfg.APIToken,
		cloudflare.BaseURL(cfg.BaseURL),
		cloudflare.HTTPClient(&http.Client{Transport: pc}),
		// Retry what cloudflare-go retries, without its real-time
		// sleeps: pc backs off on cfg.Clock instead.
		cloudflare.UsingRetryPolicy(cfg.Retries, 0, 0),
		// pc paces; cloudflare-go's own limiter would wait on the real
		// clock and knows nothing of plans.
		cloudflare.UsingRateLimit(math.Inf(1)),
		cloudflare.UserAgent(purgeAgent),
	)
	if err != nil {
		return nil, fmt.Errorf("edge: cloudflare client: %w", err)
	}
	return &Purger{
		api:       api,
		zoneID:    cfg.ZoneID,
		maxURLs:   cfg.MaxItemsPerCall,
		maxOthers: min(cfg.MaxItemsPerCall, maxTagBatch),
		retries:   cfg.Retries,
		clock:     cfg.Clock,
		pacer:     pc,
		logger:    logger,
	}, nil
}

// Stats returns the running totals.
func (p *Purger) Stats() PurgeStats {
	return PurgeStats{
		Requests:    p.pacer.requests.Load(),
		RateLimited: p.pacer.rateLimited.Load(),
		Purged:      p.purged.Load(),
		Failed:      p.failed.Load(),
	}
}

// plannedCall is one call of a plan.
type plannedCall struct {
	kind  PurgeKind
	items []string
}

// plan validates req and splits it into calls.
func (p *Purger) plan(req PurgeRequest) ([]PurgeItem, []plannedCall, error) {
	lists, err := req.normalize()
	if err != nil {
		return nil, nil, err
	}
	var items []PurgeItem
	var calls []plannedCall
	for _, l := range lists {
		if l.kind == PurgeAll {
			items = append(items, PurgeItem{Kind: PurgeAll})
			calls = append(calls, plannedCall{kind: PurgeAll})
			continue
		}
		for _, it := range l.items {
			items = append(items, PurgeItem{Kind: l.kind, Item: it})
		}
		size := p.maxOthers
		if l.kind == PurgeByURL {
			size = p.maxURLs
		}
		for rest := l.items; len(rest) > 0; {
			n := min(size, len(rest))
			calls = append(calls, plannedCall{l.kind, rest[:n:n]})
			rest = rest[n:]
		}
	}
	return items, calls, nil
}

// Plan validates req and returns the calls Purge would send, with every
// item and call OutcomePlanned, without calling the API. The error wraps
// ErrInvalidPurge.
func (p *Purger) Plan(req PurgeRequest) (*PurgeReport, error) {
	items, calls, err := p.plan(req)
	if err != nil {
		return nil, err
	}
	rep := &PurgeReport{DryRun: true, Items: items}
	for i := range rep.Items {
		rep.Items[i].Outcome = OutcomePlanned
	}
	for _, c := range calls {
		rep.Batches = append(rep.Batches, PurgeBatch{Kind: c.kind, Items: c.items, Outcome: OutcomePlanned})
	}
	return rep, nil
}

// Purge purges what req names and reports item by item. An invalid
// request returns a nil report and an error wrapping ErrInvalidPurge,
// having sent nothing. Otherwise the report is complete, and the error is
// nil exactly when every item was purged; else it wraps
// ErrPurgeIncomplete, and also ErrPurgeUnauthorized when Cloudflare
// refused the credentials, or ctx's error when ctx ended (items not sent
// are then failed with a reason starting "not sent").
func (p *Purger) Purge(ctx context.Context, req PurgeRequest) (*PurgeReport, error) {
	items, calls, err := p.plan(req)
	if err != nil {
		return nil, err
	}
	run := &purgeRun{p: p, rep: &PurgeReport{Items: items}, index: make(map[itemKey]int, len(items))}
	for i, it := range items {
		run.index[itemKey{it.Kind, it.Item}] = i
	}
	var stop error
	for _, c := range calls {
		if stop == nil {
			stop = run.send(ctx, c.kind, c.items)
			continue
		}
		reason := "not sent: " + stop.Error()
		run.rep.Batches = append(run.rep.Batches, PurgeBatch{Kind: c.kind, Items: c.items, Outcome: OutcomeFailed, Reason: reason})
		run.settle(c.kind, c.items, OutcomeFailed, reason)
	}

	rep := run.rep
	purged, failed := rep.Count(OutcomePurged), rep.Count(OutcomeFailed)
	p.purged.Add(uint64(purged))
	p.failed.Add(uint64(failed))
	p.logger.Info("cdn purge", "purged", purged, "failed", failed, "calls", len(rep.Batches))
	if failed == 0 {
		return rep, nil
	}
	if stop != nil {
		return rep, fmt.Errorf("%w: %d of %d items not purged: %w", ErrPurgeIncomplete, failed, len(rep.Items), stop)
	}
	first := rep.Failed()[0]
	return rep, fmt.Errorf("%w: %d of %d items not purged, first %s %s: %s",
		ErrPurgeIncomplete, failed, len(rep.Items), first.Kind, quoteItem(first.Item), first.Reason)
}

type itemKey struct {
	kind PurgeKind
	item string
}

// purgeRun is the state of one Purge.
type purgeRun struct {
	p     *Purger
	rep   *PurgeReport
	index map[itemKey]int
}

// settle sets the outcome of items.
func (r *purgeRun) settle(kind PurgeKind, items []string, o PurgeOutcome, reason string) {
	if kind == PurgeAll {
		items = []string{""}
	}
	for _, it := range items {
		i := r.index[itemKey{kind, it}]
		r.rep.Items[i].Outcome = o
		r.rep.Items[i].Reason = reason
	}
}

// record adds a sent call to the report and settles its items.
func (r *purgeRun) record(kind PurgeKind, items []string, res callResult) {
	b := PurgeBatch{Kind: kind, Items: items, Outcome: OutcomePurged, PurgeID: res.id, Attempts: res.attempts}
	if res.class != callOK {
		b.Outcome, b.Reason = OutcomeFailed, res.reason
		r.p.logger.Warn("cdn purge call failed", "kind", kind, "items", len(items), "attempts", res.attempts, "reason", res.reason)
	} else {
		r.p.logger.Debug("cdn purge call", "kind", kind, "items", len(items), "attempts", res.attempts, "purge_id", res.id)
	}
	r.rep.Batches = append(r.rep.Batches, b)
	r.settle(kind, items, b.Outcome, b.Reason)
}

// send makes one planned call, then isolates the items of a rejected one.
// It returns the error that makes further calls pointless: refused
// credentials, or ctx ended.
func (r *purgeRun) send(ctx context.Context, kind PurgeKind, items []string) error {
	res := r.p.call(ctx, kind, items)
	r.record(kind, items, res)
	switch res.class {
	case callStop:
		return res.err
	case callRejected:
		if len(items) > 1 {
			return r.isolate(ctx, kind, items)
		}
	}
	return nil
}

// isolate finds the items Cloudflare objects to in a rejected call by
// sending each half on its own: a half that fails alone while the other
// passes holds them, and is split again. When both halves fail the cause
// is the call as a whole (or several items) and splitting stops, so a
// call-wide rejection costs two more calls, not one per item.
func (r *purgeRun) isolate(ctx context.Context, kind PurgeKind, items []string) error {
	mid := len(items) / 2
	halves := [2][]string{items[:mid:mid], items[mid:]}
	var rejected [][]string
	for _, h := range halves {
		res := r.p.call(ctx, kind, h)
		r.record(kind, h, res)
		switch res.class {
		case callStop:
			return res.err
		case callRejected:
			rejected = append(rejected, h)
		}
	}
	if len(rejected) == 1 && len(rejected[0]) > 1 {
		return r.isolate(ctx, kind, rejected[0])
	}
	return nil
}

// callClass sorts the result of a call.
type callClass int

const (
	callOK       callClass = iota
	callFailed             // transient failure persisted through the retries
	callRejected           // Cloudflare refused the call's content
	callStop               // credentials refused or ctx ended: send nothing more
)

type callResult struct {
	class    callClass
	id       string
	attempts int
	reason   string
	err      error // for callStop: wraps ErrPurgeUnauthorized or ctx.Err()
}

// call sends one purge call through cloudflare-go, retrying attempts that
// timed out (cloudflare-go does not), and classifies the result.
func (p *Purger) call(ctx context.Context, kind PurgeKind, items []string) callResult {
	body := cloudflare.PurgeCacheRequest{}
	switch kind {
	case PurgeByURL:
		body.Files = items
	case PurgeByTag:
		body.Tags = items
	case PurgeByHost:
		body.Hosts = items
	case PurgeByPrefix:
		body.Prefixes = items
	case PurgeAll:
		body.Everything = true
	}
	st := &callState{tokens: 1}
	if kind == PurgeByURL {
		st.tokens, st.urls = len(items), true
	}
	cctx := context.WithValue(ctx, callKey{}, st)
	for timeouts := 0; ; timeouts++ {
		resp, err := p.api.PurgeCache(cctx, p.zoneID, body)
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) && timeouts < p.retries {
			if st.failures == 0 {
				// It timed out reading the body, after the transport
				// had counted the attempt a success: back off anyway.
				st.fail(p.clock.Now(), 0, 0, nil)
			}
			p.logger.Warn("cdn purge attempt timed out, retrying", "kind", kind, "attempts", st.attempts)
			continue
		}
		return classify(ctx, st, resp, err)
	}
}

// classify turns cloudflare-go's answer into a callResult.
func classify(ctx context.Context, st *callState, resp cloudflare.PurgeCacheResponse, err error) callResult {
	res := callResult{attempts: st.attempts}
	if err == nil {
		if resp.Success {
			res.id = resp.Result.ID
			return res
		}
		res.reason = fmt.Sprintf("HTTP %d with success=false: %s", st.status, describe(resp.Errors))
		res.class = callRejected
		if hasAuthCode(resp.Errors) {
			res.class = callStop
			res.err = fmt.Errorf("%w: %s", ErrPurgeUnauthorized, res.reason)
		}
		return res
	}
	if cerr := ctx.Err(); cerr != nil {
		res.class, res.err = callStop, cerr
		res.reason = "not sent or not completed: " + cerr.Error()
		return res
	}
	var cfErr *cloudflare.Error
	if errors.As(err, &cfErr) {
		res.reason = fmt.Sprintf("HTTP %d: %s", cfErr.StatusCode, describe(cfErr.Errors))
		switch {
		case cfErr.StatusCode == http.StatusUnauthorized || cfErr.StatusCode == http.StatusForbidden ||
			cfErr.StatusCode == http.StatusNotFound || hasAuthCode(cfErr.Errors):
			res.class = callStop
			res.err = fmt.Errorf("%w: %s", ErrPurgeUnauthorized, res.reason)
		case cfErr.StatusCode >= 400 && cfErr.StatusCode < 500 && cfErr.StatusCode != http.StatusTooManyRequests:
			res.class = callRejected
		default:
			res.class = callFailed
		}
		return res
	}
	res.class = callFailed
	switch {
	case st.status == http.StatusTooManyRequests || st.status >= 500:
		res.reason = fmt.Sprintf("HTTP %d after %s: %s", st.status, attemptCount(st.attempts), describe(st.errs))
	case st.status >= 400:
		// An answer cloudflare-go could not read as an envelope.
		res.reason = fmt.Sprintf("HTTP %d: %v", st.status, err)
		res.class = callRejected
		if st.status == http.StatusUnauthorized || st.status == http.StatusForbidden || st.status == http.StatusNotFound {
			res.class, res.err = callStop, fmt.Errorf("%w: %s", ErrPurgeUnauthorized, res.reason)
		}
	case errors.Is(err, context.DeadlineExceeded):
		res.reason = "timed out after " + attemptCount(st.attempts)
	default:
		res.reason = fmt.Sprintf("after %s: %v", attemptCount(st.attempts), err)
	}
	return res
}

func attemptCount(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return strconv.Itoa(n) + " attempts"
}

// authCodes are Cloudflare error codes that mean the credentials or zone
// are wrong, whatever the HTTP status (an unknown token is a 400).
var authCodes = map[int]bool{
	1000: true, 1001: true, 6003: true, 6111: true, 9103: true,
	9106: true, 9109: true, 10000: true, 10001: true,
}

func hasAuthCode(infos []cloudflare.ResponseInfo) bool {
	for _, e := range infos {
		if authCodes[e.Code] {
			return true
		}
	}
	return false
}

// describe renders an envelope's errors as "message (code); ...".
func describe(infos []cloudflare.ResponseInfo) string {
	if len(infos) == 0 {
		return "no error details"
	}
	parts := make([]string, 0, len(infos))
	for _, e := range infos {
		parts = append(parts, fmt.Sprintf("%s (%d)", e.Message, e.Code))
	}
	return strings.Join(parts, "; ")
}

// callKey carries a call's *callState to the transport.
type callKey struct{}

// callState follows one purge call through its HTTP attempts. The
// attempts of a call run one after another on the caller's goroutine.
type callState struct {
	tokens     int  // rate tokens an attempt takes
	urls       bool // tokens are URLs, not calls
	attempts   int
	failures   int       // consecutive failed attempts
	failedAt   time.Time // end of the last failed attempt
	retryAfter time.Duration
	status     int                       // HTTP status of the last answer
	errs       []cloudflare.ResponseInfo // envelope errors of the last 429 or 5xx
}

// fail notes a failed attempt so the next one backs off.
func (st *callState) fail(now time.Time, status int, retryAfter time.Duration, errs []cloudflare.ResponseInfo) {
	st.failures++
	st.failedAt = now
	st.retryAfter = retryAfter
	st.status = status
	st.errs = errs
}

// pacer is the http.RoundTripper under cloudflare-go: it waits for each
// attempt's turn (backoff after a failure, Retry-After, the rate limits),
// bounds the attempt with a timeout, and keeps what cloudflare-go throws
// away of failed answers.
type pacer struct {
	base           http.RoundTripper
	clock          PurgeClock
	calls          *rate.Limiter // tag, host, prefix, everything calls
	urls           *rate.Limiter // URLs purged by URL
	minDelay       time.Duration
	maxDelay       time.Duration
	attemptTimeout time.Duration

	mu        sync.Mutex
	notBefore time.Time // from Retry-After: the account is rate-limited until then

	requests    atomic.Uint64
	rateLimited atomic.Uint64
}

// RoundTrip implements http.RoundTripper.
func (pc *pacer) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	st, _ := ctx.Value(callKey{}).(*callState)
	if st == nil {
		st = &callState{tokens: 1}
	}
	if err := pc.wait(ctx, st); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, pc.attemptTimeout)
	st.attempts++
	pc.requests.Add(1)
	resp, err := pc.base.RoundTrip(req.WithContext(actx))
	now := pc.clock.Now()
	if err != nil {
		cancel()
		st.fail(now, 0, 0, nil)
		return nil, err
	}
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode < 500 {
		st.failures, st.status = 0, resp.StatusCode
		resp.Body = &cancelOnClose{resp.Body, cancel}
		return resp, nil
	}
	// cloudflare-go retries this answer without reading or closing it:
	// keep its envelope and free the connection.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	cancel()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var env struct {
		Errors []cloudflare.ResponseInfo `json:"errors"`
	}
	_ = json.Unmarshal(body, &env)
	ra := retryAfter(resp.Header.Get("Retry-After"), now)
	if resp.StatusCode == http.StatusTooManyRequests {
		pc.rateLimited.Add(1)
		if ra > 0 {
			pc.mu.Lock()
			if until := now.Add(ra); until.After(pc.notBefore) {
				pc.notBefore = until
			}
			pc.mu.Unlock()
		}
	}
	st.fail(now, resp.StatusCode, ra, env.Errors)
	return resp, nil
}

// wait blocks until st's next attempt may go: after the backoff if the
// last attempt failed, after any Retry-After, and within the rate.
func (pc *pacer) wait(ctx context.Context, st *callState) error {
	var until time.Time
	if st.failures > 0 {
		d := pc.minDelay << min(st.failures-1, 30)
		if d > pc.maxDelay || d <= 0 {
			d = pc.maxDelay
		}
		until = st.failedAt.Add(max(d, st.retryAfter))
	}
	pc.mu.Lock()
	if pc.notBefore.After(until) {
		until = pc.notBefore
	}
	pc.mu.Unlock()
	now := pc.clock.Now()
	if d := until.Sub(now); d > 0 {
		if err := pc.clock.Sleep(ctx, d); err != nil {
			return err
		}
		now = pc.clock.Now()
	}
	lim := pc.calls
	if st.urls {
		lim = pc.urls
	}
	r := lim.ReserveN(now, st.tokens)
	if !r.OK() {
		return fmt.Errorf("edge: purge of %d items exceeds the rate limiter's burst", st.tokens)
	}
	if d := r.DelayFrom(now); d > 0 {
		// Add a millisecond: the limiter truncates to the nanosecond,
		// and a server counting the same rate in floating point must
		// never see us early.
		d = d.Truncate(time.Millisecond) + time.Millisecond
		if err := pc.clock.Sleep(ctx, d); err != nil {
			r.CancelAt(pc.clock.Now())
			return err
		}
	}
	return nil
}

// retryAfter parses a Retry-After header (seconds or an HTTP date),
// capped at maxRetryAfter; 0 if absent or malformed.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// cancelOnClose ends an attempt's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// realClock is the PurgeClock of production.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OutputsTag is the cache tag on every output the gateway serves: purging
// it empties the CDN of outputs and nothing else.
const OutputsTag = "imagegate-output"

// OutputURL returns the CDN URL of an output, cdnBase (an absolute http(s)
// URL without path or query, as the gateway's CDN URL; a trailing slash is
// dropped) followed by "/" and OutputName(hash, ext). That is the URL to
// purge: it carries no signature because the CDN's cache key leaves the
// signature out (see the package documentation), so this one URL is the
// cache entry of every signed link to the output.
func OutputURL(cdnBase, hash, ext string) string {
	return strings.TrimSuffix(cdnBase, "/") + "/" + OutputName(hash, ext)
}

// ObjectTag returns the cache tag of one output object, "ig-o:<hash>",
// where hash is the object's HashHex. Purging it removes the object under
// every URL and extension it was served at.
func ObjectTag(hash string) string {
	return "ig-o:" + hash
}

// ModelTag returns the cache tag of the outputs of one model version,
// "ig-m:<model>@<version>", for purging everything a withdrawn model
// made. ASCII letters are lowercased, as Cloudflare compares tags without
// case; bytes outside [a-z0-9._-] are written %XX, so any model and
// version give a valid tag and different pairs never share one. A tag
// that would exceed MaxCacheTagLen is "ig-m:sha256:<hex of model NUL
// version>" instead.
func ModelTag(model, version string) string {
	var b strings.Builder
	b.WriteString("ig-m:")
	tagEscape(&b, model)
	b.WriteByte('@')
	tagEscape(&b, version)
	if b.Len() <= MaxCacheTagLen {
		return b.String()
	}
	sum := sha256.Sum256([]byte(model + "\x00" + version))
	return "ig-m:sha256:" + hex.EncodeToString(sum[:])
}

// tagEscape writes s lowercased, with bytes outside [a-z0-9._-] as %XX.
func tagEscape(b *strings.Builder, s string) {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

// OwnerTagger derives the opaque cache tag of an account, so that all of
// an account's outputs can be purged by one tag, without listing URLs and
// without telling Cloudflare the account id (promise X1: the CDN gets
// outputs only). It is safe for concurrent use.
//
// The tag is "ig-u:" and 32 hex digits: the first 128 bits of
// HMAC-SHA256(key, "imagegate owner cache tag v1" NUL accountID). Without
// the key, a tag cannot be linked to an account id, even by trying
// candidate ids.
//
// The key must stay the same for as long as the CDN may hold an output
// (outputs are cached for up to a year): a new key makes new tags, and
// objects cached under the old ones can then be purged only by the old
// tag or by URL. Do not reuse the link signing key, which rotates. An
// object shared by several accounts carries the tag of each owner known
// when it was cached; one cached before an account came to own it lacks
// that account's tag, so purge the URLs of deleted objects as well.
type OwnerTagger struct {
	key []byte
}

// ownerTagContext separates owner tags from any other use of the key.
const ownerTagContext = "imagegate owner cache tag v1\x00"

// NewOwnerTagger returns an OwnerTagger for key, a secret of at least
// MinKeyLen bytes (LoadOrCreateKey makes one).
func NewOwnerTagger(key []byte) (*OwnerTagger, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("edge: owner tag key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	return &OwnerTagger{key: bytes.Clone(key)}, nil
}

// Tag returns the cache tag of accountID's outputs.
func (t *OwnerTagger) Tag(accountID string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(ownerTagContext))
	m.Write([]byte(accountID))
	var sum [sha256.Size]byte
	return "ig-u:" + hex.EncodeToString(m.Sum(sum[:0])[:16])
}
