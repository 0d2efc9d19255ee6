package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

func testDSARsOverdueFirstThenByDeadline(t *testing.T, h Harness) {
	db, clock := h.open(t) // today: 2026-11-23
	// Added in an order that is none of the orders checked.
	soon := mustDSAR(t, db, store.NewDSAR{Email: "soon@example.com", Kind: store.DSARAccess, Received: date("2026-11-10")})
	today := mustDSAR(t, db, store.NewDSAR{Email: "today@example.com", Kind: store.DSARDeletion})
	late := mustDSAR(t, db, store.NewDSAR{Email: "late@example.com", Kind: store.DSARObjection, Received: date("2026-10-20")})
	closed := mustDSAR(t, db, store.NewDSAR{Email: "closed@example.com", Kind: store.DSARCorrection, Received: date("2026-09-01")})
	latest := mustDSAR(t, db, store.NewDSAR{Email: "Latest@Example.com ", Kind: store.DSAROther, Received: date("2026-10-01")})
	edge := mustDSAR(t, db, store.NewDSAR{Email: "edge@example.com", Kind: store.DSARAccess, Received: date("2026-10-24")})
	if _, err := db.CloseDSAR(closed.ID, "answered by post"); err != nil {
		t.Fatal(err)
	}

	want := []dsarRow{
		{latest.ID, "latest@example.com", "2026-10-31", -23, true, true},
		{late.ID, "late@example.com", "2026-11-19", -4, true, true},
		{edge.ID, "edge@example.com", "2026-11-23", 0, false, true}, // the deadline is today: not yet overdue
		{soon.ID, "soon@example.com", "2026-12-10", 17, false, true},
		{today.ID, "today@example.com", "2026-12-23", 30, false, true},
	}
	if diff := cmp.Diff(want, dsarRows(t, db, clock.Now(), false)); diff != "" {
		t.Errorf("open requests (-want +got):\n%s", diff)
	}
	withClosed := append(append([]dsarRow{}, want...), dsarRow{closed.ID, "closed@example.com", "2026-10-01", -53, false, false})
	if diff := cmp.Diff(withClosed, dsarRows(t, db, clock.Now(), true)); diff != "" {
		t.Errorf("all requests (-want +got):\n%s", diff)
	}

	// A day later the one due today is overdue, and listed before the
	// ones that are not.
	clock.Advance(24 * time.Hour)
	rows := dsarRows(t, db, clock.Now(), false)
	if rows[2].ID != edge.ID || !rows[2].Overdue || rows[2].DaysLeft != -1 || rows[3].Overdue {
		t.Errorf("a day later: %+v", rows)
	}
}

func testDSARValidation(t *testing.T, h Harness) {
	db, _ := h.open(t)
	for name, n := range map[string]store.NewDSAR{
		"no email":    {Kind: store.DSARAccess},
		"bad kind":    {Email: "a@example.com", Kind: "everything"},
		"future date": {Email: "a@example.com", Kind: store.DSARAccess, Received: date("2026-11-24")},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := db.AddDSAR(n); err == nil {
				t.Error("accepted")
			}
		})
	}
	rs, _ := db.DSARs(true)
	if len(rs) != 0 {
		t.Errorf("refused requests were stored: %+v", rs)
	}
}

func testCloseDSAR(t *testing.T, h Harness) {
	db, clock := h.open(t)
	r := mustDSAR(t, db, store.NewDSAR{Email: "a@example.com", Kind: store.DSARAccess, Note: "asked by reply to a receipt"})
	clock.Advance(3 * time.Hour)
	got, err := db.CloseDSAR(r.ID, "export sent")
	if err != nil {
		t.Fatal(err)
	}
	if got.IsOpen() || !got.Closed.Equal(clock.Now()) || got.CloseNote != "export sent" || got.Note != "asked by reply to a receipt" {
		t.Errorf("closed request: %+v", got)
	}
	if _, err := db.CloseDSAR(r.ID, ""); !errors.Is(err, store.ErrConflict) {
		t.Errorf("closing twice: %v, want store.ErrConflict", err)
	}
	if _, err := db.CloseDSAR("dsar-999", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("closing an unknown request: %v, want store.ErrNotFound", err)
	}
	if open := dsarRows(t, db, clock.Now(), false); len(open) != 0 {
		t.Errorf("closed request still listed as open: %+v", open)
	}
}

func mustDSAR(t *testing.T, db Store, n store.NewDSAR) store.DSAR {
	t.Helper()
	r, err := db.AddDSAR(n)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func date(s string) time.Time {
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return d
}

// dsarRow is what an operator reads in the list.
type dsarRow struct {
	ID       string
	Email    string
	Deadline string
	DaysLeft int
	Overdue  bool
	Open     bool
}

func dsarRows(t *testing.T, db Store, now time.Time, closed bool) []dsarRow {
	t.Helper()
	rs, err := db.DSARs(closed)
	if err != nil {
		t.Fatal(err)
	}
	var out []dsarRow
	for _, r := range rs {
		out = append(out, dsarRow{r.ID, r.Email, r.Deadline.Format(time.DateOnly), r.DaysLeft(now), r.Overdue(now), r.IsOpen()})
	}
	return out
}
