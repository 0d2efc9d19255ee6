package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func testGeneration(prompt, object string) Generation {
	return Generation{
		Prompt: prompt, Model: "retro", ModelVersion: "1", Width: 256, Height: 256, Seed: 7,
		Object: object, Ext: "png", ContentKey: fmt.Sprintf("v1-%x", sha256.Sum256([]byte(prompt))),
	}
}

func hash64(c byte) string { return string(bytes.Repeat([]byte{c}, 64)) }

func doomed(t *testing.T, db *DB) []string {
	t.Helper()
	ds, err := db.DoomedObjects("", 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Hash)
	}
	slices.Sort(out)
	return out
}

// bucketsMention lists the buckets in which id appears, in keys or values.
func bucketsMention(t *testing.T, db *DB, id string) []string {
	t.Helper()
	var out []string
	db.bolt.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			b.ForEach(func(k, v []byte) error {
				if bytes.Contains(k, []byte(id)) || bytes.Contains(v, []byte(id)) {
					if !slices.Contains(out, string(name)) {
						out = append(out, string(name))
					}
				}
				return nil
			})
			return nil
		})
	})
	slices.Sort(out)
	return out
}

func TestErasureIsCompleteAndResumable(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	db, err := Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	gone := mustAccount(t, db, "erase-me@example.com")
	kept := mustAccount(t, db, "kept@example.com")
	if err := db.LinkGoogle(gone.ID, "google-subject-erase-marker"); err != nil {
		t.Fatal(err)
	}
	if err := db.LinkGoogle(kept.ID, "google-subject-kept"); err != nil {
		t.Fatal(err)
	}
	// The lookup-index key, with which whoever holds the files could
	// test an address against the index entries.
	var indexKey []byte
	db.bolt.View(func(tx *bolt.Tx) error {
		k, _ := db.indexKeys.Load(indexSlot(tx))
		indexKey = k.([]byte)
		return nil
	})
	if !fileContains(t, path, lookupKeyWith(indexKey, "email", "erase-me@example.com")) || !fileContains(t, path, indexKey) {
		t.Fatal("the index entry or its key is not in the files before erasure: the search below would prove nothing")
	}
	shared, private := hash64('1'), hash64('2')
	for i := range 5 {
		db.RecordGeneration(gone.ID, testGeneration(fmt.Sprintf("erase-marker %d", i), private), time.Hour)
	}
	db.RecordGeneration(gone.ID, testGeneration("shared one", shared), time.Hour)
	db.RecordGeneration(kept.ID, testGeneration("shared one", shared), time.Hour)
	db.RecordConsent(Consent{Subject: gone.ID, Revision: 1, Analytics: true, Source: ConsentBanner})
	db.LogSecurityEvent(SecurityEvent{Kind: "login", AccountID: gone.ID, IP: "192.0.2.9"})
	db.AddCredit(gone.ID, Credit{Kind: KindPurchase, Amount: 10, Ref: "pi_1", MoneyMinor: 500, Currency: "usd"})
	db.Reserve(gone.ID, 2, "in flight")
	db.CreateSession(gone.ID, SessionPolicy{Idle: time.Hour, Absolute: time.Hour})
	db.CreateAPIKey(gone.ID, "k", nil)

	if _, err := db.BeginErasure(gone.ID, ErasureByUser); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateSession(gone.ID, SessionPolicy{Idle: time.Hour, Absolute: time.Hour}); !errors.Is(err, ErrAccountInactive) {
		t.Errorf("an erasing account signed in: %v", err)
	}
	// Interrupt after one step; a new process resumes.
	if done, err := db.EraseStep(gone.ID, 2); err != nil || done {
		t.Fatalf("first step = %v, %v", done, err)
	}
	db.Close()
	db, err = Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	jobs, _ := db.PendingErasures()
	if len(jobs) != 1 || jobs[0].AccountID != gone.ID {
		t.Fatalf("pending after restart: %+v", jobs)
	}
	for done := false; !done; {
		if done, err = db.EraseStep(gone.ID, 2); err != nil {
			t.Fatal(err)
		}
	}
	if email, err := db.ErasureEmail(gone.ID); err != nil || email != "erase-me@example.com" {
		t.Errorf("confirmation address %q, %v", email, err)
	}
	if err := db.FinishErasure(gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishErasure(gone.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("finishing twice: %v", err)
	}

	if _, err := db.Account(gone.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("account after erasure: %v", err)
	}
	if _, err := db.AccountByEmail("erase-me@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("email still finds the account: %v", err)
	}
	// Only the pseudonymous ledger remains.
	if got := bucketsMention(t, db, gone.ID); !slices.Equal(got, []string{"ledger", "ledger_refs"}) {
		t.Errorf("buckets still naming the account: %v, want only the ledger", got)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{private}) {
		t.Errorf("queue %v, want only the private output", d)
	}
	if ok, _ := db.ObjectReferenced(shared); !ok {
		t.Errorf("the output shared with another account lost its reference")
	}
	var kept1 []Generation
	db.Generations(kept.ID, func(g Generation) error { kept1 = append(kept1, g); return nil })
	if len(kept1) != 1 || kept1[0].Prompt != "shared one" {
		t.Errorf("the other account's history: %+v", kept1)
	}
	if _, err := db.keys.get(jobs[0].Slot, ownerTag(gone.ID)); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("the erased account's key still exists: %v", err)
	}
	if mm, _ := db.Reconcile(false); len(mm) != 0 {
		t.Errorf("reconcile after erasure: %+v", mm)
	}

	// The erased account's index entries may linger in freed pages, but
	// the key that made them is gone from every file, and under the keys
	// the files do hold its email and Google subject match nothing.
	if fileContains(t, path, indexKey) {
		t.Error("the lookup-index key that indexed the erased account survives in the store's files")
	}
	db.indexKeys.Range(func(_, k any) bool {
		for _, v := range []struct{ kind, value string }{{"email", "erase-me@example.com"}, {"google", "google-subject-erase-marker"}} {
			if fileContains(t, path, lookupKeyWith(k.([]byte), v.kind, v.value)) {
				t.Errorf("the erased account's %s index entry is readable under the current key", v.kind)
			}
		}
		return true
	})
	// The other account is still found, by email and Google, after a restart.
	db.Close()
	db, err = Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if a, err := db.AccountByEmail("kept@example.com"); err != nil || a.ID != kept.ID {
		t.Errorf("the kept account by email after rotation: %+v %v", a, err)
	}
	if a, err := db.AccountByGoogle("google-subject-kept"); err != nil || a.ID != kept.ID {
		t.Errorf("the kept account by Google after rotation: %+v %v", a, err)
	}
	if _, err := db.AccountByEmail("erase-me@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the erased email after restart: %v", err)
	}
}
