// Package ratelimit owns every limit on how often a client may act:
//
//   - Limiter, the token-bucket rate limits per client address, account
//     and API key, charged in cost units (Costs) by Fiber middleware
//     (Limiter.Limit) with the draft-ietf-httpapi-ratelimit-headers
//     RateLimit and RateLimit-Policy headers, plus a Charge a handler adds
//     to when it learns the request costs more (a cache miss);
//   - Quota, the free images per day of anonymous visitors;
//   - LoginGuard, the per-address and per-account brake on password
//     guessing;
//   - Throttle, a small per-key limit (account mail, security-log writes).
//
// All of them live in memory, bounded by a key cap, and take their clock
// from the caller. Refusals are *apierror.Error values (429, or 403 when
// the free quota needs a sign-in) that the gateway's error handler sends
// as they are. Only Limiter.Limit and ChargeOf touch a fiber.Ctx.
package ratelimit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/clientip"
)

// Policy is one token bucket: a client may spend Quota cost units at
// once, and the bucket refills at Quota per Window. It is advertised as
// RateLimit-Policy: "<name>";q=<Quota>;w=<Window in seconds>.
type Policy struct {
	// Quota is the bucket's size in cost units (see Costs).
	Quota int
	// Window is how long an empty bucket takes to refill; whole seconds.
	Window time.Duration
}

// limit is the refill rate in cost units per second.
func (p Policy) limit() float64 { return float64(p.Quota) / p.Window.Seconds() }

func (p Policy) validate(name string, minQuota int) error {
	var errs []error
	if p.Quota < minQuota {
		errs = append(errs, fmt.Errorf("gateway: rate limit %s: quota %d cannot pay for the dearest request (cost %d)", name, p.Quota, minQuota))
	}
	// The window is advertised in whole seconds (draft w parameter); a
	// bucket that takes over a week to refill is a typo, and would also
	// overflow the full-bucket initialisation in newRateBucket.
	if p.Window < time.Second || p.Window%time.Second != 0 || p.Window > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("gateway: rate limit %s: window %s must be whole seconds between 1s and 168h", name, p.Window))
	}
	return errors.Join(errs...)
}

// Costs is the route cost table, in cost units taken from every bucket
// a request is charged to. The defaults make the dearest work dearest:
//
//	Default        1  any other limited route (sign-in, account, consent)
//	Object         1  GET /o/<hash>: bytes from disk or memory
//	GenerationHit  4  a generation or edit answered from the cache: validation, hashing, a signed URL
//	GenerationMiss 20 one image that reaches the GPU
//
// A generation route is charged GenerationHit when it arrives; the handler
// charges GenerationMiss-GenerationHit more through ChargeOf(c).extra
// for each image it learns must be generated, before calling the GPU.
type Costs struct {
	Default        int
	Object         int
	GenerationHit  int
	GenerationMiss int
}

// Config sets the request rate limits. The zero value is the
// defaults below; call Validate after setting fields.
//
// Every limited request is charged to the client-address bucket (IP), and
// in addition to the Anonymous bucket of that address when it is signed
// out, or to its account's and API key's buckets, sized by the account's
// plan, when it is signed in. The IP bucket is the flood guard and sized
// for many people behind one NAT; the Anonymous bucket keeps signed-out
// traffic from a shared address from starving the people signed in there.
type Config struct {
	// Disabled turns every rate limit off (IMAGEGATE_RATE_LIMITS=off): no
	// refusals and no RateLimit headers. For benchmarks and trusted
	// internal use; sign-in protection and the free daily quota have
	// their own settings and stay on.
	Disabled bool
	// IP limits every request per client address block (/32, /64):
	// 600 per 60 s.
	IP Policy
	// Anonymous further limits signed-out requests per client address
	// block: 120 per 60 s.
	Anonymous Policy
	// Plans limits each account, and each API key, by the account's plan:
	// "free" 300 per 60 s, "pro" 1200 per 60 s (the built-in plans).
	Plans map[string]Policy
	// DefaultPlan is used for a plan name missing from Plans ("free").
	DefaultPlan string
	// Costs is the route cost table (see Costs).
	Costs Costs
	// MaxKeys bounds the buckets remembered at once (262,144, about
	// 50 MiB; see BenchmarkRateLimiterMillionIPs). Full buckets are
	// forgotten as they are met, which changes nothing; past the cap the
	// least recently used bucket is forgotten even if not full, which
	// lets its client start afresh.
	MaxKeys int
}

// defaultRateMaxKeys is the default cap on remembered buckets.
const defaultRateMaxKeys = 1 << 18

func (c *Config) setDefaults() {
	if c.IP == (Policy{}) {
		c.IP = Policy{Quota: 600, Window: time.Minute}
	}
	if c.Anonymous == (Policy{}) {
		c.Anonymous = Policy{Quota: 120, Window: time.Minute}
	}
	if c.Plans == nil {
		c.Plans = map[string]Policy{
			"free": {Quota: 300, Window: time.Minute},
			"pro":  {Quota: 1200, Window: time.Minute},
		}
	}
	if c.DefaultPlan == "" {
		c.DefaultPlan = "free"
	}
	if c.Costs == (Costs{}) {
		c.Costs = Costs{Default: 1, Object: 1, GenerationHit: 4, GenerationMiss: 20}
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = defaultRateMaxKeys
	}
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	c.setDefaults()
	var errs []error
	k := c.Costs
	if k.Default < 1 || k.Object < 1 || k.GenerationHit < k.Object || k.GenerationMiss < k.GenerationHit {
		errs = append(errs, fmt.Errorf("gateway: rate costs %+v: every cost must be at least 1, and object ≤ generation hit ≤ generation miss", k))
	}
	dearest := max(k.Default, k.Object, k.GenerationHit, k.GenerationMiss)
	errs = append(errs, c.IP.validate("ip", dearest), c.Anonymous.validate("anonymous", dearest))
	for _, name := range slices.Sorted(maps.Keys(c.Plans)) {
		errs = append(errs, c.Plans[name].validate("plan "+strconv.Quote(name), dearest))
	}
	if _, ok := c.Plans[c.DefaultPlan]; !ok {
		errs = append(errs, fmt.Errorf("gateway: default plan %q is not among the rate-limit plans", c.DefaultPlan))
	}
	if c.MaxKeys < 1 {
		errs = append(errs, errors.New("gateway: rate limit max keys must be positive"))
	}
	return errors.Join(errs...)
}

// rateNamespace keeps the buckets of different kinds of party apart.
type rateNamespace uint8

const (
	rateNSIP            rateNamespace = iota + 1 // client address block, every request
	rateNSAnon                                   // client address block, signed-out requests
	rateNSAccount                                // account id
	rateNSAPIKey                                 // API key id
	rateNSLoginPair                              // (account, client address block) sign-in attempts
	rateNSLoginSource                            // client address block sign-in attempts
	rateNSLoginAccount                           // account sign-in attempts from new sources
	rateNSLoginKnown                             // (account, client address block) that signed in
	rateNSFreeQuota                              // client address block free images
	rateNSFreeQuotaWide                          // wide address block (/24, /48) free images
)

// rateKey names one remembered bucket: a namespace and a 128-bit identity,
// either an address block or a hash of opaque ids. A fixed-size key keeps
// a million entries from costing a million string allocations, and keeps
// account ids out of memory in the clear.
type rateKey struct {
	ns rateNamespace
	id [16]byte
}

// addrRateKey keys a client address by its block (clientip.Prefix).
func addrRateKey(ns rateNamespace, a netip.Addr) rateKey {
	return rateKey{ns: ns, id: clientip.Prefix(a).Addr().As16()}
}

// wideRateKey keys a client address by its wide block: the /24 of an IPv4
// address, the /48 of an IPv6 one (a typical site's assignment, holding
// 65,536 /64s).
func wideRateKey(ns rateNamespace, a netip.Addr) rateKey {
	p := clientip.WidePrefix(a)
	return rateKey{ns: ns, id: p.Addr().As16()}
}

// hashedRateKey keys opaque strings by a truncated SHA-256 of them, each
// length-prefixed so that ("ab","c") and ("a","bc") differ.
func hashedRateKey(ns rateNamespace, parts ...string) rateKey {
	h := sha256.New()
	var n [9]byte
	n[0] = byte(ns)
	h.Write(n[:1])
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[1:], uint64(len(p)))
		h.Write(n[1:])
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	k := rateKey{ns: ns}
	copy(k.id[:], h.Sum(sum[:0]))
	return k
}

// keyedStore is a sharded map from rateKey to V that stays bounded: each
// shard keeps its entries in least-recently-used order, forgets idle ones
// (idle reports that forgetting changes nothing) as it meets them, and at
// its share of the cap forgets the coldest idle entry, or failing that the
// coldest entry at all. Callers hold a shard's lock while they use its
// entries.
type keyedStore[V any] struct {
	shards   []keyedShard[V]
	seed     maphash.Seed
	perShard int
	idle     func(v *V, now time.Time) bool
	// keepLive refuses new keys at the cap rather than forget an entry
	// that is not idle: for counts that must never restart early.
	keepLive bool

	evictedIdle atomic.Uint64 // forgotten because idle
	evictedLive atomic.Uint64 // forgotten at the cap while not idle
}

type keyedShard[V any] struct {
	mu  sync.Mutex
	m   map[rateKey]*keyedEntry[V]
	lru keyedEntry[V] // sentinel: lru.next is the most recently used
}

type keyedEntry[V any] struct {
	key        rateKey
	prev, next *keyedEntry[V]
	// inUse marks an entry the operation holding the shard lock is
	// working on, so making room for its next key cannot evict it.
	inUse bool
	val   V
}

// keyedEvictScan is how many of a full shard's coldest entries are looked
// at for an idle one before the coldest is evicted regardless.
const keyedEvictScan = 8

func newKeyedStore[V any](maxKeys int, idle func(v *V, now time.Time) bool) *keyedStore[V] {
	// Enough shards to spread lock contention over cores, few enough that
	// each holds a meaningful share of the cap (an exact LRU for small
	// caps, as in tests).
	n := 1
	for n < 64 && maxKeys/(n*2) >= 1024 {
		n *= 2
	}
	s := &keyedStore[V]{
		shards:   make([]keyedShard[V], n),
		seed:     maphash.MakeSeed(),
		perShard: max(1, maxKeys/n),
		idle:     idle,
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.m = make(map[rateKey]*keyedEntry[V])
		sh.lru.next, sh.lru.prev = &sh.lru, &sh.lru
	}
	return s
}

func (s *keyedStore[V]) shardIndex(k rateKey) int {
	return int(maphash.Comparable(s.seed, k) & uint64(len(s.shards)-1))
}

// get returns k's entry, creating it with init when absent and create is
// set, and marks it most recently used. It returns nil when k is absent
// and create is not set, or when the store keeps live entries and is full.
// The caller holds sh.mu.
func (s *keyedStore[V]) get(sh *keyedShard[V], k rateKey, now time.Time, create bool, init func(*V)) *keyedEntry[V] {
	if e, ok := sh.m[k]; ok {
		if sh.lru.next != e { // a hot key is at the front already
			sh.unlink(e)
			sh.pushFront(e)
		}
		return e
	}
	if !create || !s.makeRoom(sh, now) {
		return nil
	}
	e := &keyedEntry[V]{key: k}
	if init != nil {
		init(&e.val)
	}
	sh.m[k] = e
	sh.pushFront(e)
	return e
}

// remove forgets k. The caller holds sh.mu.
func (s *keyedStore[V]) remove(sh *keyedShard[V], k rateKey) {
	if e, ok := sh.m[k]; ok {
		sh.drop(e)
	}
}

// makeRoom makes room in sh for one more entry, reporting false if it
// cannot (keepLive and nothing idle).
func (s *keyedStore[V]) makeRoom(sh *keyedShard[V], now time.Time) bool {
	// Forget a couple of idle entries from the cold end on every insert,
	// so memory follows the live key count without a janitor goroutine.
	for range 2 {
		e := sh.lru.prev
		if e == &sh.lru || e.inUse || !s.idle(&e.val, now) {
			break
		}
		sh.drop(e)
		s.evictedIdle.Add(1)
	}
	if len(sh.m) < s.perShard {
		return true
	}
	var coldest *keyedEntry[V]
	seen := 0
	for e := sh.lru.prev; e != &sh.lru && seen < keyedEvictScan; e = e.prev {
		if e.inUse {
			continue
		}
		seen++
		if s.idle(&e.val, now) {
			sh.drop(e)
			s.evictedIdle.Add(1)
			return true
		}
		if coldest == nil {
			coldest = e
		}
	}
	switch {
	case s.keepLive:
		return false
	case coldest != nil:
		sh.drop(coldest)
		s.evictedLive.Add(1)
	}
	// Otherwise every entry is in use by the caller (at most a handful):
	// the shard briefly holds that many more than its share.
	return true
}

// sweep forgets idle entries from the cold end of every shard, stopping
// in each at the first entry still in use, and reports how many it forgot.
func (s *keyedStore[V]) sweep(now time.Time) int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for e := sh.lru.prev; e != &sh.lru && !e.inUse && s.idle(&e.val, now); e = sh.lru.prev {
			sh.drop(e)
			n++
		}
		sh.mu.Unlock()
	}
	s.evictedIdle.Add(uint64(n))
	return n
}

// len counts the entries remembered now.
func (s *keyedStore[V]) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

func (sh *keyedShard[V]) pushFront(e *keyedEntry[V]) {
	e.prev, e.next = &sh.lru, sh.lru.next
	sh.lru.next.prev = e
	sh.lru.next = e
}

func (sh *keyedShard[V]) unlink(e *keyedEntry[V]) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (sh *keyedShard[V]) drop(e *keyedEntry[V]) {
	sh.unlink(e)
	e.prev, e.next = nil, nil
	delete(sh.m, e.key)
}

// shardSet is the distinct shards one operation has locked, in order.
type shardSet struct {
	idx [maxRateSubjects]int
	n   int
}

// lockShards locks the distinct shards of keys in index order, so that two
// operations over overlapping shards cannot deadlock, and stores the shard
// of each key in shards.
func (s *keyedStore[V]) lockShards(keys []rateKey, shards []*keyedShard[V]) shardSet {
	var set shardSet
	for i, k := range keys {
		j := s.shardIndex(k)
		shards[i] = &s.shards[j]
		if !slices.Contains(set.idx[:set.n], j) {
			set.idx[set.n] = j
			set.n++
		}
	}
	slices.Sort(set.idx[:set.n])
	for _, j := range set.idx[:set.n] {
		s.shards[j].mu.Lock()
	}
	return set
}

func (s *keyedStore[V]) unlockShards(set shardSet) {
	for _, j := range set.idx[:set.n] {
		s.shards[j].mu.Unlock()
	}
}

// tokenBucket is one token bucket, with the arithmetic of
// golang.org/x/time/rate's Limiter (refill at limit per second, capped at
// burst) but without its mutex: every bucket lives in a keyedStore shard
// and is only touched under that shard's lock, so a second lock per call
// would be pure cost on every request.
type tokenBucket struct {
	limit  float64 // cost units per second
	burst  int
	tokens float64 // as of last
	last   time.Time
}

// newRateBucket makes b a full bucket for p at now.
func newRateBucket(b *tokenBucket, p Policy, now time.Time) {
	*b = tokenBucket{limit: p.limit(), burst: p.Quota, tokens: float64(p.Quota), last: now}
}

// tokensAt is how many units b holds at now (a time before b's last
// change counts as no time passed, as rate.Limiter does).
func (b *tokenBucket) tokensAt(now time.Time) float64 {
	last := b.last
	if now.Before(last) {
		last = now
	}
	t := b.tokens + now.Sub(last).Seconds()*b.limit
	return min(t, float64(b.burst))
}

// take spends n units at now; the caller checked that b holds them.
func (b *tokenBucket) take(now time.Time, n float64) {
	b.tokens, b.last = b.tokensAt(now)-n, now
}

// resize adopts p at now, keeping the units b holds.
func (b *tokenBucket) resize(p Policy, now time.Time) {
	b.tokens, b.last = b.tokensAt(now), now
	b.limit, b.burst = p.limit(), p.Quota
}

// rateBucketIdle reports that a bucket has refilled: forgetting it and
// starting a new full one later changes nothing.
func rateBucketIdle(b *tokenBucket, now time.Time) bool {
	return b.tokensAt(now) >= float64(b.burst)
}

// maxRateSubjects bounds the buckets one request is charged to (ip, anon
// or acct, key) and one sign-in attempt (pair, source, account).
const maxRateSubjects = 3

// rateSubject is one bucket a request is charged to.
type rateSubject struct {
	name   string // the policy's name in RateLimit headers
	key    rateKey
	policy Policy
}

// Identity is who a request is, beyond its client address, as far as
// the gateway knows when the limit applies. Ids are opaque (they are
// hashed before use) and must not be emails or secrets in the clear.
type Identity struct {
	Account string // account id; "" when signed out
	APIKey  string // API key id (never the secret); "" when none
	Plan    string // the account's plan; "" or unknown means the default plan
}

// Limiter applies Config: token buckets per client address,
// account and API key, kept in a bounded keyedStore.
type Limiter struct {
	cfg      Config
	now      func() time.Time
	clientIP *clientip.Resolver
	buckets  *keyedStore[tokenBucket]

	allowed atomic.Uint64
	refused atomic.Uint64
	// anonPolicy is the RateLimit-Policy value of a signed-out request.
	anonPolicy []byte
}

// New builds the limiter; now is the clock (time.Now outside
// tests).
func New(cfg Config, clientIP *clientip.Resolver, now func() time.Time) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clientIP == nil || now == nil {
		return nil, errors.New("gateway: rate limiter needs a client IP resolver and a clock")
	}
	l := &Limiter{
		cfg:      cfg,
		now:      now,
		clientIP: clientIP,
		buckets:  newKeyedStore(cfg.MaxKeys, rateBucketIdle),
	}
	// Every signed-out request's buckets have the same policies.
	l.anonPolicy = policyValue(l.appendSubjects(nil, netip.IPv4Unspecified(), Identity{}))
	return l, nil
}

// subjects lists the buckets a request from addr by who is charged to.
func (l *Limiter) subjects(addr netip.Addr, who Identity) []rateSubject {
	return l.appendSubjects(make([]rateSubject, 0, 3), addr, who)
}

// appendSubjects appends the subjects of a request to subs.
func (l *Limiter) appendSubjects(subs []rateSubject, addr netip.Addr, who Identity) []rateSubject {
	subs = append(subs, rateSubject{name: "ip", key: addrRateKey(rateNSIP, addr), policy: l.cfg.IP})
	if who.Account == "" && who.APIKey == "" {
		return append(subs, rateSubject{name: "anon", key: addrRateKey(rateNSAnon, addr), policy: l.cfg.Anonymous})
	}
	plan, ok := l.cfg.Plans[who.Plan]
	if !ok {
		plan = l.cfg.Plans[l.cfg.DefaultPlan]
	}
	if who.Account != "" {
		subs = append(subs, rateSubject{name: "acct", key: hashedRateKey(rateNSAccount, who.Account), policy: plan})
	}
	if who.APIKey != "" {
		subs = append(subs, rateSubject{name: "key", key: hashedRateKey(rateNSAPIKey, who.APIKey), policy: plan})
	}
	return subs
}

// rateState is one bucket after a decision, as the RateLimit headers
// advertise it.
type rateState struct {
	name      string
	quota     int   // q
	window    int64 // w, seconds
	remaining int64 // r: whole cost units left
	reset     int64 // t: seconds until the bucket is full again
}

// rateDecision is the outcome of charging a request to its buckets.
type rateDecision struct {
	allowed    bool
	retryAfter int64  // whole seconds ≥ 1 when refused
	refusedBy  string // the name of a bucket that refused
	// states are the buckets' states, states[:n] set: an array, so a
	// decision costs no allocation.
	states [maxRateSubjects]rateState
	n      int
}

// take charges cost to every subject's bucket, or to none: a request one
// bucket refuses costs the others nothing, so a refused client is not
// drained further by its own retries.
func (l *Limiter) take(subs []rateSubject, cost int) rateDecision {
	return l.takeAt(subs, cost, l.now())
}

// takeAt is take at now.
func (l *Limiter) takeAt(subs []rateSubject, cost int, now time.Time) rateDecision {
	if l.cfg.Disabled {
		return rateDecision{allowed: true}
	}
	d := chargeBuckets(l.buckets, now, subs, cost)
	if d.allowed {
		l.allowed.Add(1)
	} else {
		l.refused.Add(1)
	}
	return d
}

// chargeBuckets charges cost to every subject's bucket in store at now, or
// to none, and reports each bucket's state afterwards.
func chargeBuckets(store *keyedStore[tokenBucket], now time.Time, subs []rateSubject, cost int) rateDecision {
	d := rateDecision{allowed: true}
	if len(subs) == 0 {
		return d
	}
	if len(subs) > maxRateSubjects {
		panic("gateway: too many rate-limit subjects")
	}
	var keysArr [maxRateSubjects]rateKey
	var shardsArr [maxRateSubjects]*keyedShard[tokenBucket]
	var entriesArr [maxRateSubjects]*keyedEntry[tokenBucket]
	var costs, tokens [maxRateSubjects]float64
	keys, shards, entries := keysArr[:len(subs)], shardsArr[:len(subs)], entriesArr[:len(subs)]
	for i, s := range subs {
		keys[i] = s.key
	}
	locked := store.lockShards(keys, shards)
	var wait time.Duration
	for i, s := range subs {
		e := store.get(shards[i], s.key, now, true, func(b *tokenBucket) { newRateBucket(b, s.policy, now) })
		e.inUse = true
		entries[i] = e
		b := &e.val
		if b.burst != s.policy.Quota || b.limit != s.policy.limit() {
			// The account changed plan: keep its tokens, adopt the new size.
			b.resize(s.policy, now)
		}
		// A charge bigger than the whole bucket empties it rather than
		// being refused forever.
		costs[i] = float64(min(cost, s.policy.Quota))
		tokens[i] = b.tokensAt(now)
		if tokens := tokens[i]; tokens < costs[i] {
			if w := durationForTokens(costs[i]-tokens, s.policy); d.refusedBy == "" || w > wait {
				wait, d.refusedBy = w, s.name
			}
			d.allowed = false
		}
	}
	if !d.allowed {
		d.retryAfter = max(1, ceilSeconds(wait))
	}
	d.n = len(subs)
	for i, s := range subs {
		tokens := tokens[i]
		if d.allowed && cost > 0 {
			entries[i].val.take(now, costs[i]) // checked above, under the lock
			tokens -= costs[i]
		}
		st := rateState{
			name:      s.name,
			quota:     s.policy.Quota,
			window:    int64(s.policy.Window / time.Second),
			remaining: int64(math.Floor(max(tokens, 0))),
			reset:     ceilSeconds(durationForTokens(float64(s.policy.Quota)-tokens, s.policy)),
		}
		if !d.allowed {
			// Retry-After must not point before the end of any effective
			// window (draft-11 §6), so no window outlasts it.
			st.reset = min(st.reset, d.retryAfter)
		}
		d.states[i] = st
		entries[i].inUse = false
	}
	store.unlockShards(locked)
	return d
}

func durationForTokens(tokens float64, p Policy) time.Duration {
	if tokens <= 0 {
		return 0
	}
	return time.Duration(tokens / p.limit() * float64(time.Second))
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// sweep forgets every bucket that has refilled. Buckets are also forgotten
// as new keys arrive; this returns memory after a burst of traffic ends.
func (l *Limiter) Sweep() int { return l.buckets.sweep(l.now()) }

// Stats are the limiter's counters, for /metrics.
type Stats struct {
	Keys        int    // buckets remembered now
	Allowed     uint64 // charges allowed
	Refused     uint64 // charges refused
	EvictedIdle uint64 // full buckets forgotten (no effect on limits)
	EvictedLive uint64 // buckets forgotten at the cap while not full
}

func (l *Limiter) Stats() Stats {
	return Stats{
		Keys:        l.buckets.len(),
		Allowed:     l.allowed.Load(),
		Refused:     l.refused.Load(),
		EvictedIdle: l.buckets.evictedIdle.Load(),
		EvictedLive: l.buckets.evictedLive.Load(),
	}
}

// The headers follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026):
// both fields are Structured Field Lists of String items with Integer
// parameters, one item per bucket the request was charged to:
//
//	RateLimit-Policy: "ip";q=600;w=60, "anon";q=120;w=60
//	RateLimit: "ip";r=596;t=1, "anon";r=116;t=2
//
// q and r count cost units (Costs), not requests. t is the time until
// the bucket is full again: the token-bucket analogue of a window reset
// (the draft leaves the algorithm open, §1.1). No pk parameter is sent, so
// no client address or account id is echoed back.
const (
	headerRateLimitPolicy = "RateLimit-Policy"
	headerRateLimit       = "RateLimit"
)

func (d *rateDecision) setHeaders(c *fiber.Ctx) { d.writeHeaders(&c.Response().Header, nil) }

// writeHeaders sets the RateLimit headers of d on h. policyValue, when
// not nil, is the RateLimit-Policy value of d's buckets, formatted before
// (it depends on their names and policies only).
func (d *rateDecision) writeHeaders(h *fasthttp.ResponseHeader, policyValue []byte) {
	if d.n == 0 {
		return
	}
	// Room for every bucket's item without growing: no allocation.
	var policyBuf, limitBuf [48 * maxRateSubjects]byte
	policy, limit := policyBuf[:0], limitBuf[:0]
	for i, s := range d.states[:d.n] {
		if i > 0 {
			policy = append(policy, ", "...)
			limit = append(limit, ", "...)
		}
		// Bucket names are identifiers in this file: quoting needs no
		// escapes (strconv.AppendQuote would write the same bytes).
		policy = append(append(append(policy, '"'), s.name...), '"')
		policy = append(policy, ";q="...)
		policy = strconv.AppendInt(policy, int64(s.quota), 10)
		policy = append(policy, ";w="...)
		policy = strconv.AppendInt(policy, s.window, 10)
		limit = append(append(append(limit, '"'), s.name...), '"')
		limit = append(limit, ";r="...)
		limit = strconv.AppendInt(limit, s.remaining, 10)
		limit = append(limit, ";t="...)
		limit = strconv.AppendInt(limit, s.reset, 10)
	}
	if policyValue != nil {
		policy = policyValue
	}
	h.SetCanonical(headerRateLimitPolicyBytes, policy)
	h.SetCanonical(headerRateLimitBytes, limit)
}

// policyValue is the RateLimit-Policy value of subs, as writeHeaders
// formats it.
func policyValue(subs []rateSubject) []byte {
	var d rateDecision
	d.n = len(subs)
	for i, s := range subs {
		d.states[i] = rateState{name: s.name, quota: s.policy.Quota, window: int64(s.policy.Window / time.Second)}
	}
	var h fasthttp.ResponseHeader
	d.writeHeaders(&h, nil)
	return bytes.Clone(h.PeekBytes(headerRateLimitPolicyBytes))
}

// The header names as bytes in fasthttp's normal form (what SetBytesV
// would turn them into), so setting them costs no normalisation.
var (
	headerRateLimitPolicyBytes = []byte("Ratelimit-Policy")
	headerRateLimitBytes       = []byte("Ratelimit")
)

// rateLimited is the 429 for a refused decision; the error handler adds
// Retry-After.
func rateLimited(d rateDecision) *apierror.Error {
	who := "this client address"
	switch d.refusedBy {
	case "acct":
		who = "this account"
	case "key":
		who = "this API key"
	}
	return &apierror.Error{
		Status:     fiber.StatusTooManyRequests,
		Type:       "rate_limit_error",
		Code:       "rate_limited",
		Msg:        fmt.Sprintf("too many requests from %s; retry in %d s", who, d.retryAfter),
		RetryAfter: int(d.retryAfter),
	}
}

// rateChargeLocal is the fiber.Ctx Locals key of a request's *Charge.
type rateChargeLocal struct{}

// Charge is a limited request's account with its buckets, for charges
// it learns of later. It holds no fiber.Ctx, so a handler may use it from
// the goroutine that calls the GPU. A nil *Charge (route not limited,
// or limits off) allows everything.
type Charge struct {
	l       *Limiter
	subs    []rateSubject // in subsArr
	subsArr [maxRateSubjects]rateSubject

	mu   sync.Mutex
	last rateDecision // what the response's headers will say
}

// ChargeOf returns the request's charge, or nil if the route is not
// limited.
func ChargeOf(c *fiber.Ctx) *Charge {
	ch, _ := c.Locals(rateChargeLocal{}).(*Charge)
	return ch
}

// extra charges cost more units to the request's buckets, all or none,
// and returns a 429 *apierror.Error when they cannot pay — call it before the
// work the cost stands for (the GPU call on a cache miss).
func (ch *Charge) Extra(cost int) error {
	if ch == nil || cost <= 0 {
		return nil
	}
	d := ch.l.take(ch.subs, cost)
	ch.mu.Lock()
	ch.last = d
	ch.mu.Unlock()
	if !d.allowed {
		return rateLimited(d)
	}
	return nil
}

// limit is the middleware for a route costing cost units. who names the
// account and API key behind the request, when known; nil means every
// request is anonymous. Allowed or refused, the response carries the
// RateLimit headers of every bucket charged, as they stand when it is
// sent (after any extra charge).
func (l *Limiter) Limit(cost int, who func(*fiber.Ctx) Identity) fiber.Handler {
	if l.cfg.Disabled {
		return func(c *fiber.Ctx) error { return c.Next() }
	}
	return func(c *fiber.Ctx) error {
		ch := handedOff(c, l, cost)
		if ch == nil {
			var id Identity
			if who != nil {
				id = who(c)
			}
			ch = &Charge{l: l}
			ch.subs = l.appendSubjects(ch.subsArr[:0], l.clientIP.Addr(c), id)
			ch.last = l.take(ch.subs, cost)
		}
		if !ch.last.allowed {
			ch.last.setHeaders(c)
			return rateLimited(ch.last)
		}
		c.Locals(rateChargeLocal{}, ch)
		err := c.Next()
		ch.mu.Lock()
		d := ch.last
		ch.mu.Unlock()
		d.setHeaders(c)
		return err
	}
}

// Taken is an anonymous request's charge made before Fiber sees the
// request, by a handler in front of the app (the gateway's hit path). It
// is a value, so a request served there allocates nothing for it; a
// request that goes on to the app after all carries it with HandOff, and
// Limit then uses it instead of charging again.
type Taken struct {
	l    *Limiter
	cost int
	subs [maxRateSubjects]rateSubject
	n    int
	d    rateDecision
}

// TakeAnonymousAt charges cost units at now (l's clock read by the
// caller) to the buckets of a signed-out request from addr, exactly as
// Limit with a nil identity would.
func (l *Limiter) TakeAnonymousAt(t *Taken, addr netip.Addr, cost int, now time.Time) {
	t.l, t.cost = l, cost
	t.n = len(l.appendSubjects(t.subs[:0], addr, Identity{}))
	t.d = l.takeAt(t.subs[:t.n], cost, now)
}

// Allowed reports whether every bucket paid.
func (t *Taken) Allowed() bool { return t.d.allowed }

// WriteHeaders sets the RateLimit and RateLimit-Policy headers Limit
// would set for this charge.
func (t *Taken) WriteHeaders(h *fasthttp.ResponseHeader) { t.d.writeHeaders(h, t.l.anonPolicy) }

// HandOff passes the charge on to the app: the route's Limit (of the
// same cost) takes it as the request's charge, allowed or refused, and
// charges nothing more.
func (t *Taken) HandOff(ctx *fasthttp.RequestCtx) {
	ch := &Charge{l: t.l, last: t.d}
	ch.subs = append(ch.subsArr[:0], t.subs[:t.n]...)
	ctx.SetUserValue(handOffLocal{}, &handOff{ch: ch, cost: t.cost})
}

// handOffLocal is the user-value key of a charge handed to the app.
type handOffLocal struct{}

type handOff struct {
	ch   *Charge
	cost int
}

// handedOff returns the charge handed to a Limit of l for cost, once.
func handedOff(c *fiber.Ctx, l *Limiter, cost int) *Charge {
	h, ok := c.Context().UserValue(handOffLocal{}).(*handOff)
	if !ok || h == nil || h.ch.l != l || h.cost != cost {
		return nil
	}
	c.Context().SetUserValue(handOffLocal{}, (*handOff)(nil))
	return h.ch
}
