package postgres_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
)

// openFleet opens n stores on one database and one set of key files: n
// gateways, as the database sees them.
func openFleet(t *testing.T, n int, now func() time.Time) []*postgres.DB {
	t.Helper()
	pg := testpeer.StartPostgres(t)
	url := pg.NewDatabase(t)
	keyPath := filepath.Join(t.TempDir(), "imagegate.db")
	dbs := make([]*postgres.DB, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { // at once: the migrations race under their lock
			dbs[i], errs[i] = postgres.Open(t.Context(), postgres.Config{URL: url, KeyPath: keyPath, Now: now})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	return dbs
}

// Output references expired by three stores at once are each expired
// exactly once (SKIP LOCKED splits the due rows), every output ends in the
// deletion queue once, and every store sees the same queue.
func TestFleetExpiresAndCollectsOutputsOnce(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	dbs := openFleet(t, 3, clock.Now)
	const outputs = 300
	for i := range outputs {
		hash := fmt.Sprintf("%064x", i)
		if err := dbs[i%3].TouchAnonymousOutput(hash, "png", "retro", "1", "ck-"+hash, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// One output is also in an account's history on another store: it must
	// survive the anonymous expiry.
	a, err := dbs[1].CreateAccount(store.NewAccount{Email: "keeper@example.com", Plan: "free", AgeAttested: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	kept := fmt.Sprintf("%064x", 7)
	if _, _, err := dbs[2].RecordGeneration(a.ID, store.Generation{Prompt: "kept", Object: kept, Ext: "png", ContentKey: "ck-kept"}, 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)

	var expired atomic.Int64
	var wg sync.WaitGroup
	for _, db := range dbs {
		wg.Go(func() {
			for {
				n, err := db.ExpireOutputs(25)
				if err != nil {
					t.Error(err)
					return
				}
				expired.Add(int64(n))
				if n == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if got := expired.Load(); got != outputs {
		t.Errorf("%d references expired, want %d", got, outputs)
	}
	for i, db := range dbs {
		var queued []store.DoomedObject
		after := ""
		for {
			page, err := db.DoomedObjects(after, 64)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			queued = append(queued, page...)
			after = page[len(page)-1].Hash
		}
		if len(queued) != outputs-1 {
			t.Errorf("store %d sees %d outputs queued for deletion, want %d", i, len(queued), outputs-1)
		}
		if ok, err := db.ObjectReferenced(kept); err != nil || !ok {
			t.Errorf("store %d: the output in a history is unreferenced: %v, %v", i, ok, err)
		}
		if owners, _ := db.ObjectOwners(kept); len(owners) != 1 || owners[0] != a.ID {
			t.Errorf("store %d: owners of the kept output = %v", i, owners)
		}
	}
	// The reaper's steps, each on another store: claimed, bytes gone, off
	// the queue; while claimed, no store may reference it.
	first := fmt.Sprintf("%064x", 0)
	if ok, err := dbs[0].ClaimDoomed(first); err != nil || !ok {
		t.Fatalf("ClaimDoomed = %v, %v", ok, err)
	}
	if err := dbs[1].TouchAnonymousOutput(first, "png", "retro", "1", "ck-late", time.Hour); !errors.Is(err, store.ErrOutputGone) {
		t.Errorf("a reference on another store to a claimed output: %v, want ErrOutputGone", err)
	}
	if err := dbs[1].DoomedGone(first); err != nil {
		t.Fatal(err)
	}
	if err := dbs[2].ObjectDeleted(first); err != nil {
		t.Fatal(err)
	}
	page, _ := dbs[2].DoomedObjects("", 1)
	if len(page) != 1 || page[0].Hash == fmt.Sprintf("%064x", 0) {
		t.Errorf("after collection the next queued output is %+v", page)
	}
}
