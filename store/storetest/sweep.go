package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

func testSweepRemovesOnlyWhatIsDue(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "sweep@example.com")
	db.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: 10, Ref: "g"})
	short := store.SessionPolicy{Idle: time.Hour, Absolute: 2 * time.Hour}
	long := store.SessionPolicy{Idle: 40 * 24 * time.Hour, Absolute: 60 * 24 * time.Hour}
	db.CreateSession(a.ID, short)
	kept, _, _ := db.CreateSession(a.ID, long)
	db.CreatePasswordReset(a.ID, 30*time.Minute)
	db.LogSecurityEvent(store.SecurityEvent{Kind: "login", AccountID: a.ID, IP: "192.0.2.1"})
	db.Reserve(a.ID, 2, "stuck")

	clock.Advance(31 * 24 * time.Hour)
	db.LogSecurityEvent(store.SecurityEvent{Kind: "login", AccountID: a.ID, IP: "192.0.2.2"})
	fresh, _ := db.Reserve(a.ID, 1, "in flight")

	rep, err := db.Sweep(t.Context(), store.Retention{})
	if err != nil {
		t.Fatal(err)
	}
	want := store.SweepReport{SecurityEvents: 1, Sessions: 1, EmailTokens: 1, Holds: 1}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("sweep report (-want +got):\n%s", diff)
	}
	if again, _ := db.Sweep(t.Context(), store.Retention{}); again != (store.SweepReport{}) {
		t.Errorf("second sweep removed %+v, want nothing", again)
	}
	if _, err := db.ValidateSession(kept); err != nil {
		t.Errorf("a live session was swept: %v", err)
	}
	if got, _ := db.Account(a.ID); got.Held != 1 || got.Credits != 10 {
		t.Errorf("credits %d held %d; want 10 held 1", got.Credits, got.Held)
	}
	if _, err := db.CommitHold(fresh.ID); err != nil {
		t.Errorf("fresh hold: %v", err)
	}
	events, _ := db.SecurityEvents(a.ID)
	if len(events) != 1 || events[0].IP != "192.0.2.2" {
		t.Errorf("events after sweep: %+v", events)
	}
}
