package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestCreditsLedger(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "l@example.com")

	e, applied, err := db.AddCredit(a.ID, Credit{Kind: KindPurchase, Amount: 100, Ref: "cs_1", MoneyMinor: 500, Currency: "usd"})
	if err != nil || !applied || e.Balance != 100 {
		t.Fatalf("AddCredit = %+v, %v, %v", e, applied, err)
	}
	again, applied, err := db.AddCredit(a.ID, Credit{Kind: KindPurchase, Amount: 100, Ref: "cs_1"})
	if err != nil || applied || again.Seq != e.Seq {
		t.Errorf("replayed ref: %+v, applied %v, %v; want the first entry, not applied", again, applied, err)
	}
	if ok, _ := db.ApplyGrant(a.ID, "2026-11", 20); !ok {
		t.Errorf("first grant of the period not applied")
	}
	if ok, _ := db.ApplyGrant(a.ID, "2026-11", 20); ok {
		t.Errorf("second grant of the same period applied")
	}

	h, err := db.Reserve(a.ID, 30, "key")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Account(a.ID); got.Credits != 120 || got.Available() != 90 {
		t.Errorf("after reserve: credits %d available %d; want 120, 90", got.Credits, got.Available())
	}
	if _, err := db.CommitHold(h.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CommitHold(h.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("double commit: %v, want ErrNotFound", err)
	}
	h2, _ := db.Reserve(a.ID, 50, "key2")
	if err := db.ReleaseHold(h2.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.ReleaseHold(h2.ID); err != nil {
		t.Errorf("second release: %v", err)
	}
	got, _ := db.Account(a.ID)
	if got.Credits != 90 || got.Held != 0 {
		t.Errorf("credits %d held %d; want 90, 0", got.Credits, got.Held)
	}
	if _, err := db.Reserve(a.ID, 91, "too much"); !errors.Is(err, ErrInsufficientCredits) {
		t.Errorf("overdraft: %v, want ErrInsufficientCredits", err)
	}
	entries, _ := db.Ledger(a.ID)
	var sum int64
	for _, e := range entries {
		sum += e.Amount
	}
	if len(entries) != 3 || sum != got.Credits {
		t.Errorf("ledger %d entries summing to %d; want 3 summing to %d", len(entries), sum, got.Credits)
	}
	if mm, err := db.Reconcile(false); err != nil || len(mm) != 0 {
		t.Errorf("Reconcile on a consistent store = %+v, %v", mm, err)
	}
}

func TestConcurrentReservationsNeverOverspend(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "c@example.com")
	db.AddCredit(a.ID, Credit{Kind: KindGrant, Amount: 10, Ref: "g"})
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			h, err := db.Reserve(a.ID, 1, "k")
			switch {
			case errors.Is(err, ErrInsufficientCredits):
				refused.Add(1)
			case err != nil:
				t.Error(err)
			default:
				ok.Add(1)
				if _, err := db.CommitHold(h.ID); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || refused.Load() != 190 {
		t.Errorf("%d charged, %d refused; want 10, 190", ok.Load(), refused.Load())
	}
	if got, _ := db.Account(a.ID); got.Credits != 0 || got.Held != 0 {
		t.Errorf("credits %d held %d; want 0, 0", got.Credits, got.Held)
	}
}

func TestReconcileFindsAndFixesDrift(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "d@example.com")
	db.AddCredit(a.ID, Credit{Kind: KindGrant, Amount: 40, Ref: "g"})
	// Corrupt the stored balance behind the ledger's back.
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		rec, _ := getAccount(tx, a.ID)
		rec.Balance = 1000
		return putJSON(tx.Bucket(bucketAccounts), []byte(a.ID), rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	mm, err := db.Reconcile(false)
	if err != nil || len(mm) != 1 || mm[0].Balance != 1000 || mm[0].LedgerSum != 40 {
		t.Fatalf("Reconcile = %+v, %v", mm, err)
	}
	if got, _ := db.Account(a.ID); got.Credits != 1000 {
		t.Errorf("a dry reconcile changed the balance")
	}
	if _, err := db.Reconcile(true); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Account(a.ID); got.Credits != 40 {
		t.Errorf("balance after fix = %d, want 40", got.Credits)
	}
	if mm, _ := db.Reconcile(false); len(mm) != 0 {
		t.Errorf("still mismatched after fix: %+v", mm)
	}
}

func TestStaleHoldsAreReleased(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a := mustAccount(t, db, "h@example.com")
	db.AddCredit(a.ID, Credit{Kind: KindGrant, Amount: 5, Ref: "g"})
	db.Reserve(a.ID, 3, "old")
	clock.Advance(10 * time.Minute)
	fresh, _ := db.Reserve(a.ID, 1, "new")
	n, err := db.ReleaseStaleHolds(5 * time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("ReleaseStaleHolds = %d, %v; want 1", n, err)
	}
	if got, _ := db.Account(a.ID); got.Held != 1 {
		t.Errorf("held %d, want 1 (the fresh hold)", got.Held)
	}
	if _, err := db.CommitHold(fresh.ID); err != nil {
		t.Errorf("fresh hold: %v", err)
	}
}
