package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

func testSharedOutputsLiveWhileReferenced(t *testing.T, h Harness) {
	db, _ := h.open(t)
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

	var got []store.Generation
	db.Generations(a.ID, func(g store.Generation) error { got = append(got, g); return nil })
	if len(got) != 2 || got[0].Prompt != "marker-prompt-one" || got[1].Prompt != "marker-prompt-two" {
		t.Fatalf("history %+v", got)
	}
	if h.Contains(t, db, []byte("marker-prompt")) {
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
	if err := db.DeleteGeneration(a.ID, "gen_missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting a missing generation: %v", err)
	}
}

func testOutputsExpireByRetention(t *testing.T, h Harness) {
	db, clock := h.open(t)
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

func testLegalHoldOutlivesErasureAndRetention(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "held@example.com")
	held := hash64('h')
	db.RecordGeneration(a.ID, testGeneration("reported", held), 24*time.Hour)
	if err := db.HoldObject(held, "png", "retro", "1", "rep_1", clock.Now().Add(365*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	db.BeginErasure(a.ID, store.ErasureMinor)
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

func testRegeneratedBytesMoveTheReference(t *testing.T, h Harness) {
	db, _ := h.open(t)
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

func testPendingReferenceExpiresUnlessOwned(t *testing.T, h Harness) {
	db, clock := h.open(t)
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

func testGeneration(prompt, object string) store.Generation {
	return store.Generation{
		Prompt: prompt, Model: "retro", ModelVersion: "1", Width: 256, Height: 256, Seed: 7,
		Object: object, Ext: "png", ContentKey: fmt.Sprintf("v1-%x", sha256.Sum256([]byte(prompt))),
	}
}

func hash64(c byte) string { return string(bytes.Repeat([]byte{c}, 64)) }

func doomed(t *testing.T, db Store) []string {
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
