package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

// memStore is an in-memory ObjectStore. (The real local-directory store
// lives in package edge, which this package must not import.)
type memStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	gets    map[string]int
	// failPut, when set, fails Puts of the names it returns an error for.
	failPut func(name string) error
	// failGet, when set, fails Gets of the names it returns an error for.
	failGet func(name string) error
}

func newMemStore() *memStore {
	return &memStore{objects: map[string][]byte{}, gets: map[string]int{}}
}

func (s *memStore) Get(ctx context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets[name]++
	if s.failGet != nil {
		if err := s.failGet(name); err != nil {
			return nil, err
		}
	}
	data, ok := s.objects[name]
	if !ok {
		return nil, fmt.Errorf("memstore: %s: %w", name, fs.ErrNotExist)
	}
	return bytes.Clone(data), nil
}

func (s *memStore) Put(ctx context.Context, name string, data []byte, contentType string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failPut != nil {
		if err := s.failPut(name); err != nil {
			return false, err
		}
	}
	_, exists := s.objects[name]
	s.objects[name] = bytes.Clone(data)
	return !exists, nil
}

func (s *memStore) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.objects[name]
	return ok
}

func (s *memStore) del(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, name)
}

func (s *memStore) set(name string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[name] = data
}

func (s *memStore) getCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[name]
}

func newTestCache(t testing.TB, path string, store ObjectStore, cfg Config) *Cache {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "cache.db")
	}
	cfg.Path = path
	c, err := New(cfg, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func generated(data string) Generated {
	return Generated{
		Data: []byte(data), ContentType: "image/png", Ext: "png",
		Width: 256, Height: 256, Seed: 7, Model: "retro", ModelVersion: "1",
	}
}

// countingLoader returns data and counts its calls.
func countingLoader(data string, calls *atomic.Int32) Loader {
	return func(ctx context.Context) (Generated, error) {
		calls.Add(1)
		return generated(data), nil
	}
}

// failLoader fails the test if the cache calls it.
func failLoader(t *testing.T) Loader {
	return func(ctx context.Context) (Generated, error) {
		t.Error("loader called; want a hit")
		return Generated{}, errors.New("unexpected load")
	}
}

func testKey(i int) Key {
	r := baseRequest()
	r.Seed = uint64(i)
	return r.Key()
}

func get(t *testing.T, c *Cache, key Key, refresh bool, load Loader) (Entry, Outcome) {
	t.Helper()
	e, o, err := c.Get(t.Context(), key, refresh, load)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return e, o
}

func TestTierOrderAndPromotion(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	c := newTestCache(t, "", store, Config{})
	now := time.Date(2026, 11, 22, 10, 0, 0, 123, time.UTC)
	c.now = func() time.Time { return now }
	key := testKey(1)
	var calls atomic.Int32

	e, o := get(t, c, key, false, countingLoader("image one", &calls))
	want := Entry{
		Object: hashHex([]byte("image one")), Ext: "png", ContentType: "image/png",
		Width: 256, Height: 256, Seed: 7, Model: "retro", ModelVersion: "1",
		Size: int64(len("image one")), Created: now,
	}
	if diff := cmp.Diff(want, e); diff != "" {
		t.Errorf("loaded entry (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Outcome{Tier: TierMiss, Stored: true}, o); diff != "" {
		t.Errorf("first outcome (-want +got):\n%s", diff)
	}
	if !store.has("o/"+want.Object+".png") || !store.has("k/"+key.String()+".json") {
		t.Fatalf("object or manifest not stored: %v", store.objects)
	}

	step := func(name string, wantTier Tier) {
		t.Helper()
		e, o := get(t, c, key, false, failLoader(t))
		if diff := cmp.Diff(want, e); diff != "" {
			t.Errorf("%s: entry (-want +got):\n%s", name, diff)
		}
		if diff := cmp.Diff(Outcome{Tier: wantTier}, o); diff != "" {
			t.Errorf("%s: outcome (-want +got):\n%s", name, diff)
		}
	}
	step("repeat", TierL1)

	c.l1.c.Clear()
	step("after L1 loss", TierL2)
	c.l1.wait()
	step("after L2 promotion", TierL1)

	c.l1.c.Clear()
	if err := c.l2.delete(key); err != nil {
		t.Fatal(err)
	}
	step("after L1 and L2 loss", TierL3)
	step("after L3 promotion", TierL1)
	if _, found, err := c.l2.get(key); err != nil || !found {
		t.Errorf("L3 hit not promoted to L2: found %v, err %v", found, err)
	}

	if calls.Load() != 1 {
		t.Errorf("loader calls = %d, want 1", calls.Load())
	}
	wantStats := Stats{HitsL1: 3, HitsL2: 1, HitsL3: 1, Misses: 1, Loads: 1}
	if diff := cmp.Diff(wantStats, c.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestTierString(t *testing.T) {
	t.Parallel()
	for tier, want := range map[Tier]string{TierL1: "l1", TierL2: "l2", TierL3: "l3", TierMiss: "miss", 0: "tier(0)"} {
		if got := tier.String(); got != want {
			t.Errorf("Tier(%d).String() = %q, want %q", uint8(tier), got, want)
		}
	}
	if !(TierL1 < TierL2 && TierL2 < TierL3 && TierL3 < TierMiss) {
		t.Error("tiers are not ordered nearest first")
	}
}

func TestRestartServesFromL2(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cache.db")
	key := testKey(2)
	var calls atomic.Int32

	c1, err := New(Config{Path: path}, newMemStore(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := c1.Get(t.Context(), key, false, countingLoader("persist me", &calls))
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}

	// An empty object store: only L2 can answer.
	empty := newMemStore()
	c2 := newTestCache(t, path, empty, Config{})
	e, o := get(t, c2, key, false, failLoader(t))
	if diff := cmp.Diff(want, e); diff != "" {
		t.Errorf("entry after restart (-want +got):\n%s", diff)
	}
	if o.Tier != TierL2 {
		t.Errorf("tier after restart = %v, want l2", o.Tier)
	}
	if len(empty.gets) != 0 {
		t.Errorf("an L2 hit read the object store: %v", empty.gets)
	}
}

func TestL3SharedAcrossNodes(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	a := newTestCache(t, "", store, Config{})
	b := newTestCache(t, "", store, Config{})
	key := testKey(3)
	var calls atomic.Int32

	want, _ := get(t, a, key, false, countingLoader("made on node a", &calls))
	e, o := get(t, b, key, false, failLoader(t))
	if diff := cmp.Diff(want, e); diff != "" {
		t.Errorf("node b entry (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Outcome{Tier: TierL3}, o); diff != "" {
		t.Errorf("node b outcome (-want +got):\n%s", diff)
	}
	if _, o := get(t, b, key, false, failLoader(t)); o.Tier != TierL1 {
		t.Errorf("node b repeat tier = %v, want l1", o.Tier)
	}
	// The L3 hit fetched the output to check it, and kept it.
	name := outputName(want.Object, want.Ext)
	before := store.getCount(name)
	data, err := b.Object(t.Context(), want.Object, want.Ext)
	if err != nil || string(data) != "made on node a" {
		t.Fatalf("Object on node b = %q, %v", data, err)
	}
	if store.getCount(name) != before {
		t.Errorf("Object after an L3 hit read the store again")
	}
	if calls.Load() != 1 {
		t.Errorf("loader calls = %d, want 1", calls.Load())
	}
}

func TestL3ManifestWithoutObjectIsAMiss(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(s *memStore, name string)
		errors uint64
	}{
		{"object deleted", func(s *memStore, name string) { s.del(name) }, 0},
		{"object altered", func(s *memStore, name string) { s.set(name, []byte("tampered")) }, 1},
		{"object unreadable", func(s *memStore, name string) {
			s.failGet = func(n string) error {
				if n == name {
					return errors.New("disk on fire")
				}
				return nil
			}
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := newMemStore()
			a := newTestCache(t, "", store, Config{})
			key := testKey(4)
			var calls atomic.Int32
			e, _ := get(t, a, key, false, countingLoader("original", &calls))
			name := outputName(e.Object, e.Ext)
			tc.damage(store, name)

			b := newTestCache(t, "", store, Config{})
			_, o := get(t, b, key, false, countingLoader("original", &calls))
			if o.Tier != TierMiss || calls.Load() != 2 {
				t.Errorf("tier %v, loader calls %d; want a miss and a second load", o.Tier, calls.Load())
			}
			if got := b.Stats().Errors; got != tc.errors {
				t.Errorf("Errors = %d, want %d", got, tc.errors)
			}
		})
	}
}

// joinCounter closes all once n Gets have joined shared work.
func joinCounter(c *Cache, n int32) (all <-chan struct{}) {
	ch := make(chan struct{})
	var joined atomic.Int32
	c.onJoin = func() {
		if joined.Add(1) == n {
			close(ch)
		}
	}
	return ch
}

func TestConcurrentMissesLoadOnce(t *testing.T) {
	t.Parallel()
	const n = 100
	c := newTestCache(t, "", newMemStore(), Config{})
	all := joinCounter(c, n)
	var calls atomic.Int32
	load := func(ctx context.Context) (Generated, error) {
		calls.Add(1)
		<-all // every caller is waiting on this load
		return generated("one hundred at once"), nil
	}
	key := testKey(5)
	entries := make([]Entry, n)
	outcomes := make([]Outcome, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			entries[i], outcomes[i], errs[i] = c.Get(t.Context(), key, false, load)
		})
	}
	wg.Wait()

	if calls.Load() != 1 {
		t.Fatalf("loader calls = %d, want 1", calls.Load())
	}
	collapsed, stored := 0, 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if diff := cmp.Diff(entries[0], entries[i]); diff != "" {
			t.Fatalf("Get %d entry differs (-first +this):\n%s", i, diff)
		}
		if outcomes[i].Tier != TierMiss {
			t.Errorf("Get %d tier = %v, want miss", i, outcomes[i].Tier)
		}
		if outcomes[i].Collapsed {
			collapsed++
		}
		if outcomes[i].Stored {
			stored++
			if outcomes[i].Collapsed {
				t.Errorf("Get %d is both the leader and collapsed", i)
			}
		}
	}
	if collapsed != n-1 || stored != 1 {
		t.Errorf("collapsed %d, stored %d; want %d and 1", collapsed, stored, n-1)
	}
	wantStats := Stats{Misses: n, Coalesced: n - 1, Loads: 1}
	if diff := cmp.Diff(wantStats, c.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// blockingLoader starts, reports it started, and waits for release; it
// records whether its context was cancelled.
type blockingLoader struct {
	started, release, done chan struct{}
	ctxErr                 error
	data                   string
}

func newBlockingLoader(data string) *blockingLoader {
	return &blockingLoader{started: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{}), data: data}
}

func (l *blockingLoader) load(ctx context.Context) (Generated, error) {
	close(l.started)
	<-l.release
	l.ctxErr = ctx.Err()
	close(l.done)
	return generated(l.data), nil
}

type getResult struct {
	e   Entry
	o   Outcome
	err error
}

func goGet(ctx context.Context, c *Cache, key Key, refresh bool, load Loader) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		e, o, err := c.Get(ctx, key, refresh, load)
		ch <- getResult{e, o, err}
	}()
	return ch
}

func TestLeaderHangingUpDoesNotCancelLoad(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	all := joinCounter(c, 2)
	l := newBlockingLoader("shared")
	key := testKey(6)

	leaderCtx, hangUp := context.WithCancel(t.Context())
	leader := goGet(leaderCtx, c, key, false, l.load)
	<-l.started
	waiter := goGet(t.Context(), c, key, false, l.load)
	<-all

	hangUp()
	if r := <-leader; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("leader error = %v, want context.Canceled", r.err)
	}
	close(l.release)
	r := <-waiter
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	if l.ctxErr != nil {
		t.Errorf("the load's context was cancelled: %v", l.ctxErr)
	}
	if r.e.Object != hashHex([]byte("shared")) || !r.o.Collapsed || r.o.Tier != TierMiss {
		t.Errorf("waiter got %+v %+v", r.e, r.o)
	}
	// The load stored its result though its leader left.
	if _, o := get(t, c, key, false, failLoader(t)); o.Tier != TierL1 {
		t.Errorf("after the load, tier = %v, want l1", o.Tier)
	}
}

func TestWaiterGivesUpAlone(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	all := joinCounter(c, 2)
	l := newBlockingLoader("patience")
	key := testKey(7)

	leader := goGet(t.Context(), c, key, false, l.load)
	<-l.started
	waiterCtx, giveUp := context.WithCancel(t.Context())
	waiter := goGet(waiterCtx, c, key, false, l.load)
	<-all

	giveUp()
	if r := <-waiter; !errors.Is(r.err, context.Canceled) || r.o.Tier != TierMiss {
		t.Fatalf("waiter = %+v, want context.Canceled", r)
	}
	select {
	case <-l.done:
		t.Fatal("the load finished before it was released")
	default:
	}
	close(l.release)
	r := <-leader
	if r.err != nil || r.o.Collapsed || !r.o.Stored {
		t.Fatalf("leader = %+v", r)
	}
	if l.ctxErr != nil {
		t.Errorf("the load's context was cancelled: %v", l.ctxErr)
	}
	if s := c.Stats(); s.Loads != 1 || s.Misses != 2 {
		t.Errorf("stats %+v, want 1 load and 2 misses", s)
	}
}

func TestLoadTimeout(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{LoadTimeout: time.Millisecond})
	load := func(ctx context.Context) (Generated, error) {
		<-ctx.Done() // a backend that honours its context
		return Generated{}, ctx.Err()
	}
	_, _, err := c.Get(t.Context(), testKey(8), false, load)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want the load's deadline", err)
	}
}

func TestLoaderErrorNotCached(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	c := newTestCache(t, "", store, Config{})
	key := testKey(9)
	errBoom := errors.New("gpu on fire")

	const n = 5
	all := joinCounter(c, n)
	var calls atomic.Int32
	failing := func(ctx context.Context) (Generated, error) {
		calls.Add(1)
		<-all
		return Generated{}, errBoom
	}
	var wg sync.WaitGroup
	var collapsed atomic.Int32
	for range n {
		wg.Go(func() {
			_, o, err := c.Get(t.Context(), key, false, failing)
			if !errors.Is(err, errBoom) {
				t.Errorf("error = %v, want the loader's", err)
			}
			if o.Collapsed {
				collapsed.Add(1)
			}
		})
	}
	wg.Wait()
	if calls.Load() != 1 || collapsed.Load() != n-1 {
		t.Errorf("loader calls %d, collapsed %d; want 1 and %d", calls.Load(), collapsed.Load(), n-1)
	}
	if _, found, _ := c.l2.get(key); found || len(store.objects) != 0 {
		t.Fatalf("a failed load left state: L2 %v, objects %d", found, len(store.objects))
	}

	c.onJoin = nil
	_, o := get(t, c, key, false, countingLoader("second try", &calls))
	if o.Tier != TierMiss || calls.Load() != 2 {
		t.Errorf("after an error: tier %v, calls %d; want a fresh load", o.Tier, calls.Load())
	}
	if s := c.Stats(); s.Loads != 2 || s.LoadErrors != 1 || s.Errors != 0 {
		t.Errorf("stats %+v, want 2 loads, 1 load error", s)
	}
}

func TestLoaderPanicBecomesError(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	_, _, err := c.Get(t.Context(), testKey(10), false, func(ctx context.Context) (Generated, error) {
		panic("backend bug")
	})
	if err == nil || !strings.Contains(err.Error(), "backend bug") {
		t.Errorf("error = %v, want the panic", err)
	}
	if s := c.Stats(); s.LoadErrors != 1 {
		t.Errorf("LoadErrors = %d, want 1", s.LoadErrors)
	}
}

func TestUnusableLoadIsAnError(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	for _, g := range []Generated{
		{},
		{Data: []byte("x"), ContentType: "image/png", Ext: "../png"},
		{Data: []byte("x"), ContentType: "image/png", Ext: "PNG"},
		{Data: []byte("x"), Ext: "png"},
	} {
		_, _, err := c.Get(t.Context(), testKey(11), false, func(ctx context.Context) (Generated, error) { return g, nil })
		if err == nil {
			t.Errorf("Get accepted %+v", g)
		}
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	key := testKey(12)
	var calls atomic.Int32
	old, _ := get(t, c, key, false, countingLoader("old bytes", &calls))

	e, o := get(t, c, key, true, countingLoader("new bytes", &calls))
	if diff := cmp.Diff(Outcome{Tier: TierMiss, Stored: true}, o); diff != "" {
		t.Errorf("refresh outcome (-want +got):\n%s", diff)
	}
	if e.Object != hashHex([]byte("new bytes")) || calls.Load() != 2 {
		t.Fatalf("refresh did not reload: %s, %d calls", e.Object, calls.Load())
	}
	if got, o := get(t, c, key, false, failLoader(t)); o.Tier != TierL1 || got.Object != e.Object {
		t.Errorf("after refresh: tier %v object %s, want the new object from l1", o.Tier, got.Object)
	}
	if got, _, _ := c.l2.get(key); got.Object != e.Object {
		t.Errorf("L2 still holds %s", got.Object)
	}
	// The old object's index row went with the old record.
	if keys, err := c.l2.deleteObject(old.Object); err != nil || len(keys) != 0 {
		t.Errorf("deleting the old object removed %v (%v), want nothing", keys, err)
	}
	if _, found, _ := c.l2.get(key); !found {
		t.Error("deleting the old object removed the refreshed record")
	}
}

func TestRefreshCoalesces(t *testing.T) {
	t.Parallel()
	t.Run("with refreshes", func(t *testing.T) {
		t.Parallel()
		c := newTestCache(t, "", newMemStore(), Config{})
		all := joinCounter(c, 3)
		var calls atomic.Int32
		load := func(ctx context.Context) (Generated, error) {
			calls.Add(1)
			<-all
			return generated("fresh"), nil
		}
		key := testKey(13)
		var rs []<-chan getResult
		for range 3 {
			rs = append(rs, goGet(t.Context(), c, key, true, load))
		}
		collapsed := 0
		for _, ch := range rs {
			r := <-ch
			if r.err != nil || r.o.Tier != TierMiss {
				t.Fatalf("refresh: %+v", r)
			}
			if r.o.Collapsed {
				collapsed++
			}
		}
		if calls.Load() != 1 || collapsed != 2 {
			t.Errorf("loads %d, collapsed %d; want 1 and 2", calls.Load(), collapsed)
		}
	})
	t.Run("with a miss in flight", func(t *testing.T) {
		t.Parallel()
		c := newTestCache(t, "", newMemStore(), Config{})
		all := joinCounter(c, 2)
		l := newBlockingLoader("fresh")
		key := testKey(14)
		miss := goGet(t.Context(), c, key, false, l.load)
		<-l.started // the miss is past the tiers and loading
		refresh := goGet(t.Context(), c, key, true, failLoader(t))
		<-all
		close(l.release)
		m, r := <-miss, <-refresh
		if m.err != nil || r.err != nil {
			t.Fatalf("miss %v, refresh %v", m.err, r.err)
		}
		if diff := cmp.Diff(m.e, r.e); diff != "" {
			t.Errorf("refresh got another entry (-miss +refresh):\n%s", diff)
		}
		if !m.o.Stored || m.o.Collapsed || !r.o.Collapsed || r.o.Tier != TierMiss {
			t.Errorf("miss %+v, refresh %+v", m.o, r.o)
		}
	})
}

func TestInvalidateObject(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	c := newTestCache(t, "", store, Config{})
	var calls atomic.Int32
	k1, k2, k3 := testKey(21), testKey(22), testKey(23)
	shared, _ := get(t, c, k1, false, countingLoader("same bytes", &calls))
	if e, _ := get(t, c, k2, false, countingLoader("same bytes", &calls)); e.Object != shared.Object {
		t.Fatal("equal bytes got different objects")
	}
	other, _ := get(t, c, k3, false, countingLoader("other bytes", &calls))

	// The purge asks which manifests name the output: exactly k1's and k2's.
	keys, err := c.ObjectKeys(shared.Object)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(keys, func(a, b Key) int { return bytes.Compare(a[:], b[:]) })
	want := []Key{k1, k2}
	slices.SortFunc(want, func(a, b Key) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(keys, want) {
		t.Errorf("ObjectKeys = %v, want %v", keys, want)
	}
	if _, err := c.ObjectKeys("../etc"); err == nil {
		t.Error("ObjectKeys accepted a bad hash")
	}

	// An operator purge: the output leaves the object store, then every
	// node forgets it.
	store.del(outputName(shared.Object, shared.Ext))
	if err := c.InvalidateObject(shared.Object); err != nil {
		t.Fatal(err)
	}
	for _, k := range []Key{k1, k2} {
		if _, found, _ := c.l2.get(k); found {
			t.Errorf("L2 still has %s", k)
		}
		if _, ok := c.l1.entry(k); ok {
			t.Errorf("L1 still has %s", k)
		}
	}
	if _, err := c.Object(t.Context(), shared.Object, shared.Ext); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Object after purge: %v, want not-exist", err)
	}
	// The manifests remain but name a missing output: a miss.
	if _, o := get(t, c, k1, false, countingLoader("same bytes", &calls)); o.Tier != TierMiss {
		t.Errorf("k1 after purge: tier %v, want miss", o.Tier)
	}
	if e, o := get(t, c, k3, false, failLoader(t)); o.Tier != TierL1 || e.Object != other.Object {
		t.Errorf("unrelated key after purge: tier %v", o.Tier)
	}
	if err := c.InvalidateObject("../etc"); err == nil {
		t.Error("InvalidateObject accepted a bad hash")
	}
}

func TestInvalidateDropsLocalTiersOnly(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	var calls atomic.Int32
	key := testKey(24)
	get(t, c, key, false, countingLoader("bytes", &calls))
	if err := c.Invalidate(key); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := c.l2.get(key); found {
		t.Error("L2 still has the key")
	}
	// The shared manifest still answers.
	if _, o := get(t, c, key, false, failLoader(t)); o.Tier != TierL3 {
		t.Errorf("after Invalidate: tier %v, want l3", o.Tier)
	}
}

func TestL1EvictionServedByL2(t *testing.T) {
	t.Parallel()
	// Room for a handful of entries, not for 30 entries and their bytes.
	c := newTestCache(t, "", newMemStore(), Config{L1MaxBytes: 4 << 10})
	var calls atomic.Int32
	const n = 30
	want := make([]Entry, n)
	for i := range n {
		want[i], _ = get(t, c, testKey(100+i), false, countingLoader(fmt.Sprintf("%04d", i)+strings.Repeat("x", 1000), &calls))
	}
	tiers := map[Tier]int{}
	for i := range n {
		e, o := get(t, c, testKey(100+i), false, failLoader(t))
		if diff := cmp.Diff(want[i], e); diff != "" {
			t.Errorf("key %d (-want +got):\n%s", i, diff)
		}
		tiers[o.Tier]++
	}
	if tiers[TierL2] == 0 || tiers[TierL3]+tiers[TierMiss] != 0 {
		t.Errorf("tiers %v: want L2 to serve what L1 dropped", tiers)
	}
}

func TestCorruptL2RecordIsAMiss(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		record []byte
	}{
		{"garbage", []byte("not a record")},
		{"unknown version", append([]byte{9}, appendEntry(nil, Entry{Object: strings.Repeat("a", 64), Ext: "png"})[1:]...)},
		{"truncated", appendEntry(nil, Entry{Object: strings.Repeat("a", 64), Ext: "png", Size: 1 << 40})[:70]},
		{"empty", []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "cache.db")
			key := testKey(31)
			var calls atomic.Int32
			c1, err := New(Config{Path: path}, newMemStore(), nil)
			if err != nil {
				t.Fatal(err)
			}
			get(t, c1, key, false, countingLoader("soon corrupt", &calls))
			c1.Close()

			db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEntries).Put(key[:], tc.record) })
			db.Close()
			if err != nil {
				t.Fatal(err)
			}

			c2 := newTestCache(t, path, newMemStore(), Config{})
			e, o := get(t, c2, key, false, countingLoader("soon corrupt", &calls))
			if o.Tier != TierMiss || calls.Load() != 2 {
				t.Errorf("tier %v, loads %d; want the corrupt record to be a miss", o.Tier, calls.Load())
			}
			if s := c2.Stats(); s.Errors < 1 {
				t.Errorf("Errors = %d, want the corrupt record counted", s.Errors)
			}
			// The load rewrote the record.
			if got, found, err := c2.l2.get(key); err != nil || !found || got.Object != e.Object {
				t.Errorf("record after reload: %+v %v %v", got, found, err)
			}
		})
	}
}

func TestBrokenL2Degrades(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	c.l2.db.Close() // the disk goes away under the cache
	var calls atomic.Int32
	key := testKey(32)
	if _, o := get(t, c, key, false, countingLoader("still served", &calls)); o.Tier != TierMiss {
		t.Errorf("tier %v, want miss", o.Tier)
	}
	if s := c.Stats(); s.Errors != 3 {
		t.Errorf("Errors = %d, want 3 (read, read again in the lookup, write)", s.Errors)
	}
	if _, o := get(t, c, key, false, failLoader(t)); o.Tier != TierL1 {
		t.Errorf("repeat tier %v, want l1", o.Tier)
	}
}

func TestObjectStoreFailures(t *testing.T) {
	t.Parallel()
	errDown := errors.New("object store down")
	t.Run("output put fails the get", func(t *testing.T) {
		t.Parallel()
		store := newMemStore()
		store.failPut = func(name string) error {
			if strings.HasPrefix(name, "o/") {
				return errDown
			}
			return nil
		}
		c := newTestCache(t, "", store, Config{})
		key := testKey(33)
		var calls atomic.Int32
		if _, _, err := c.Get(t.Context(), key, false, countingLoader("unstorable", &calls)); !errors.Is(err, errDown) {
			t.Fatalf("error = %v, want the store's", err)
		}
		if _, found, _ := c.l2.get(key); found {
			t.Error("an unstored output was recorded in L2")
		}
		if s := c.Stats(); s.Errors != 1 || s.LoadErrors != 0 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("manifest put is served anyway", func(t *testing.T) {
		t.Parallel()
		store := newMemStore()
		store.failPut = func(name string) error {
			if strings.HasPrefix(name, "k/") {
				return errDown
			}
			return nil
		}
		c := newTestCache(t, "", store, Config{})
		var calls atomic.Int32
		_, o, err := c.Get(t.Context(), testKey(34), false, countingLoader("no manifest", &calls))
		if err != nil || !o.Stored {
			t.Fatalf("Get = %+v, %v", o, err)
		}
		if s := c.Stats(); s.Errors != 1 {
			t.Errorf("Errors = %d, want 1", s.Errors)
		}
	})
	t.Run("manifest read failure is a miss", func(t *testing.T) {
		t.Parallel()
		store := newMemStore()
		store.failGet = func(name string) error { return errDown }
		c := newTestCache(t, "", store, Config{})
		var calls atomic.Int32
		if _, o := get(t, c, testKey(35), false, countingLoader("x", &calls)); o.Tier != TierMiss {
			t.Errorf("tier %v", o.Tier)
		}
		if s := c.Stats(); s.Errors != 1 {
			t.Errorf("Errors = %d, want 1", s.Errors)
		}
	})
	t.Run("bad manifest is a miss", func(t *testing.T) {
		t.Parallel()
		store := newMemStore()
		c := newTestCache(t, "", store, Config{})
		key := testKey(36)
		other := testKey(37)
		m, err := encodeManifest(other, Entry{Object: strings.Repeat("a", 64), Ext: "png", ContentType: "image/png", Size: 1})
		if err != nil {
			t.Fatal(err)
		}
		store.set(manifestName(key), m) // another key's manifest under this name
		var calls atomic.Int32
		if _, o := get(t, c, key, false, countingLoader("x", &calls)); o.Tier != TierMiss {
			t.Errorf("tier %v", o.Tier)
		}
		if s := c.Stats(); s.Errors != 1 {
			t.Errorf("Errors = %d, want 1", s.Errors)
		}
	})
}

func TestObject(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	c := newTestCache(t, "", store, Config{})
	data := []byte("output bytes")
	hash := hashHex(data)
	store.set(outputName(hash, "png"), data)

	got, err := c.Object(t.Context(), hash, "png")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Object = %q, %v", got, err)
	}
	c.l1.wait()
	if got, err := c.Object(t.Context(), hash, "png"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("second Object = %q, %v", got, err)
	}
	if n := store.getCount(outputName(hash, "png")); n != 1 {
		t.Errorf("store reads = %d, want 1 (then L1)", n)
	}

	for _, tc := range []struct{ name, hash, ext string }{
		{"missing", hashHex([]byte("nope")), "png"},
		{"other ext", hash, "webp"},
		{"bad hash", "../../etc/passwd", "png"},
		{"upper hash", strings.ToUpper(hash), "png"},
		{"bad ext", hash, "p/ng"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Object(t.Context(), tc.hash, tc.ext); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Object(%q, %q) error = %v, want not-exist", tc.hash, tc.ext, err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	key := testKey(40)
	l := newBlockingLoader("outlives the cache")
	ctx, hangUp := context.WithCancel(t.Context())
	r := goGet(ctx, c, key, false, l.load)
	<-l.started
	hangUp()
	<-r
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Join the load (still blocked) to wait for its end: it must finish
	// without touching the closed tiers.
	ch := c.lookups.DoChan(string(key[:]), func() (any, error) { return &flightResult{}, nil })
	close(l.release)
	if res := <-ch; res.Err != nil || res.Val.(*flightResult).entry.Object == "" {
		t.Errorf("load after Close: %+v", res)
	}
	if _, _, err := c.Get(t.Context(), key, false, l.load); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := Config{L1MaxBytes: -1, LoadTimeout: -1}.Validate()
	for _, want := range []string{"Path", "L1MaxBytes", "LoadTimeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error %v does not name %s", err, want)
		}
	}
	if _, err := New(Config{}, newMemStore(), nil); err == nil {
		t.Error("New accepted a Config without Path")
	}
	if _, err := New(Config{Path: filepath.Join(t.TempDir(), "c.db")}, nil, nil); err == nil {
		t.Error("New accepted a nil ObjectStore")
	}
}

func TestL2LockTimesOut(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cache.db")
	newTestCache(t, path, newMemStore(), Config{})
	if _, err := New(Config{Path: path}, newMemStore(), nil); err == nil {
		t.Error("a second Cache opened a locked L2 file")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntry(nil, Entry{
		Object: strings.Repeat("ab", 32), Ext: "png", ContentType: "image/png",
		Width: 512, Height: 512, Seed: 1 << 40, Model: "retro", ModelVersion: "1",
		Size: 1234, Created: time.Unix(1_800_000_000, 5).UTC(),
	}))
	f.Add(appendEntry(nil, Entry{Object: strings.Repeat("0", 64), Ext: "webp"}))
	f.Add([]byte("not a record"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v is not errCorrupt", err)
			}
			return
		}
		again, err := decodeEntry(appendEntry(nil, e))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if diff := cmp.Diff(e, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

func FuzzDecodeManifest(f *testing.F) {
	key := testKey(1)
	m, _ := encodeManifest(key, Entry{Object: strings.Repeat("ab", 32), Ext: "png", ContentType: "image/png", Size: 3})
	f.Add(m)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeManifest(key, b)
		if err != nil {
			return
		}
		if !validObjectName(e.Object, e.Ext) || e.Size <= 0 {
			t.Fatalf("accepted an unusable manifest: %+v", e)
		}
	})
}

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	load := func(ctx context.Context) (Generated, error) { return generated("bench bytes"), nil }
	key := testKey(1)

	b.Run("l1", func(b *testing.B) {
		c := newTestCache(b, "", newMemStore(), Config{})
		if _, _, err := c.Get(ctx, key, false, load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, o, _ := c.Get(ctx, key, false, load); o.Tier != TierL1 {
				b.Fatalf("tier %v", o.Tier)
			}
		}
	})
	b.Run("l1-parallel", func(b *testing.B) {
		c := newTestCache(b, "", newMemStore(), Config{})
		if _, _, err := c.Get(ctx, key, false, load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Get(ctx, key, false, load)
			}
		})
	})
	b.Run("l2", func(b *testing.B) {
		// An L1 too small for anything: every Get is an L2 hit.
		c := newTestCache(b, "", newMemStore(), Config{L1MaxBytes: 1})
		if _, _, err := c.Get(ctx, key, false, load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, o, _ := c.Get(ctx, key, false, load); o.Tier != TierL2 {
				b.Fatalf("tier %v", o.Tier)
			}
		}
	})
}

func BenchmarkObjectL1(b *testing.B) {
	ctx := context.Background()
	store := newMemStore()
	data := bytes.Repeat([]byte("x"), 64<<10)
	hash := hashHex(data)
	store.set(outputName(hash, "png"), data)
	c := newTestCache(b, "", store, Config{})
	if _, err := c.Object(ctx, hash, "png"); err != nil {
		b.Fatal(err)
	}
	c.l1.wait()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Object(ctx, hash, "png"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPolicyVersionTravelsWithTheEntry pins that the content-policy
// version an output was judged under is kept in every tier (L1, L2 across
// a restart, the L3 manifest another node reads), that records written
// before versions existed read as 0, and that Rejudged updates this
// node's tiers.
func TestPolicyVersionTravelsWithTheEntry(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	path := filepath.Join(t.TempDir(), "cache.db")
	c := newTestCache(t, path, store, Config{})
	key := testKey(31)
	e, _ := get(t, c, key, false, func(context.Context) (Generated, error) {
		g := generated("judged bytes")
		g.Policy = 7
		return g, nil
	})
	if e.Policy != 7 {
		t.Fatalf("entry policy %d, want 7", e.Policy)
	}
	// Another node finds it through the manifest.
	other := newTestCache(t, "", store, Config{})
	if e, o := get(t, other, key, false, failLoader(t)); o.Tier != TierL3 || e.Policy != 7 {
		t.Errorf("L3 hit: tier %v policy %d, want l3 and 7", o.Tier, e.Policy)
	}
	if err := c.Rejudged(key, 9); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := c.Peek(key); e.Policy != 9 {
		t.Errorf("L1 after Rejudged: policy %d, want 9", e.Policy)
	}
	c.Close()
	c = newTestCache(t, path, store, Config{})
	if e, o, _ := c.Peek(key); o.Tier != TierL2 || e.Policy != 9 {
		t.Errorf("L2 after restart: tier %v policy %d, want l2 and 9", o.Tier, e.Policy)
	}

	// A record from before policy versions decodes with policy 0.
	e.Policy = 0
	old := appendEntry(nil, e)
	e.Policy = 5
	if got := appendEntry(nil, e); !bytes.HasPrefix(got, old) || len(got) == len(old) {
		t.Fatal("the policy is not an optional trailing field")
	}
	if d, err := decodeEntry(old); err != nil || d.Policy != 0 {
		t.Errorf("old record: %+v %v", d, err)
	}
}
