package cache

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// TestL1ItemFitsMapSlot pins the layout the flat hit latency depends on:
// ristretto's stored item (key, conflict, value, expiration) must stay
// within the 128 bytes Go's map keeps inline in its slots; past that the
// map stores a pointer and every hit follows it.
func TestL1ItemFitsMapSlot(t *testing.T) {
	t.Parallel()
	type storeItem struct { // ristretto's storeItem[l1Item]
		key, conflict uint64
		value         l1Item
		expiration    time.Time
	}
	if n := unsafe.Sizeof(storeItem{}); n > 128 {
		t.Errorf("ristretto's stored item is %d bytes, over the 128 Go's map keeps inline", n)
	}
}

// TestL1EntryRoundTrip checks that the compact L1 form gives back exactly
// the entry stored, and that entries it cannot hold are served from L2
// unchanged instead.
func TestL1EntryRoundTrip(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	base := Entry{
		Object: strings.Repeat("ab", 32), Ext: "webp", ContentType: "image/webp",
		Width: 1024, Height: 768, Seed: math.MaxUint64, Model: "retro", ModelVersion: "2",
		Size: 123_456, Created: time.Date(2026, 12, 4, 1, 2, 3, 456789, time.UTC), Policy: 42,
	}
	fits := map[string]func(*Entry){
		"full":         func(*Entry) {},
		"zero created": func(e *Entry) { e.Created = time.Time{} },
		"zero policy":  func(e *Entry) { e.Policy = 0 },
		"largest values": func(e *Entry) {
			e.Width, e.Height, e.Size, e.Policy = maxDimension, maxDimension, math.MaxInt64, math.MaxUint64
		},
		"hashed policy": func(e *Entry) { e.Policy = 0x9e3779b97f4a7c15 }, // moderation's versions are 64-bit hashes
		"another size":  func(e *Entry) { e.Width, e.Height = 256, 256 },
		"another model": func(e *Entry) { e.Model, e.ModelVersion, e.Ext, e.ContentType = "flux", "2026-11", "png", "image/png" },
		"empty model":   func(e *Entry) { e.Model, e.ModelVersion = "", "" },
		"before 1970":   func(e *Entry) { e.Created = time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC) },
	}
	tooBig := map[string]func(*Entry){
		"created not in UTC": func(e *Entry) { e.Created = e.Created.In(time.FixedZone("X", 3600)) },
	}
	// Nor these, which L2 cannot hold either (it keeps nanoseconds since
	// 1970 and refuses a hash that is not one).
	for name, edit := range map[string]func(*Entry){
		"created past 2262": func(e *Entry) { e.Created = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) },
		"short object hash": func(e *Entry) { e.Object = "abcd" },
	} {
		e := base
		edit(&e)
		if c.l1.setEntry(testKey(499), e) {
			t.Errorf("%s: L1 took an entry its compact form cannot hold", name)
		}
	}
	i := 0
	for name, edit := range fits {
		key := testKey(500 + i)
		i++
		want := base
		edit(&want)
		for !c.l1.setEntry(key, want) {
			c.l1.wait()
		}
		c.l1.wait()
		got, ok := c.l1.entry(key)
		if !ok {
			t.Errorf("%s: not in L1", name)
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: L1 gave back (-want +got):\n%s", name, diff)
		}
		if got.Created != want.Created {
			t.Errorf("%s: created %#v, want the identical %#v", name, got.Created, want.Created)
		}
	}
	for name, edit := range tooBig {
		key := testKey(500 + i)
		i++
		want := base
		edit(&want)
		if c.l1.setEntry(key, want) {
			t.Errorf("%s: L1 took an entry its compact form cannot hold", name)
		}
		if err := c.l2.put(key, want); err != nil {
			t.Fatal(err)
		}
		got, o, ok := c.Peek(key)
		if !ok || o.Tier != TierL2 {
			t.Errorf("%s: Peek found %v in %v, want L2", name, ok, o.Tier)
			continue
		}
		// L2 keeps times in UTC; everything else is exact.
		want.Created = want.Created.UTC()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: L2 gave back (-want +got):\n%s", name, diff)
		}
	}
}

// TestL1KeyIdentity checks that an L1 entry answers only its own key: two
// keys sharing the 8 bytes the cache is indexed by, or an output's bytes
// stored under the same index, are misses, never each other's answer.
func TestL1KeyIdentity(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	key := testKey(600)
	e := sizeEntry(key)
	for !c.l1.setEntry(key, e) {
		c.l1.wait()
	}
	c.l1.wait()
	for i := 8; i < len(key); i++ {
		other := key
		other[i] ^= 1
		if got, ok := c.l1.entry(other); ok {
			t.Fatalf("a key differing in byte %d got %+v", i, got)
		}
	}
	if _, ok := c.l1.object(e.Object, e.Ext); ok {
		t.Error("an entry answered as an output's bytes")
	}
	if _, _, ok := c.l1.objectModel(e.Object); ok {
		t.Error("an entry answered as an output's model")
	}
}

// TestL1CostCoversMemory checks the cost accounting that makes
// L1MaxBytes a bound on memory: what an entry is charged must cover what
// it takes from the heap (measured over many entries, the object hash
// strings included), and not overstate it by more than half.
func TestL1CostCoversMemory(t *testing.T) {
	// Not parallel: it measures the heap.
	for _, n := range []int{20_000, 60_000} {
		keys := sizeKeys(n)
		objects := make([]string, n) // made before measuring, counted below
		m, err := newL1(int64(n) * 2 * (entryCost + 64))
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i, k := range keys {
			e := sizeEntry(k) // its Object is a fresh 64-byte string
			objects[i] = e.Object
			for !m.setEntry(k, e) {
				m.wait()
			}
		}
		m.wait()
		runtime.GC()
		runtime.ReadMemStats(&after)
		for _, k := range keys {
			if _, ok := m.entry(k); !ok {
				t.Fatalf("n=%d: an entry is missing", n)
			}
		}
		used := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
		charged := float64(entryCost + 64)
		t.Logf("n=%d: %.0f heap bytes per entry, %.0f charged", n, used, charged)
		if used > charged || used < charged/1.5 {
			t.Errorf("n=%d: an entry takes %.0f bytes of heap and is charged %.0f", n, used, charged)
		}
		runtime.KeepAlive(objects)
		m.close()
	}
}

// TestL1EvictsWithinBudget checks that L1 holds no more entries than its
// byte budget pays for, and that what it evicted is still served from
// L2.
func TestL1EvictsWithinBudget(t *testing.T) {
	t.Parallel()
	const room = 50 // entries the budget pays for
	c := newTestCache(t, "", newMemStore(), Config{L1MaxBytes: room * (entryCost + 64)})
	var kept []Key
	fillL2(t, c, sizeKeys(400))
	for _, key := range sizeKeys(400) {
		c.l1.setEntry(key, sizeEntry(key))
		c.l1.wait()
	}
	for _, key := range sizeKeys(400) {
		if _, ok := c.l1.entry(key); ok {
			kept = append(kept, key)
		}
	}
	if len(kept) == 0 || len(kept) > room {
		t.Errorf("L1 kept %d entries, want between 1 and %d", len(kept), room)
	}
	if used := c.l1.c.Metrics; used != nil {
		t.Error("ristretto metrics are on: every Get would pay for counting")
	}
	for i, key := range sizeKeys(400) {
		e, o, ok := c.Peek(key)
		if !ok || e.Object != sizeEntry(key).Object || (o.Tier != TierL1 && o.Tier != TierL2) {
			t.Fatalf("entry %d: %v in %v: an entry L1 dropped must be served from L2", i, ok, o.Tier)
		}
	}
}

// TestL1SharesEntryStrings checks that entries share their repeated
// strings (one interned set per model), that the interning is bounded,
// and that entries past the bound still read back right.
func TestL1SharesEntryStrings(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{})
	a, b := c.l1.meta(l1MetaKey{"png", "image/png", "retro", "1", 512, 512}), c.l1.meta(l1MetaKey{"png", "image/png", "retro", "1", 512, 512})
	if a != b {
		t.Error("two entries of one model do not share their strings")
	}
	for i := range maxMetas + 10 {
		c.l1.meta(l1MetaKey{"png", "image/png", fmt.Sprintf("model-%d", i), "1", 512, 512})
	}
	if len(c.l1.metas) > maxMetas {
		t.Errorf("%d interned string sets, over the bound %d", len(c.l1.metas), maxMetas)
	}
	key := testKey(700)
	e := sizeEntry(key)
	e.Model = "model-past-the-bound"
	for !c.l1.setEntry(key, e) {
		c.l1.wait()
	}
	c.l1.wait()
	if got, ok := c.l1.entry(key); !ok || got.Model != e.Model {
		t.Errorf("entry past the bound: %v %q", ok, got.Model)
	}
}

// TestInternNeverConfuses checks the decoder's string table: whatever
// collides in its slots, every decoded string is the one in the record.
func TestInternNeverConfuses(t *testing.T) {
	t.Parallel()
	for i := range 5000 {
		s := fmt.Sprintf("model-%d", i%700)
		if got := intern([]byte(s)); got != s {
			t.Fatalf("intern(%q) = %q", s, got)
		}
	}
	long := strings.Repeat("m", maxInterned+1)
	if got := intern([]byte(long)); got != long {
		t.Fatal("a long string came back changed")
	}
	if intern(nil) != "" {
		t.Fatal("empty string")
	}
}

// TestL2HitAllocations pins what an L2 hit allocates: the object hash it
// decodes and ristretto's item for the promotion to L1 (it was 12 with a
// transaction per hit). Under the race detector, whose sync.Pool drops
// cursors at random, it checks only that a hit works.
func TestL2HitAllocations(t *testing.T) {
	c := newTestCache(t, "", newMemStore(), Config{L1MaxBytes: 1})
	key := testKey(800)
	if _, _, err := c.Get(context.Background(), key, false, func(context.Context) (Generated, error) {
		return generated("l2 bytes"), nil
	}); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if _, o, ok := c.Peek(key); !ok || o.Tier != TierL2 {
			t.Fatalf("Peek: %v %v", ok, o.Tier)
		}
	})
	if allocs > 2 && !raceEnabled {
		t.Errorf("an L2 hit allocates %.1f times, want at most 2 (the object hash, ristretto's item)", allocs)
	}
}
