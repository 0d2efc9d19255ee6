package cache

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// l2Size is the L2 file's high-water mark: the pages its meta says are in
// use, free or not.
func l2Size(t *testing.T, s *l2) int64 {
	t.Helper()
	var n int64
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestL2SnapshotSeesEveryWrite checks that hits read through the shared
// read transaction never see a state older than the last write that
// returned: stores, overwrites, deletes, purges by object and purges of
// everything are each seen by the very next read, and survive a reopen.
func TestL2SnapshotSeesEveryWrite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cache.db")
	c := newTestCache(t, path, newMemStore(), Config{L1MaxBytes: 1}) // every Peek reads L2
	k1, k2, k3 := testKey(900), testKey(901), testKey(902)
	peek := func(key Key) (Entry, bool) {
		t.Helper()
		e, o, ok := c.Peek(key)
		if ok && o.Tier != TierL2 {
			t.Fatalf("tier %v, want l2", o.Tier)
		}
		return e, ok
	}
	if _, ok := peek(k1); ok {
		t.Fatal("hit in an empty cache")
	}
	if c.l2.snap == nil {
		t.Fatal("a read did not open the shared snapshot")
	}
	e1 := sizeEntry(k1)
	if err := c.l2.put(k1, e1); err != nil {
		t.Fatal(err)
	}
	if got, ok := peek(k1); !ok || got.Object != e1.Object {
		t.Fatalf("stored entry not seen: %v %+v", ok, got)
	}
	e1.Policy = 9
	if err := c.l2.put(k1, e1); err != nil {
		t.Fatal(err)
	}
	if got, _ := peek(k1); got.Policy != 9 {
		t.Fatalf("overwrite not seen: policy %d", got.Policy)
	}
	if err := c.Invalidate(k1); err != nil {
		t.Fatal(err)
	}
	if _, ok := peek(k1); ok {
		t.Fatal("invalidated entry still a hit")
	}
	// Two keys on one output, purged by the output.
	shared := sizeEntry(k2)
	for _, k := range []Key{k2, k3} {
		if err := c.l2.put(k, shared); err != nil {
			t.Fatal(err)
		}
		if _, ok := peek(k); !ok {
			t.Fatal("stored entry not seen")
		}
	}
	if err := c.InvalidateObject(shared.Object); err != nil {
		t.Fatal(err)
	}
	for _, k := range []Key{k2, k3} {
		if _, ok := peek(k); ok {
			t.Fatal("purged output's entry still a hit")
		}
	}
	if n, err := c.InvalidateWhere(func(Entry) bool { return true }); err != nil || n != 0 {
		t.Fatalf("InvalidateWhere after the purge: %d %v", n, err)
	}
	e3 := sizeEntry(k3)
	if err := c.l2.put(k3, e3); err != nil {
		t.Fatal(err)
	}
	if _, ok := peek(k3); !ok {
		t.Fatal("stored entry not seen")
	}
	if n, err := c.InvalidateWhere(func(e Entry) bool { return e.Object == e3.Object }); err != nil || n != 1 {
		t.Fatalf("InvalidateWhere: %d %v", n, err)
	}
	if _, ok := peek(k3); ok {
		t.Fatal("entry removed by InvalidateWhere still a hit")
	}
	if err := c.l2.put(k3, e3); err != nil {
		t.Fatal(err)
	}
	if _, ok := peek(k3); !ok {
		t.Fatal("stored entry not seen")
	}
	if err := c.InvalidateAll(); err != nil {
		t.Fatal(err)
	}
	if _, ok := peek(k3); ok {
		t.Fatal("entry still a hit after InvalidateAll")
	}

	// What is stored with a snapshot open is on disk: a reopened cache
	// serves it, and not what was removed.
	if err := c.l2.put(k1, e1); err != nil {
		t.Fatal(err)
	}
	peek(k1) // a snapshot is open at Close
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = newTestCache(t, path, newMemStore(), Config{L1MaxBytes: 1})
	if got, ok := peek(k1); !ok || got.Policy != 9 {
		t.Errorf("after reopen: %v %+v", ok, got)
	}
	for _, k := range []Key{k2, k3} {
		if _, ok := peek(k); ok {
			t.Error("a removed entry is back after reopen")
		}
	}
}

// TestL2SnapshotDoesNotGrowTheFile checks that the shared read transaction
// pins no pages: overwriting one record again and again, with a read
// between writes, reuses the pages each write frees, as it does with no
// reader at all. A snapshot kept open across writes would make every
// write take fresh pages.
func TestL2SnapshotDoesNotGrowTheFile(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{L1MaxBytes: 1})
	keys := sizeKeys(2000)
	fillL2(t, c, keys) // several leaf pages and a branch
	e := sizeEntry(keys[0])
	write := func(i int) {
		e.Policy = uint64(i + 1)
		err := c.l2.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEntries).Put(keys[0][:], appendEntry(nil, e)) })
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 { // settle the freelist
		write(i)
		c.Peek(keys[i])
	}
	before := l2Size(t, c.l2)
	for i := range 300 {
		write(i)
		if got, ok, err := c.l2.get(keys[0]); err != nil || !ok || got.Policy != uint64(i+1) {
			t.Fatalf("write %d: read %v %v policy %d", i, ok, err, got.Policy)
		}
	}
	if after := l2Size(t, c.l2); after > before {
		t.Errorf("the file grew from %d to %d bytes over 300 overwrites read in between", before, after)
	}
}

// TestL2WriteGrowsMapUnderReaders checks that writes which grow bbolt's
// memory map (which waits for every open read transaction) complete while
// other goroutines keep reading through the shared snapshot, and that
// each reader sees every record written before its read began.
func TestL2WriteGrowsMapUnderReaders(t *testing.T) {
	t.Parallel()
	c := newTestCache(t, "", newMemStore(), Config{L1MaxBytes: 1})
	const batches, per = 20, 500 // 10,000 records: the map grows several times
	keys := sizeKeys(batches * per)
	var written atomic.Int64 // records known to be committed
	stop := make(chan struct{})
	var readers sync.WaitGroup
	errs := make(chan error, 4)
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := written.Load()
				if n == 0 {
					c.Peek(keys[0])
					continue
				}
				k := keys[int64(i)%n]
				if e, o, ok := c.Peek(k); !ok || o.Tier != TierL2 || e.Object != sizeEntry(k).Object {
					errs <- fmt.Errorf("record %d, written before the read, not found (%v in %v)", int64(i)%n, ok, o.Tier)
					return
				}
			}
		}()
	}
	done := make(chan error, 1)
	go func() {
		for b := range batches {
			err := c.l2.update(func(tx *bolt.Tx) error {
				for _, k := range keys[b*per : (b+1)*per] {
					if err := tx.Bucket(bucketEntries).Put(k[:], appendEntry(nil, sizeEntry(k))); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				done <- err
				return
			}
			written.Store(int64((b + 1) * per))
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(2 * time.Minute):
		t.Fatal("writes growing the file did not finish under readers: deadlock on the memory map")
	}
	close(stop)
	readers.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
