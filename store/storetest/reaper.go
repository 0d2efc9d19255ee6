package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// TestClaimDoomedDecidesTheRace walks an output through the reaper's states
// with a reference attempted at each: before the claim it wins; after it,
// it is refused until a regeneration brings the output back; and the
// reaper's last step then leaves the regenerated output alone.
func testClaimDoomedDecidesTheRace(t *testing.T, hs Harness) {
	db, _ := hs.open(t)
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
	if _, _, err := db.RecordGeneration(b.ID, testGeneration("again", h2), 24*time.Hour); !errors.Is(err, store.ErrOutputGone) {
		t.Errorf("reference while deleting: %v, want store.ErrOutputGone", err)
	}
	if err := db.TouchAnonymousOutput(h2, "png", "retro", "1", "v1-key", 24*time.Hour); !errors.Is(err, store.ErrOutputGone) {
		t.Errorf("anonymous reference while deleting: %v, want store.ErrOutputGone", err)
	}
	if db.GenerationCount(b.ID) != before {
		t.Errorf("a refused reference was recorded")
	}
	if err := db.PendingObject(h2, "png", "retro", "1", "v1-key", time.Now().Add(time.Hour)); !errors.Is(err, store.ErrOutputGone) {
		t.Errorf("regeneration while the bytes may still be going: %v, want store.ErrOutputGone", err)
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
