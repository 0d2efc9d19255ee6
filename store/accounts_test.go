package store

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestPersonalDataIsSealedInTheFile(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	const email = "sealed-marker@example.com"
	a := mustAccount(t, db, email)
	if err := db.LinkGoogle(a.ID, "google-subject-marker-991"); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{email, "google-subject-marker-991"} {
		if fileContains(t, path, []byte(needle)) {
			t.Errorf("%q is readable in the store files", needle)
		}
	}
}

func TestDestroyedKeyMakesAccountUnreadable(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "gone@example.com")
	var rec accountRecord
	db.bolt.View(func(tx *bolt.Tx) error { var err error; rec, err = getAccount(tx, a.ID); return err })
	if err := db.keys.destroy(rec.Slot); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Account(a.ID); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("Account after key destruction: %v, want ErrKeyDestroyed", err)
	}
	// Another account's key is untouched.
	b := mustAccount(t, db, "kept@example.com")
	if got, err := db.Account(b.ID); err != nil || got.Email != "kept@example.com" {
		t.Errorf("other account: %+v, %v", got, err)
	}
}
