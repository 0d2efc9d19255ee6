package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults for zero Config fields.
const (
	DefaultL1MaxBytes  = 256 << 20
	DefaultLoadTimeout = 2 * time.Minute
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("cache: closed")

// errInvalidObjectName reports an output name no output can have; it is a
// kind of "not found" so that callers serving untrusted paths answer 404.
var errInvalidObjectName = fmt.Errorf("cache: invalid object name: %w", fs.ErrNotExist)

// Config configures a Cache.
type Config struct {
	// Path is the L2 bbolt file. Required.
	Path string
	// L1MaxBytes bounds the memory tier; 0 means DefaultL1MaxBytes.
	L1MaxBytes int64
	// LoadTimeout bounds one shared load (object store lookups, the
	// Loader and the writes after it); 0 means DefaultLoadTimeout.
	LoadTimeout time.Duration
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("cache: Path is required"))
	}
	if c.L1MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("cache: L1MaxBytes %d is negative", c.L1MaxBytes))
	}
	if c.LoadTimeout < 0 {
		errs = append(errs, fmt.Errorf("cache: LoadTimeout %v is negative", c.LoadTimeout))
	}
	return errors.Join(errs...)
}

// ObjectStore is the global tier (L3) and the home of every output.
type ObjectStore interface {
	// Get returns the object's bytes, or an error satisfying
	// errors.Is(err, fs.ErrNotExist) when there is none.
	Get(ctx context.Context, name string) ([]byte, error)
	// Put stores data under name. Storing the same bytes again must
	// succeed.
	Put(ctx context.Context, name string, data []byte, contentType string) (created bool, err error)
}

// Generated is what a Loader made.
type Generated struct {
	// Data is the encoded image; Ext its lowercase extension ("png") and
	// ContentType its media type.
	Data        []byte
	ContentType string
	Ext         string
	Width       int
	Height      int
	Seed        uint64
	// Model and ModelVersion are what actually ran.
	Model, ModelVersion string
	// Policy is the version of the content policy the image was judged
	// under (see Entry.Policy).
	Policy uint64
}

// Loader produces the image for a key on a miss. It runs once for all the
// concurrent Gets of one key, under a context that none of their callers can
// cancel (only Config.LoadTimeout ends it), so it must not capture anything
// of one caller's that ends with that caller's request. Its error goes to
// every waiting caller and is not cached.
type Loader func(ctx context.Context) (Generated, error)

// Entry is what a key resolves to: an output in the object store and what
// is known about it. Object is the output's lowercase hex SHA-256; the
// output's name is "o/<Object>.<Ext>".
type Entry struct {
	Object, Ext, ContentType string
	Width, Height            int
	Seed                     uint64
	Model, ModelVersion      string
	// Size is the output's length in bytes.
	Size int64
	// Created is when the output was first made, in UTC.
	Created time.Time
	// Policy is the version of the content policy (moderation rule set)
	// the output was last judged under; 0 means before versions were
	// recorded. A caller serving a hit compares it with its own version
	// and judges the output again when they differ (see Rejudged).
	Policy uint64
}

// Tier names where a Get's answer came from. Tiers are ordered: a larger
// Tier is further from the caller.
type Tier uint8

// The tiers, nearest first. The zero Tier is none of them.
const (
	TierL1   Tier = iota + 1 // memory
	TierL2                   // this node's disk
	TierL3                   // the object store, shared by every node
	TierMiss                 // nothing had it: a Loader ran (or was joined)
)

// String returns "l1", "l2", "l3" or "miss", as used in Cache-Status
// details and metric labels.
func (t Tier) String() string {
	switch t {
	case TierL1:
		return "l1"
	case TierL2:
		return "l2"
	case TierL3:
		return "l3"
	case TierMiss:
		return "miss"
	}
	return fmt.Sprintf("tier(%d)", uint8(t))
}

// Outcome describes how a Get was answered.
type Outcome struct {
	Tier Tier
	// Collapsed is true when this Get joined work (a lookup or a load)
	// another Get had started, rather than starting it.
	Collapsed bool
	// Stored is true for the one Get whose load wrote the output and its
	// manifest; Gets that joined that load report Collapsed instead.
	Stored bool
}

// Cache resolves keys through the tiers L1 (memory), L2 (bbolt) and L3 (the
// object store), and coalesces concurrent misses of one key into one load.
// It is safe for concurrent use; see the package documentation for Close.
type Cache struct {
	cfg     Config
	objects ObjectStore
	logger  *slog.Logger
	l1      *l1
	l2      *l2
	now     func() time.Time

	// lookups coalesces misses (L3 lookup, then load); loads coalesces the
	// loads of misses and refreshes alike; fetches coalesces Object reads.
	lookups, loads, fetches singleflight.Group
	tokens                  atomic.Uint64
	stats                   counters

	// running counts shared work in flight, for Drain.
	running drainer

	// mu orders writes to the local tiers (some from work that outlives
	// its callers) before Close, which must not race with ristretto Sets.
	mu     sync.RWMutex
	closed atomic.Bool

	// onJoin, when set by tests, is called each time a Get has joined or
	// started a shared lookup or load.
	onJoin func()
}

// New opens the L2 file at cfg.Path (creating it if needed) and returns a
// Cache over it and objects. A nil logger discards logs.
func New(cfg Config, objects ObjectStore, logger *slog.Logger) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if objects == nil {
		return nil, errors.New("cache: an ObjectStore is required")
	}
	if cfg.L1MaxBytes == 0 {
		cfg.L1MaxBytes = DefaultL1MaxBytes
	}
	if cfg.LoadTimeout == 0 {
		cfg.LoadTimeout = DefaultLoadTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mem, err := newL1(cfg.L1MaxBytes)
	if err != nil {
		return nil, err
	}
	disk, err := openL2(cfg.Path)
	if err != nil {
		mem.close()
		return nil, err
	}
	return &Cache{
		cfg: cfg, objects: objects, logger: logger.With("component", "cache"),
		l1: mem, l2: disk, now: time.Now,
	}, nil
}

// Drain waits until no shared lookup or load is running (loads outlive the
// callers that gave up on them), or ctx ends. Call it on shutdown, after
// the last request, so that no generation is lost half-stored.
func (c *Cache) Drain(ctx context.Context) error { return c.running.wait(ctx) }

// Close releases the L2 file and the memory tier. Call it once nothing else
// calls the Cache, after Drain. Loads still running may finish afterwards:
// their objects are stored, their local writes skipped.
func (c *Cache) Close() error {
	c.mu.Lock()
	already := c.closed.Swap(true)
	c.mu.Unlock()
	if already {
		return nil
	}
	c.l1.close()
	return c.l2.close()
}

// flightResult is what one shared lookup or load hands to every caller.
type flightResult struct {
	entry  Entry
	tier   Tier
	stored bool
	// leader is the token of the Get whose call started the work; every
	// other Get holding this result was collapsed into it.
	leader uint64
}

// Get returns the entry for key. Unless refresh, it tries L1, L2 and L3 in
// turn; on a miss, or always with refresh, it calls load (once for all
// concurrent Gets of key, refreshes and misses alike) and stores the result
// in every tier. Each caller waits on its own ctx: giving up returns
// ctx.Err() and leaves the load running for the others.
//
// Tier read and write failures are counted (Stats.Errors) and served as
// misses, except that a load whose output cannot be stored fails.
func (c *Cache) Get(ctx context.Context, key Key, refresh bool, load Loader) (Entry, Outcome, error) {
	if c.closed.Load() {
		return Entry{}, Outcome{}, ErrClosed
	}
	if !refresh {
		if e, o, ok := c.Peek(key); ok {
			return e, o, nil
		}
	}
	if load == nil {
		c.stats.misses.Add(1)
		return Entry{}, Outcome{Tier: TierMiss}, errors.New("cache: miss and no loader")
	}
	return c.getShared(ctx, key, refresh, load)
}

// Peek answers from this node's own tiers (L1, then L2) without loading or
// waiting: callers that must do something before a miss (reserve credits)
// peek first and pay nothing on a hit. A hit is counted as Get counts it;
// a miss is not counted, because the Get that follows will be.
func (c *Cache) Peek(key Key) (Entry, Outcome, bool) {
	if c.closed.Load() {
		return Entry{}, Outcome{}, false
	}
	if e, ok := c.l1.entry(key); ok {
		c.stats.hitsL1.Add(1)
		return e, Outcome{Tier: TierL1}, true
	}
	if e, ok := c.fromL2(key); ok {
		c.remember(key, e, nil, false)
		c.stats.hitsL2.Add(1)
		return e, Outcome{Tier: TierL2}, true
	}
	return Entry{}, Outcome{}, false
}

// getShared is Get past the local tiers: it starts or joins the shared
// lookup (or, for a refresh, the shared load) and waits for it or for ctx.
// It is separate from Get so that the closures it builds do not move the
// key of every hit to the heap.
func (c *Cache) getShared(ctx context.Context, key Key, refresh bool, load Loader) (Entry, Outcome, error) {
	token := c.tokens.Add(1)
	flightKey := string(key[:])
	var ch <-chan singleflight.Result
	if refresh {
		ch = c.loads.DoChan(flightKey, c.flight(ctx, token, func(ctx context.Context) (*flightResult, error) {
			return c.load(ctx, key, load, token)
		}))
	} else {
		ch = c.lookups.DoChan(flightKey, c.flight(ctx, token, func(ctx context.Context) (*flightResult, error) {
			return c.lookup(ctx, key, load, token)
		}))
	}
	if c.onJoin != nil {
		c.onJoin()
	}

	select {
	case res := <-ch:
		fr := res.Val.(*flightResult)
		collapsed := fr.leader != token
		if collapsed {
			c.stats.coalesced.Add(1)
		}
		if res.Err != nil {
			c.stats.misses.Add(1)
			return Entry{}, Outcome{Tier: TierMiss, Collapsed: collapsed}, res.Err
		}
		c.stats.tier(fr.tier)
		return fr.entry, Outcome{Tier: fr.tier, Collapsed: collapsed, Stored: fr.stored && !collapsed}, nil
	case <-ctx.Done():
		c.stats.misses.Add(1)
		return Entry{}, Outcome{Tier: TierMiss}, ctx.Err()
	}
}

// flight wraps shared work for singleflight: it runs under a context that
// keeps ctx's values but not its cancellation, bounded by LoadTimeout, and
// turns a panic into an error for every waiter instead of a crash.
func (c *Cache) flight(ctx context.Context, token uint64, work func(context.Context) (*flightResult, error)) func() (any, error) {
	return func() (v any, err error) {
		c.running.add()
		defer c.running.done()
		defer func() {
			if p := recover(); p != nil {
				c.logger.Error("panic in shared cache work", "panic", p, "stack", string(debug.Stack()))
				v, err = &flightResult{leader: token}, fmt.Errorf("cache: panic in shared work: %v", p)
			}
		}()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LoadTimeout)
		defer cancel()
		r, err := work(wctx)
		if r == nil {
			r = &flightResult{leader: token}
		}
		return r, err
	}
}

// lookup is the shared part of a miss: L2 again, then L3, then a load.
func (c *Cache) lookup(ctx context.Context, key Key, load Loader, token uint64) (*flightResult, error) {
	// A lookup that finished between this caller's L2 miss and the start
	// of this one has filled L2; looking again saves a second load.
	if e, ok := c.fromL2(key); ok {
		c.remember(key, e, nil, false)
		return &flightResult{entry: e, tier: TierL2, leader: token}, nil
	}
	if e, data, ok := c.fromL3(ctx, key); ok {
		c.remember(key, e, data, true)
		return &flightResult{entry: e, tier: TierL3, leader: token}, nil
	}
	// Join a refresh's load if one is running, so a key never has two.
	v, err, _ := c.loads.Do(string(key[:]), c.flight(ctx, token, func(ctx context.Context) (*flightResult, error) {
		return c.load(ctx, key, load, token)
	}))
	return v.(*flightResult), err
}

// load runs the loader and stores its output: the object, then the
// manifest, then the local tiers.
func (c *Cache) load(ctx context.Context, key Key, load Loader, token uint64) (*flightResult, error) {
	c.stats.loads.Add(1)
	g, err := callLoader(ctx, load)
	if err != nil {
		c.stats.loadErrors.Add(1)
		return nil, err
	}
	hash := hashHex(g.Data)
	if len(g.Data) == 0 || g.ContentType == "" || !validObjectName(hash, g.Ext) {
		c.stats.loadErrors.Add(1)
		return nil, fmt.Errorf("cache: loader returned an unusable result (%d bytes, ext %q, content type %q)",
			len(g.Data), g.Ext, g.ContentType)
	}
	if _, err := c.objects.Put(ctx, outputName(hash, g.Ext), g.Data, g.ContentType); err != nil {
		c.stats.errors.Add(1)
		return nil, fmt.Errorf("cache: store output: %w", err)
	}
	e := Entry{
		Object: hash, Ext: g.Ext, ContentType: g.ContentType,
		Width: g.Width, Height: g.Height, Seed: g.Seed,
		Model: g.Model, ModelVersion: g.ModelVersion,
		Size: int64(len(g.Data)), Created: c.now().UTC().Round(0), Policy: g.Policy,
	}
	// Without the manifest other nodes cannot find this output, but the
	// image is made and stored: serve it rather than fail the request.
	if m, err := encodeManifest(key, e); err != nil {
		c.stats.errors.Add(1)
		c.logger.Warn("cannot encode manifest", "err", err)
	} else if _, err := c.objects.Put(ctx, manifestName(key), m, "application/json"); err != nil {
		c.stats.errors.Add(1)
		c.logger.Warn("cannot store manifest", "object", hash, "err", err)
	}
	c.remember(key, e, g.Data, true)
	return &flightResult{entry: e, tier: TierMiss, stored: true, leader: token}, nil
}

// callLoader calls load, turning a panic into an error.
func callLoader(ctx context.Context, load Loader) (g Generated, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cache: loader panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return load(ctx)
}

// fromL2 reads key from L2. Read failures and corrupt records count as
// errors and are served as misses.
func (c *Cache) fromL2(key Key) (Entry, bool) {
	if c.closed.Load() {
		return Entry{}, false
	}
	e, found, err := c.l2.get(key)
	if err != nil {
		c.stats.errors.Add(1)
		c.logger.Warn("l2 read failed; serving as a miss", "err", err)
		return Entry{}, false
	}
	return e, found
}

// fromL3 reads key's manifest and checks that its output exists and is
// intact, returning the output's bytes too. A manifest whose output has
// gone (deleted, expired) is a miss.
func (c *Cache) fromL3(ctx context.Context, key Key) (Entry, []byte, bool) {
	m, err := c.objects.Get(ctx, manifestName(key))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.stats.errors.Add(1)
			c.logger.Warn("manifest read failed; serving as a miss", "err", err)
		}
		return Entry{}, nil, false
	}
	e, err := decodeManifest(key, m)
	if err != nil {
		c.stats.errors.Add(1)
		c.logger.Warn("bad manifest; serving as a miss", "err", err)
		return Entry{}, nil, false
	}
	data, err := c.objects.Get(ctx, outputName(e.Object, e.Ext))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.stats.errors.Add(1)
			c.logger.Warn("output read failed; serving as a miss", "object", e.Object, "err", err)
		}
		return Entry{}, nil, false
	}
	if int64(len(data)) != e.Size || hashHex(data) != e.Object {
		c.stats.errors.Add(1)
		c.logger.Warn("output does not match its manifest; serving as a miss", "object", e.Object)
		return Entry{}, nil, false
	}
	return e, data, true
}

// remember writes e (and the output's bytes, if given) to L1, and to L2
// when toL2. Failures are counted, not returned: these tiers are caches.
// After an expensive path (a load, an L3 hit) it waits for L1 to apply the
// writes so that the next Get is an L1 hit.
func (c *Cache) remember(key Key, e Entry, data []byte, toL2 bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return
	}
	if toL2 {
		if err := c.l2.put(key, e); err != nil {
			c.stats.errors.Add(1)
			c.logger.Warn("l2 write failed", "err", err)
		}
	}
	c.l1.setEntry(key, e)
	if data != nil {
		c.l1.setObject(e.Object, e.Ext, data, e.Model, e.ModelVersion)
	}
	if toL2 {
		c.l1.wait()
	}
}

// Object returns the output named "o/<hash>.<ext>" from L1 or the object
// store, keeping it in L1. A missing (or impossible) output is an error
// satisfying errors.Is(err, fs.ErrNotExist). The returned bytes are shared
// with the cache and must not be modified.
func (c *Cache) Object(ctx context.Context, hash, ext string) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if !validObjectName(hash, ext) {
		return nil, errInvalidObjectName
	}
	if data, ok := c.l1.object(hash, ext); ok {
		return data, nil
	}
	name := outputName(hash, ext)
	ch := c.fetches.DoChan(name, func() (v any, err error) {
		defer func() {
			if p := recover(); p != nil {
				c.logger.Error("panic reading an output", "panic", p, "stack", string(debug.Stack()))
				v, err = nil, fmt.Errorf("cache: panic reading %s: %v", name, p)
			}
		}()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LoadTimeout)
		defer cancel()
		data, err := c.objects.Get(fctx, name)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.stats.errors.Add(1)
			}
			return nil, fmt.Errorf("cache: get %s: %w", name, err)
		}
		c.mu.RLock()
		if !c.closed.Load() {
			model, version, _ := c.l2.objectModel(hash)
			c.l1.setObject(hash, ext, data, model, version)
		}
		c.mu.RUnlock()
		return data, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]byte), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ObjectModel returns the model and version that made an output, as far as
// this node knows (from L1, else from an L2 entry pointing at it), for the
// object's cache tags. ok is false when no local entry names the output.
func (c *Cache) ObjectModel(hash string) (model, version string, ok bool) {
	if model, version, ok = c.l1.objectModel(hash); ok {
		return model, version, true
	}
	if c.closed.Load() {
		return "", "", false
	}
	model, version, ok = c.l2.objectModel(hash)
	return model, version, ok
}

// Invalidate removes key from this node's tiers (L1 and L2). The manifest
// in the object store is shared by every node and stays: a later Get may
// find it again unless its output is gone. To remove a result everywhere,
// delete its output from the object store and call InvalidateObject on
// every node.
func (c *Cache) Invalidate(key Key) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return ErrClosed
	}
	c.l1.delEntry(key)
	if err := c.l2.delete(key); err != nil {
		return fmt.Errorf("cache: invalidate: %w", err)
	}
	return nil
}

// Rejudged records that key's output was judged again and passed under
// content policy version policy, in this node's tiers (L1 and L2), so its
// next hits need no judging. Other nodes judge it for themselves.
func (c *Cache) Rejudged(key Key, policy uint64) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return ErrClosed
	}
	e, ok := c.l1.entry(key)
	if !ok {
		var err error
		if e, ok, err = c.l2.get(key); err != nil || !ok {
			return err
		}
	}
	e.Policy = policy
	c.l1.setEntry(key, e)
	if err := c.l2.put(key, e); err != nil {
		return fmt.Errorf("cache: rejudged: %w", err)
	}
	return nil
}

// ObjectKeys returns the keys of this node's L2 entries that point at the
// output hash: the names (ManifestName) of the L3 manifests a purge of the
// output must delete, so nothing about it remains in the object store.
// Call it before InvalidateObject, which forgets them.
func (c *Cache) ObjectKeys(hash string) ([]Key, error) {
	if !isLowerHex(hash) || len(hash) != 64 {
		return nil, errInvalidObjectName
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	keys, err := c.l2.objectKeys(hash)
	if err != nil {
		return nil, fmt.Errorf("cache: object keys: %w", err)
	}
	return keys, nil
}

// InvalidateObject removes an output's bytes from L1 and every entry
// pointing at it from L1 and L2, so this node stops answering with it.
// Manifests naming it stay in the object store (a purge deletes them:
// see ObjectKeys); once the output itself is deleted there, they are
// misses.
func (c *Cache) InvalidateObject(hash string) error {
	if !isLowerHex(hash) || len(hash) != 64 {
		return errInvalidObjectName
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return ErrClosed
	}
	keys, err := c.l2.deleteObject(hash)
	for _, k := range keys {
		c.l1.delEntry(k)
	}
	// Entries can be in L1 without an L2 record (an L2 write failed), so
	// L1 is searched too.
	c.l1.dropObject(hash)
	if err != nil {
		return fmt.Errorf("cache: invalidate object: %w", err)
	}
	return nil
}

// drainer counts work in flight and tells when there is none.
type drainer struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (d *drainer) add() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == 0 {
		d.idle = make(chan struct{})
	}
	d.n++
}

func (d *drainer) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n--; d.n == 0 {
		close(d.idle)
	}
}

func (d *drainer) wait(ctx context.Context) error {
	d.mu.Lock()
	if d.n == 0 {
		d.mu.Unlock()
		return nil
	}
	idle := d.idle
	d.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
