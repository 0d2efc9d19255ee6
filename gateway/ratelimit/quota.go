package ratelimit

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/clientip"
)

// FreeImages is how many images a signed-out visitor may generate per
// client address block per UTC day: a count (zero allowed) or unlimited.
// The zero value means the default, 10. It is a flag.Value, so
// --free-images-per-day and IMAGEGATE_FREE_IMAGES_PER_DAY parse through
// Set and report a bad value with the flag's name.
type FreeImages struct {
	n         int
	unlimited bool
	set       bool
}

const (
	defaultFreeImages = 10
	// maxFreeImages keeps counts in int32 entries; more than this a day
	// is "unlimited" in all but name.
	maxFreeImages = 1_000_000
)

// FreeImagesPerDay is an allowance of n images a day; n must be in
// [0, 1000000] (ParseFreeImages checks this for text).
func FreeImagesPerDay(n int) FreeImages { return FreeImages{n: n, set: true} }

// UnlimitedFreeImages is an allowance without limit.
func UnlimitedFreeImages() FreeImages { return FreeImages{unlimited: true, set: true} }

// ParseFreeImages parses "unlimited" or a whole number from 0 to 1000000,
// ignoring surrounding spaces and the case of "unlimited".
func ParseFreeImages(s string) (FreeImages, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "unlimited") {
		return UnlimitedFreeImages(), nil
	}
	// ParseUint, unlike Atoi, refuses signs: "-0" and "+5" are typos.
	n, err := strconv.ParseUint(t, 10, 32)
	if err != nil || n > maxFreeImages {
		return FreeImages{}, fmt.Errorf("free images per day %q: want \"unlimited\" or a whole number from 0 to %d", s, maxFreeImages)
	}
	return FreeImagesPerDay(int(n)), nil
}

// limit is the allowance with the default applied.
func (f FreeImages) limit() (n int, unlimited bool) {
	if !f.set {
		return defaultFreeImages, false
	}
	return f.n, f.unlimited
}

// String is the flag form: "unlimited" or the count.
func (f FreeImages) String() string {
	n, unlimited := f.limit()
	if unlimited {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

// Set parses s (see ParseFreeImages) into f.
func (f *FreeImages) Set(s string) error {
	v, err := ParseFreeImages(s)
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// QuotaConfig sets the anonymous daily allowance of generations.
type QuotaConfig struct {
	// FreeImagesPerDay per client address block (/32, /64); the zero
	// value is 10.
	FreeImagesPerDay FreeImages
	// WideFreeImagesPerDay caps, on top, all the blocks of one wide block
	// together: an IPv4 /24 or an IPv6 /48, which a single site usually
	// holds (a /48 is 65,536 /64s, each of which would otherwise get its
	// own allowance). The zero value is 10 times FreeImagesPerDay
	// (unlimited if that is); raise it if many of your visitors share one
	// carrier or campus NAT.
	WideFreeImagesPerDay FreeImages
	// MaxKeys bounds the address blocks counted at once (524,288, under
	// 96 MiB; see BenchmarkDailyQuotaMillionIPs). Counts from past days
	// are forgotten as they are met. A count is never forgotten early,
	// because a client with more address blocks than the cap could then
	// cycle through them for ever: at the cap, blocks not yet counted today
	// are refused until counts expire at midnight UTC.
	MaxKeys int
}

const defaultFreeQuotaMaxKeys = 1 << 19

// wideFactor is how many blocks' allowances a wide block gets by default.
const wideFactor = 10

// wideLimit is the wide-block allowance with its default applied.
func (c QuotaConfig) wideLimit() (n int, unlimited bool) {
	if c.WideFreeImagesPerDay.set {
		return c.WideFreeImagesPerDay.limit()
	}
	n, unlimited = c.FreeImagesPerDay.limit()
	return min(n*wideFactor, maxFreeImages), unlimited
}

// Validate fills defaults and reports every problem at once.
func (c *QuotaConfig) Validate() error {
	if c.MaxKeys == 0 {
		c.MaxKeys = defaultFreeQuotaMaxKeys
	}
	var errs []error
	if c.MaxKeys < 1 {
		errs = append(errs, errors.New("gateway: free quota max keys must be positive"))
	}
	if n, _ := c.FreeImagesPerDay.limit(); n < 0 || n > maxFreeImages {
		errs = append(errs, fmt.Errorf("gateway: free images per day %d out of range [0, %d]", n, maxFreeImages))
	}
	if c.WideFreeImagesPerDay.set && !c.WideFreeImagesPerDay.unlimited && (c.WideFreeImagesPerDay.n < 0 || c.WideFreeImagesPerDay.n > maxFreeImages) {
		errs = append(errs, fmt.Errorf("gateway: free images per day per wide block %d out of range [0, %d]", c.WideFreeImagesPerDay.n, maxFreeImages))
	}
	return errors.Join(errs...)
}

// quotaCount is one address block's usage on one UTC day.
type quotaCount struct {
	day  int32  // days since the Unix epoch, UTC
	used int32  // images committed that day
	held int32  // images reserved and not yet committed or released
	gen  uint32 // distinguishes this entry from a later one for the same key
}

// Quota counts signed-out generations per client address block per
// UTC day. Images are reserved before the GPU call and committed or
// released after it, so concurrent requests can never spend more than the
// allowance between them.
type Quota struct {
	limit     int
	unlimited bool
	// wide is the allowance of a whole wide block (/24, /48).
	wideLimit     int
	wideUnlimited bool
	now           func() time.Time
	counts        *keyedStore[quotaCount]
	gens          atomic.Uint32 // wraps after 2^32 counts; a hold also checks the day
}

// NewQuota builds the quota; now is the clock (time.Now outside
// tests).
func NewQuota(cfg QuotaConfig, now func() time.Time) (*Quota, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		return nil, errors.New("gateway: daily quota needs a clock")
	}
	q := &Quota{now: now}
	q.limit, q.unlimited = cfg.FreeImagesPerDay.limit()
	q.wideLimit, q.wideUnlimited = cfg.wideLimit()
	q.counts = newKeyedStore(cfg.MaxKeys, func(v *quotaCount, now time.Time) bool {
		// A count with nothing in flight is worth nothing once its day is
		// over, or if it never counted anything.
		return v.held == 0 && (v.day < utcDay(now) || v.used == 0)
	})
	q.counts.keepLive = true
	return q, nil
}

// utcDay numbers t's UTC day from the Unix epoch.
func utcDay(t time.Time) int32 {
	s := t.Unix()
	if s < 0 {
		s -= 86399
	}
	return int32(s / 86400)
}

// Hold is a reservation of n images. Settle it exactly once with
// commit, release or settle; later calls do nothing. A nil *Hold
// (unlimited allowance) settles as a no-op.
type Hold struct {
	q    *Quota
	key  rateKey
	day  int32
	gen  uint32
	n    int32
	done atomic.Bool
	wide *Hold // the same images held against the wide block, if limited
}

// reserve holds n images of addr's allowance for today, or refuses with an
// *apierror.Error: 429 with Retry-After until the next UTC midnight when the day's
// allowance is spent, 403 when signed-out generation is off (allowance 0).
func (q *Quota) Reserve(addr netip.Addr, n int) (*Hold, error) {
	if q.unlimited && q.wideUnlimited || n <= 0 {
		return nil, nil
	}
	if !q.unlimited && q.limit == 0 {
		return nil, &apierror.Error{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "sign_in_required",
			Msg: "sign in to generate images"}
	}
	now := q.now()
	today := utcDay(now)
	// The wide block first: a visitor whose own block has images left is
	// still refused once its /24 or /48 has used up the wide allowance.
	var wide *Hold
	if !q.wideUnlimited {
		var err error
		wide, err = q.hold(wideRateKey(rateNSFreeQuotaWide, addr), q.wideLimit, n, now, today, func(left int) string {
			return fmt.Sprintf("signed-out visitors of this network (%s) may generate %d images a day together and have %d left today; sign in, or retry after midnight UTC",
				clientip.WidePrefix(addr), q.wideLimit, max(left, 0))
		})
		if err != nil {
			return nil, err
		}
	}
	if q.unlimited {
		return wide, nil
	}
	h, err := q.hold(addrRateKey(rateNSFreeQuota, addr), q.limit, n, now, today, func(left int) string {
		return fmt.Sprintf("signed-out visitors may generate %d images a day and this address has %d left today; sign in, or retry after midnight UTC", q.limit, max(left, 0))
	})
	if err != nil {
		wide.Release()
		return nil, err
	}
	h.wide = wide
	return h, nil
}

// hold reserves n of limit images for key today, or refuses with the 429
// whose message says how many are left.
func (q *Quota) hold(key rateKey, limit, n int, now time.Time, today int32, refusal func(left int) string) (*Hold, error) {
	sh := &q.counts.shards[q.counts.shardIndex(key)]
	sh.mu.Lock()
	e := q.counts.get(sh, key, now, true, func(v *quotaCount) { v.day, v.gen = today, q.gens.Add(1) })
	if e == nil {
		sh.mu.Unlock()
		return nil, q.exhausted(now, today, "the free allowance for signed-out visitors is used up for today; sign in, or retry after midnight UTC")
	}
	c := &e.val
	if c.day != today {
		// A new day; anything still held belongs to the old one and
		// settles into nothing (see settle).
		*c = quotaCount{day: today, gen: q.gens.Add(1)}
	}
	left := limit - int(c.used) - int(c.held)
	if n > left {
		sh.mu.Unlock()
		return nil, q.exhausted(now, today, refusal(left))
	}
	c.held += int32(n)
	h := &Hold{q: q, key: key, day: today, gen: c.gen, n: int32(n)}
	sh.mu.Unlock()
	return h, nil
}

// exhausted is the 429 until the next UTC midnight.
func (q *Quota) exhausted(now time.Time, today int32, msg string) *apierror.Error {
	retry := max(1, ceilSeconds(time.Unix((int64(today)+1)*86400, 0).Sub(now)))
	return &apierror.Error{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "free_quota_exhausted",
		Msg: msg, RetryAfter: int(retry)}
}

// commit counts every held image as generated.
func (h *Hold) Commit() { h.settle(int(h.nOrZero())) }

// release returns every held image to the allowance (the generation
// failed or was refused).
func (h *Hold) Release() { h.settle(0) }

// settle counts used of the held images as generated and returns the rest.
// A hold that outlives its UTC day settles into nothing: the new day's
// allowance is already whole.
func (h *Hold) settle(used int) {
	if h == nil || !h.done.CompareAndSwap(false, true) {
		return
	}
	h.wide.settle(used)
	used = min(max(used, 0), int(h.n))
	q := h.q
	sh := &q.counts.shards[q.counts.shardIndex(h.key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := q.counts.get(sh, h.key, q.now(), false, nil)
	if e == nil || e.val.gen != h.gen || e.val.day != h.day {
		// Forgotten at the cap, or a new day: nothing to settle into.
		return
	}
	e.val.held -= h.n
	e.val.used += int32(used)
	if e.val.held == 0 && e.val.used == 0 {
		// Nothing generated: the count is worth nothing, and its place
		// may be needed (the store keeps live counts at its cap).
		q.counts.remove(sh, h.key)
	}
}

func (h *Hold) nOrZero() int32 {
	if h == nil {
		return 0
	}
	return h.n
}

// sweep forgets counts from past days, returning memory after a busy day.
func (q *Quota) Sweep() int { return q.counts.sweep(q.now()) }
