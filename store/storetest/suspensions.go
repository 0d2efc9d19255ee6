package storetest

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

func testLiftSuspension(t *testing.T, h Harness) {
	db, _ := h.open(t)
	active := mustAccount(t, db, "active@example.com")
	suspended := mustAccount(t, db, "suspended@example.com")
	erasing := mustAccount(t, db, "erasing@example.com")
	if err := db.SetStatus(suspended.ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BeginErasure(erasing.ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	ids, err := db.SuspendedAccounts()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{suspended.ID}, ids); diff != "" {
		t.Errorf("suspended accounts (-want +got):\n%s", diff)
	}
	for id, want := range map[string]error{active.ID: store.ErrNotSuspended, erasing.ID: store.ErrNotSuspended, "acct_none": store.ErrNotFound} {
		if err := db.LiftSuspension(id); !errors.Is(err, want) {
			t.Errorf("LiftSuspension(%s) = %v, want %v", id, err, want)
		}
	}
	if a, _ := db.Account(erasing.ID); a.Status != store.StatusErasing {
		t.Errorf("a lift undid an erasure: %s", a.Status)
	}
	if err := db.LiftSuspension(suspended.ID); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.Account(suspended.ID); a.Status != store.StatusActive {
		t.Errorf("status after lift %s", a.Status)
	}
	if err := db.LiftSuspension(suspended.ID); !errors.Is(err, store.ErrNotSuspended) {
		t.Errorf("second lift: %v", err)
	}
}
