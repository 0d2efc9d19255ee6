package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSweepRemovesOnlyWhatIsDue(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a := mustAccount(t, db, "sweep@example.com")
	db.AddCredit(a.ID, Credit{Kind: KindGrant, Amount: 10, Ref: "g"})
	short := SessionPolicy{Idle: time.Hour, Absolute: 2 * time.Hour}
	long := SessionPolicy{Idle: 40 * 24 * time.Hour, Absolute: 60 * 24 * time.Hour}
	db.CreateSession(a.ID, short)
	kept, _, _ := db.CreateSession(a.ID, long)
	db.CreatePasswordReset(a.ID, 30*time.Minute)
	db.LogSecurityEvent(SecurityEvent{Kind: "login", AccountID: a.ID, IP: "192.0.2.1"})
	db.Reserve(a.ID, 2, "stuck")

	clock.Advance(31 * 24 * time.Hour)
	db.LogSecurityEvent(SecurityEvent{Kind: "login", AccountID: a.ID, IP: "192.0.2.2"})
	fresh, _ := db.Reserve(a.ID, 1, "in flight")

	rep, err := db.Sweep(t.Context(), Retention{})
	if err != nil {
		t.Fatal(err)
	}
	want := SweepReport{SecurityEvents: 1, Sessions: 1, EmailTokens: 1, Holds: 1}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("sweep report (-want +got):\n%s", diff)
	}
	if again, _ := db.Sweep(t.Context(), Retention{}); again != (SweepReport{}) {
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
