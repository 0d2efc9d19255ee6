package storetest

import (
	"errors"
	"testing"

	"github.com/imagegate/imagegate/store"
)

// Finishing an erasure re-keys the email and Google lookup indexes under
// a fresh key and destroys the old one: whoever later holds an old copy
// of the data (freed pages, WAL, a backup) and the key files cannot test
// the erased address against it. The other accounts are found as before,
// by this store, by one opened later, and (on PostgreSQL) by another
// gateway that had the old key loaded.
func testErasureRotatesTheLookupIndexKey(t *testing.T, h Harness) {
	db, clock := h.open(t)
	gone := mustAccount(t, db, "erase-me@example.com")
	kept := mustAccount(t, db, "kept@example.com")
	if err := db.LinkGoogle(gone.ID, "google-gone"); err != nil {
		t.Fatal(err)
	}
	if err := db.LinkGoogle(kept.ID, "google-kept"); err != nil {
		t.Fatal(err)
	}
	other := h.reopenShared(t, db, clock)
	if a, err := other.AccountByEmail("kept@example.com"); err != nil || a.ID != kept.ID {
		t.Fatalf("the other gateway before erasure: %v, %v", a.ID, err)
	}
	oldKey, err := h.keyring(t, db).IndexKey()
	if err != nil {
		t.Fatal(err)
	}
	oldEntries := [][]byte{
		store.LookupKey(oldKey, "email", "erase-me@example.com"), store.LookupKey(oldKey, "google", "google-gone"),
		store.LookupKey(oldKey, "email", "kept@example.com"), store.LookupKey(oldKey, "google", "google-kept"),
	}
	for _, e := range append(oldEntries, oldKey) {
		if !h.Contains(t, db, e) {
			t.Fatal("an index entry or the index key is not in the store before erasure: the checks below would prove nothing")
		}
	}

	if _, err := db.BeginErasure(gone.ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		if done, err = db.EraseStep(gone.ID, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FinishErasure(gone.ID); err != nil {
		t.Fatal(err)
	}

	if h.Contains(t, db, oldKey) {
		t.Error("the lookup-index key that indexed the erased account survives")
	}
	for _, e := range oldEntries {
		if h.Contains(t, db, e) {
			t.Error("an index entry under the old key is still stored: the index was not rebuilt")
		}
	}
	for _, s := range []Store{db, other} {
		if a, err := s.AccountByEmail("kept@example.com"); err != nil || a.ID != kept.ID {
			t.Errorf("email lookup of the kept account: %v, %v", a.ID, err)
		}
		if a, err := s.AccountByGoogle("google-kept"); err != nil || a.ID != kept.ID {
			t.Errorf("Google lookup of the kept account: %v, %v", a.ID, err)
		}
		if _, err := s.AccountByEmail("erase-me@example.com"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the erased email: %v, want ErrNotFound", err)
		}
	}
	// The gateway that had the old key loaded indexes new accounts under
	// the new one, and the address stays taken.
	fresh, err := other.CreateAccount(store.NewAccount{Email: "fresh@example.com", PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: start})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateAccount(store.NewAccount{Email: "kept@example.com", PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: start}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a second account for the kept address: %v, want ErrConflict", err)
	}
	if other != db {
		if _, err := other.CreateAccount(store.NewAccount{Email: "kept@example.com", PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: start}); !errors.Is(err, store.ErrConflict) {
			t.Errorf("a second account for the kept address on the other gateway: %v, want ErrConflict", err)
		}
	}
	reopened := h.reopen(t, db, clock)
	for email, id := range map[string]string{"kept@example.com": kept.ID, "fresh@example.com": fresh.ID} {
		if a, err := reopened.AccountByEmail(email); err != nil || a.ID != id {
			t.Errorf("%s after reopening: %v, %v", email, a.ID, err)
		}
	}
	if a, err := reopened.AccountByGoogle("google-kept"); err != nil || a.ID != kept.ID {
		t.Errorf("Google lookup after reopening: %v, %v", a.ID, err)
	}
}
