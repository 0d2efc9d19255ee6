package cache

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// hitSizes are the cache sizes BenchmarkHitAtSize compares: a hit must
// cost the same whether the tier holds a thousand entries or a million.
var hitSizes = []int{1_000, 10_000, 100_000, 1_000_000}

// hitLookups is how many precomputed lookups a benchmark cycles through:
// more than the largest tier, so that the uniform draw over a million
// entries really touches entries the CPU caches have not kept from the
// last cycle. They are read in order (the hardware prefetches them), so
// finding the next key costs the same at every size, as a request that
// computes its key.
const hitLookups = 1 << 20

// BenchmarkHitAtSize measures a Peek hit in L1 and in L2 when the tier
// holds n entries, for keys drawn two ways from all n:
//
//   - uniform: every entry equally likely, the worst case for the CPU
//     caches and the TLB (at a million entries nearly every lookup misses
//     them);
//   - zipf: classic Zipf popularity (the entry of rank r drawn with
//     probability ∝ 1/r, ranks assigned at random), as visitors repeat
//     popular prompts;
//   - popular: every lookup one of 16 entries placed at random in the
//     tier, a few prompts everybody repeats: what the tier's size costs
//     a hit once memory latency is out of the picture.
//
// Each tier's fixture is built once per size and serves both draws.
// Compare ns/op across sizes: the hit path does no work that grows with
// the tier, so what grows is memory latency.
func BenchmarkHitAtSize(b *testing.B) {
	for _, tier := range []Tier{TierL1, TierL2} {
		for _, n := range hitSizes {
			b.Run(fmt.Sprintf("%s/%d", tier, n), func(b *testing.B) {
				keys := sizeKeys(n)
				cfg := Config{L1MaxBytes: 1} // L2: nothing fits in L1
				if tier == TierL1 {
					cfg.L1MaxBytes = int64(n) * (entryCost + 512)
				}
				c := newTestCache(b, filepath.Join(b.TempDir(), "cache.db"), newMemStore(), cfg)
				if tier == TierL1 {
					fillL1(b, c, keys)
				} else {
					fillL2(b, c, keys)
				}
				for _, dist := range []string{"uniform", "zipf", "popular"} {
					lookups := drawLookups(keys, dist)
					b.Run(dist, func(b *testing.B) {
						b.ReportAllocs()
						i := 0
						for b.Loop() {
							if _, o, ok := c.Peek(lookups[i]); !ok || o.Tier != tier {
								b.Fatalf("lookup %d: found %v in %v, want %v", i, ok, o.Tier, tier)
							}
							i = (i + 1) & (len(lookups) - 1)
						}
					})
				}
			})
		}
	}
}

// drawLookups returns hitLookups keys drawn from keys by dist.
func drawLookups(keys []Key, dist string) []Key {
	rng := rand.New(rand.NewPCG(1, 2))
	lookups := make([]Key, hitLookups)
	switch dist {
	case "uniform":
		for i := range lookups {
			lookups[i] = keys[rng.IntN(len(keys))]
		}
	case "zipf":
		// cdf[r] is the probability of ranks 0..r; rank r is the entry
		// perm[r], so popular entries lie anywhere in the tier.
		cdf := make([]float64, len(keys))
		sum := 0.0
		for r := range cdf {
			sum += 1 / float64(r+1)
			cdf[r] = sum
		}
		perm := rng.Perm(len(keys))
		for i := range lookups {
			r := sort.SearchFloat64s(cdf, rng.Float64()*sum)
			lookups[i] = keys[perm[min(r, len(keys)-1)]]
		}
	case "popular":
		hot := make([]Key, 16)
		for i := range hot {
			hot[i] = keys[rng.IntN(len(keys))]
		}
		for i := range lookups {
			lookups[i] = hot[rng.IntN(len(hot))]
		}
	default:
		panic("unknown distribution " + dist)
	}
	return lookups
}

// sizeKeyList caches the largest key list built, since every size's keys
// are a prefix of it.
var sizeKeyList struct {
	sync.Mutex
	keys []Key
}

// sizeKeys returns n distinct keys, as real requests would make them.
func sizeKeys(n int) []Key {
	sizeKeyList.Lock()
	defer sizeKeyList.Unlock()
	if len(sizeKeyList.keys) < n {
		keys := make([]Key, n)
		r := baseRequest()
		for i := range keys {
			r.Seed = uint64(i)
			keys[i] = r.Key()
		}
		sizeKeyList.keys = keys
	}
	return sizeKeyList.keys[:n:n]
}

// sizeEntry is the entry stored under key: an output of its own.
func sizeEntry(key Key) Entry {
	return Entry{
		Object: hex.EncodeToString(key[:]), Ext: "png", ContentType: "image/png",
		Width: 512, Height: 512, Seed: 7, Model: "retro", ModelVersion: "1",
		Size: 20_000, Created: time.Unix(1_700_000_000, 0).UTC(), Policy: 1,
	}
}

// fillL1 stores every key's entry in L1, retrying the sets ristretto's
// buffers drop, and checks that all of them stuck.
func fillL1(b testing.TB, c *Cache, keys []Key) {
	b.Helper()
	for _, k := range keys {
		e := sizeEntry(k)
		for !c.l1.setEntry(k, e) {
			c.l1.wait()
		}
	}
	c.l1.wait()
	for i, k := range keys {
		if _, ok := c.l1.entry(k); !ok {
			b.Fatalf("L1 kept %d of %d entries", i, len(keys))
		}
	}
}

// fillL2 writes every key's record, and its by-object row, straight into
// the L2 file in sorted batches: bbolt appends sorted keys cheaply, while
// a million random inserts in one transaction would take minutes.
func fillL2(b testing.TB, c *Cache, keys []Key) {
	b.Helper()
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, func(x, y Key) int { return bytes.Compare(x[:], y[:]) })
	const batch = 50_000
	for start := 0; start < len(sorted); start += batch {
		err := c.l2.update(func(tx *bolt.Tx) error {
			entries, index := tx.Bucket(bucketEntries), tx.Bucket(bucketByObject)
			entries.FillPercent, index.FillPercent = 1, 1 // appending in order: fill pages
			for _, k := range sorted[start:min(start+batch, len(sorted))] {
				e := sizeEntry(k)
				// bbolt keeps the value until the commit: one slice each.
				if err := entries.Put(k[:], appendEntry(nil, e)); err != nil {
					return err
				}
				if err := index.Put(indexKey(e.Object, k), nil); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	// Read every record once, so the first lookups do not pay for mapping
	// the file's pages into memory (a running node has long since done
	// so): what is measured is the lookup, not the page faults.
	n := 0
	err := c.l2.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil || n != len(keys) {
		b.Fatalf("L2 holds %d of %d entries: %v", n, len(keys), err)
	}
}
