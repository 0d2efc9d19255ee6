package store

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSecurityLogRetention(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	a := mustAccount(t, db, "sec@example.com")
	const oldIP, newIP = "203.0.113.77", "198.51.100.42"
	if err := db.LogSecurityEvent(SecurityEvent{Kind: "login", AccountID: a.ID, IP: oldIP, UserAgent: "OldBrowser/1"}); err != nil {
		t.Fatal(err)
	}
	db.LogSecurityEvent(SecurityEvent{Kind: "login_failed", IP: oldIP})
	clock.Advance(20 * 24 * time.Hour)
	db.LogSecurityEvent(SecurityEvent{Kind: "password_changed", AccountID: a.ID, IP: newIP, UserAgent: "NewBrowser/2"})
	db.bolt.Sync()
	if fileContains(t, path, []byte(oldIP)) || fileContains(t, path, []byte("OldBrowser")) {
		t.Errorf("an IP or user agent is readable in the store files")
	}

	got, err := db.SecurityEvents(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []SecurityEvent{
		{Time: clock.Now().Add(-20 * 24 * time.Hour), Kind: "login", AccountID: a.ID, IP: oldIP, UserAgent: "OldBrowser/1"},
		{Time: clock.Now(), Kind: "password_changed", AccountID: a.ID, IP: newIP, UserAgent: "NewBrowser/2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// 31 days after the first events: those two are due, the third not.
	clock.Advance(11 * 24 * time.Hour)
	n, err := db.SweepSecurityLog(30 * 24 * time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("sweep deleted %d, %v; want 2", n, err)
	}
	if n, _ := db.SweepSecurityLog(30 * 24 * time.Hour); n != 0 {
		t.Errorf("second sweep deleted %d, want 0", n)
	}
	got, _ = db.SecurityEvents(a.ID)
	if diff := cmp.Diff(want[1:], got); diff != "" {
		t.Errorf("events after sweep (-want +got):\n%s", diff)
	}
	var all int
	db.AllSecurityEvents(func(SecurityEvent) error { all++; return nil })
	if all != 1 {
		t.Errorf("%d events in the log, want 1", all)
	}
	// The swept day's key is gone: a copy of the old row (as bbolt's freed
	// pages keep it) can no longer be opened.
	oldDay := dayOf(clock.Now().Add(-31 * 24 * time.Hour))
	if _, err := db.dayKeys.get(oldDay, dayTag(oldDay)); err == nil {
		t.Errorf("the day key of swept events still exists")
	}
	newDay := dayOf(clock.Now().Add(-11 * 24 * time.Hour))
	if _, err := db.dayKeys.get(newDay, dayTag(newDay)); err != nil {
		t.Errorf("the day key of kept events was destroyed: %v", err)
	}
}

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
