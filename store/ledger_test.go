package store

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

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
