package cache

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// hitSizes are the cache sizes BenchmarkHitAtSize compares: a hit must
// cost the same whether the tier holds a thousand entries or a million.
var hitSizes = []int{1_000, 10_000, 100_000, 1_000_000}

// BenchmarkHitAtSize measures a Peek hit in L1 and in L2 when the tier
// holds n entries, each lookup for a key drawn at random from all n (the
// worst case for CPU caches; popular prompts are kinder). Compare ns/op
// across sizes: the hit path does no work that grows with the tier.
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
				// The keys to look up, drawn at random from all n but laid
				// out in lookup order, so that finding the next key costs
				// the same at every size (a request computes its key).
				rng := rand.New(rand.NewPCG(1, 2))
				lookups := make([]Key, 1<<16)
				for i := range lookups {
					lookups[i] = keys[rng.IntN(n)]
				}
				b.ReportAllocs()
				b.ResetTimer()
				i := 0
				for b.Loop() {
					if _, o, ok := c.Peek(lookups[i]); !ok || o.Tier != tier {
						b.Fatalf("lookup %d: found %v in %v, want %v", i, ok, o.Tier, tier)
					}
					i = (i + 1) & (len(lookups) - 1)
				}
			})
		}
	}
}

// sizeKeys returns n distinct keys, as real requests would make them.
func sizeKeys(n int) []Key {
	keys := make([]Key, n)
	r := baseRequest()
	for i := range keys {
		r.Seed = uint64(i)
		keys[i] = r.Key()
	}
	return keys
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
func fillL1(b *testing.B, c *Cache, keys []Key) {
	b.Helper()
	for _, k := range keys {
		e := sizeEntry(k)
		cost := entryCost + int64(len(e.Object)+len(e.Ext)+len(e.ContentType)+len(e.Model)+len(e.ModelVersion))
		for !c.l1.c.Set(entryID(k), &l1Item{key: k, entry: e}, cost) {
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
func fillL2(b *testing.B, c *Cache, keys []Key) {
	b.Helper()
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, func(x, y Key) int { return bytes.Compare(x[:], y[:]) })
	const batch = 50_000
	for start := 0; start < len(sorted); start += batch {
		err := c.l2.db.Update(func(tx *bolt.Tx) error {
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
}
