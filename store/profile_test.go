package store

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

// TestProfileSealed checks promise R2's profile: it round-trips, exists in
// the file only sealed with the account's key, and dies with that key.
func TestProfileSealed(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	a := mustAccount(t, db, "ada@example.com")
	b := mustAccount(t, db, "bob@example.com")

	if p, err := db.Profile(a.ID); err != nil || p != (Profile{}) {
		t.Errorf("profile before any was set = %+v, %v; want the zero profile", p, err)
	}
	const marker = "Ada Marker-Lovelace-7731"
	if err := db.SetProfile(a.ID, Profile{DisplayName: marker}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetProfile(b.ID, Profile{DisplayName: "Bob"}); err != nil {
		t.Fatal(err)
	}
	if p, err := db.Profile(a.ID); err != nil || p.DisplayName != marker {
		t.Errorf("Profile = %+v, %v; want %q", p, err, marker)
	}
	if fileContains(t, path, []byte(marker)) {
		t.Errorf("the display name is readable in the store's files")
	}
	if _, err := db.Profile("acct_missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing account: %v, want ErrNotFound", err)
	}

	// Sealed bytes copied into another account's record do not open.
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		v := append([]byte(nil), tx.Bucket(bucketProfiles).Get([]byte(a.ID))...)
		return tx.Bucket(bucketProfiles).Put([]byte(b.ID), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := db.Profile(b.ID); err == nil {
		t.Errorf("a profile moved between accounts opened: %+v", p)
	}

	// Clearing removes the record.
	if err := db.SetProfile(b.ID, Profile{}); err != nil {
		t.Fatal(err)
	}
	if p, err := db.Profile(b.ID); err != nil || p != (Profile{}) {
		t.Errorf("cleared profile = %+v, %v", p, err)
	}

	// Erasure: whatever is left of the record cannot be read without the
	// destroyed key.
	var slot uint64
	if _, err := db.BeginErasure(a.ID, ErasureByUser); err != nil {
		t.Fatal(err)
	}
	if err := db.SetProfile(a.ID, Profile{DisplayName: "late"}); !errors.Is(err, ErrAccountInactive) {
		t.Errorf("SetProfile while erasing: %v, want ErrAccountInactive", err)
	}
	db.bolt.View(func(tx *bolt.Tx) error {
		rec, _ := getAccount(tx, a.ID)
		slot = rec.Slot
		return nil
	})
	for done := false; !done; {
		if done, err = db.EraseStep(a.ID, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FinishErasure(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.keys.get(slot, ownerTag(a.ID)); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("account key after erasure: %v, want ErrKeyDestroyed", err)
	}
	if _, err := db.Profile(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("profile of an erased account: %v, want ErrNotFound", err)
	}
	if p, err := db.Profile(b.ID); err != nil || p != (Profile{}) {
		t.Errorf("the other account's profile after erasure = %+v, %v", p, err)
	}
}

// TestDeleteProfile checks the helper erasure calls.
func TestDeleteProfile(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "ada@example.com")
	if err := db.SetProfile(a.ID, Profile{DisplayName: "Ada"}); err != nil {
		t.Fatal(err)
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error { return deleteProfile(tx, a.ID) })
	if err != nil {
		t.Fatal(err)
	}
	db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketProfiles).Get([]byte(a.ID)); v != nil {
			t.Errorf("profile record still stored after deleteProfile")
		}
		return nil
	})
}

// TestUpdateSettings checks that concurrent changes of different switches
// all survive, and that a change to what is already in force writes
// nothing (the GPC opt-out runs on every request that carries it).
func TestUpdateSettings(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "ada@example.com")

	var wg sync.WaitGroup
	for _, set := range []func(*Settings){
		func(s *Settings) { s.ProductEmail = true },
		func(s *Settings) { s.NoAnalytics = true },
		func(s *Settings) { s.NoModelImprovement = true },
	} {
		wg.Go(func() {
			if _, _, err := db.UpdateSettings(a.ID, set); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := Settings{ProductEmail: true, NoAnalytics: true, NoModelImprovement: true}
	got, err := db.Account(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Settings); diff != "" {
		t.Errorf("settings after concurrent updates (-want +got):\n%s", diff)
	}

	pageWrites := func() int64 { st := db.bolt.Stats(); return st.TxStats.GetWrite() }
	writes := pageWrites()
	s, changed, err := db.UpdateSettings(a.ID, func(s *Settings) { s.NoAnalytics, s.NoModelImprovement = true, true })
	if err != nil || changed || s != want {
		t.Errorf("no-op update = %+v, %v, %v; want %+v, false, nil", s, changed, err, want)
	}
	if w := pageWrites(); w != writes {
		t.Errorf("a no-op update wrote %d pages", w-writes)
	}

	s, changed, err = db.UpdateSettings(a.ID, func(s *Settings) { s.ProductEmail = false })
	if err != nil || !changed || s.ProductEmail {
		t.Errorf("update = %+v, %v, %v; want product email off, changed", s, changed, err)
	}

	if err := db.SetStatus(a.ID, StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.UpdateSettings(a.ID, func(s *Settings) { s.ProductEmail = true }); !errors.Is(err, ErrAccountInactive) {
		t.Errorf("suspended account: %v, want ErrAccountInactive", err)
	}
	if _, _, err := db.UpdateSettings("acct_missing", func(*Settings) {}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing account: %v, want ErrNotFound", err)
	}
}
