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

func TestSharedOutputsLiveWhileReferenced(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	a, b := mustAccount(t, db, "a@example.com"), mustAccount(t, db, "b@example.com")
	shared, own := hash64('a'), hash64('b')
	ga, created, err := db.RecordGeneration(a.ID, testGeneration("marker-prompt-one", shared), time.Hour)
	if err != nil || !created {
		t.Fatalf("RecordGeneration = %v, %v", created, err)
	}
	if again, created, _ := db.RecordGeneration(a.ID, testGeneration("marker-prompt-one", shared), time.Hour); created || again.ID != ga.ID {
		t.Errorf("the same request recorded twice")
	}
	db.RecordGeneration(a.ID, testGeneration("marker-prompt-two", own), time.Hour)
	gb, _, _ := db.RecordGeneration(b.ID, testGeneration("marker-prompt-one", shared), time.Hour)

	var got []Generation
	db.Generations(a.ID, func(g Generation) error { got = append(got, g); return nil })
	if len(got) != 2 || got[0].Prompt != "marker-prompt-one" || got[1].Prompt != "marker-prompt-two" {
		t.Fatalf("history %+v", got)
	}
	db.bolt.Sync()
	if fileContains(t, path, []byte("marker-prompt")) {
		t.Errorf("a prompt is readable in the store files")
	}
	if owners, _ := db.ObjectOwners(shared); len(owners) != 2 {
		t.Errorf("owners of the shared output: %v", owners)
	}

	if err := db.DeleteGeneration(a.ID, ga.ID); err != nil {
		t.Fatal(err)
	}
	if d := doomed(t, db); len(d) != 0 {
		t.Errorf("an output still used by b was queued for deletion: %v", d)
	}
	if err := db.DeleteGeneration(b.ID, gb.ID); err != nil {
		t.Fatal(err)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{shared}) {
		t.Errorf("queue %v, want the shared output", d)
	}
	// Referenced again before the reaper ran: it leaves the queue.
	db.RecordGeneration(b.ID, testGeneration("marker-prompt-one", shared), time.Hour)
	if d := doomed(t, db); len(d) != 0 {
		t.Errorf("a referenced output stayed queued: %v", d)
	}
	if err := db.DeleteGeneration(a.ID, "gen_missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting a missing generation: %v", err)
	}
}

func TestOutputsExpireByRetention(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a := mustAccount(t, db, "keep@example.com")
	paid, anonOnly, both := hash64('c'), hash64('d'), hash64('e')
	db.RecordGeneration(a.ID, testGeneration("paid", paid), 30*24*time.Hour)
	db.RecordGeneration(a.ID, testGeneration("both", both), 30*24*time.Hour)
	for _, h := range []string{anonOnly, both} {
		if err := db.TouchAnonymousOutput(h, "png", "retro", "1", "v1-anon-"+h[:4], 7*24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(8 * 24 * time.Hour)
	if n, err := db.ExpireOutputs(100); err != nil || n != 2 {
		t.Fatalf("ExpireOutputs after 8 days = %d, %v; want 2 anonymous references", n, err)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{anonOnly}) {
		t.Errorf("queue after 8 days %v, want only the anonymous-only output", d)
	}
	// An access renews retention.
	clock.Advance(20 * 24 * time.Hour)
	db.RecordGeneration(a.ID, testGeneration("paid", paid), 30*24*time.Hour)
	clock.Advance(3 * 24 * time.Hour) // 31 days after creation
	db.ExpireOutputs(100)
	if d := doomed(t, db); !slices.Equal(d, []string{anonOnly, both}) {
		t.Errorf("queue after 31 days %v", d)
	}
	if db.GenerationCount(a.ID) != 1 {
		t.Errorf("%d generations left, want the renewed one", db.GenerationCount(a.ID))
	}
	// The reaper's steps: claim, bytes gone, off the queue.
	if ok, err := db.ClaimDoomed(anonOnly); err != nil || !ok {
		t.Fatalf("ClaimDoomed = %v, %v", ok, err)
	}
	if err := db.DoomedGone(anonOnly); err != nil {
		t.Fatal(err)
	}
	if err := db.ObjectDeleted(anonOnly); err != nil {
		t.Fatal(err)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{both}) {
		t.Errorf("queue after deletion %v", d)
	}
}

// TestClaimDoomedDecidesTheRace walks an output through the reaper's states
// with a reference attempted at each: before the claim it wins; after it,
// it is refused until a regeneration brings the output back; and the
// reaper's last step then leaves the regenerated output alone.
func TestClaimDoomedDecidesTheRace(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	const h = "abababababababababababababababababababababababababababababababab"
	a := mustAccount(t, db, "race@example.com")
	g, _, err := db.RecordGeneration(a.ID, testGeneration("race", h), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteGeneration(a.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{h}) {
		t.Fatalf("queue %v, want the output", d)
	}
	// A reference before the claim wins: the claim sees it.
	if err := db.TouchAnonymousOutput(h, "png", "retro", "1", "v1-key", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.ClaimDoomed(h); err != nil || ok {
		t.Fatalf("claim of a referenced output = %v, %v; want false", ok, err)
	}
	if d := doomed(t, db); len(d) != 0 {
		t.Errorf("queue %v after a lost claim", d)
	}

	// A reference after the claim is refused, and records nothing.
	const h2 = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
	b := mustAccount(t, db, "race2@example.com")
	g, _, err = db.RecordGeneration(b.ID, testGeneration("race2", h2), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteGeneration(b.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := db.ClaimDoomed(h2); err != nil || !ok {
		t.Fatalf("claim = %v, %v; want true", ok, err)
	}
	before := db.GenerationCount(b.ID)
	if _, _, err := db.RecordGeneration(b.ID, testGeneration("again", h2), 24*time.Hour); !errors.Is(err, ErrOutputGone) {
		t.Errorf("reference while deleting: %v, want ErrOutputGone", err)
	}
	if err := db.TouchAnonymousOutput(h2, "png", "retro", "1", "v1-key", 24*time.Hour); !errors.Is(err, ErrOutputGone) {
		t.Errorf("anonymous reference while deleting: %v, want ErrOutputGone", err)
	}
	if db.GenerationCount(b.ID) != before {
		t.Errorf("a refused reference was recorded")
	}
	if err := db.PendingObject(h2, "png", "retro", "1", "v1-key", time.Now().Add(time.Hour)); !errors.Is(err, ErrOutputGone) {
		t.Errorf("regeneration while the bytes may still be going: %v, want ErrOutputGone", err)
	}
	// Once the bytes are gone, a regeneration brings it back; the reaper's
	// last step leaves it.
	if err := db.DoomedGone(h2); err != nil {
		t.Fatal(err)
	}
	if err := db.PendingObject(h2, "png", "retro", "1", "v1-key", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("regeneration after deletion: %v", err)
	}
	if err := db.ObjectDeleted(h2); err != nil {
		t.Fatal(err)
	}
	if used, _ := db.ObjectReferenced(h2); !used {
		t.Error("the regenerated output is not referenced")
	}
	if d := doomed(t, db); len(d) != 0 {
		t.Errorf("queue %v, want the regenerated output off it", d)
	}
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

func TestLegalHoldOutlivesErasureAndRetention(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a := mustAccount(t, db, "held@example.com")
	held := hash64('h')
	db.RecordGeneration(a.ID, testGeneration("reported", held), 24*time.Hour)
	if err := db.HoldObject(held, "png", "retro", "1", "rep_1", clock.Now().Add(365*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	db.BeginErasure(a.ID, ErasureMinor)
	for done := false; !done; {
		done, _ = db.EraseStep(a.ID, 10)
	}
	db.FinishErasure(a.ID)
	clock.Advance(30 * 24 * time.Hour)
	db.ExpireOutputs(100)
	if d := doomed(t, db); len(d) != 0 {
		t.Fatalf("held output queued for deletion: %v", d)
	}
	if ok, _ := db.ObjectReferenced(held); !ok {
		t.Fatalf("held output lost its reference")
	}
	if owners, _ := db.ObjectOwners(held); len(owners) != 0 {
		t.Errorf("a hold is listed as an owner: %v", owners)
	}
	clock.Advance(336 * 24 * time.Hour) // a year and a day after the report
	db.ExpireOutputs(100)
	if d := doomed(t, db); !slices.Equal(d, []string{held}) {
		t.Errorf("after the hold: queue %v", d)
	}
}

func TestRegeneratedBytesMoveTheReference(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "regen@example.com")
	first, second := hash64('r'), hash64('s')
	g1, _, _ := db.RecordGeneration(a.ID, testGeneration("same request", first), time.Hour)
	// A forced regeneration on a non-deterministic backend: new bytes, the
	// same content key.
	g2, created, err := db.RecordGeneration(a.ID, testGeneration("same request", second), time.Hour)
	if err != nil || created || g2.ID != g1.ID || g2.Object != second {
		t.Fatalf("RecordGeneration = %+v, %v, %v; want the same record pointing at the new output", g2, created, err)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{first}) {
		t.Errorf("queue %v, want the replaced output", d)
	}
	if ok, _ := db.ObjectReferenced(second); !ok {
		t.Errorf("the new output is not referenced")
	}
}

func TestPendingReferenceExpiresUnlessOwned(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a := mustAccount(t, db, "pending@example.com")
	owned, orphan := hash64('o'), hash64('p')
	for _, h := range []string{owned, orphan} {
		if err := db.PendingObject(h, "png", "retro", "1", "v1-"+h[:8], clock.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	db.RecordGeneration(a.ID, testGeneration("owned", owned), 30*24*time.Hour)
	clock.Advance(2 * time.Hour)
	if _, err := db.ExpireOutputs(100); err != nil {
		t.Fatal(err)
	}
	if d := doomed(t, db); !slices.Equal(d, []string{orphan}) {
		t.Errorf("queue %v, want only the output nobody claimed", d)
	}
	if owners, _ := db.ObjectOwners(owned); !slices.Equal(owners, []string{a.ID}) {
		t.Errorf("owners %v: a pending reference is not an owner", owners)
	}
}
