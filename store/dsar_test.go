package store

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func mustDSAR(t *testing.T, db *DB, n NewDSAR) DSAR {
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

func dsarRows(t *testing.T, db *DB, closed bool) []dsarRow {
	t.Helper()
	rs, err := db.DSARs(closed)
	if err != nil {
		t.Fatal(err)
	}
	var out []dsarRow
	for _, r := range rs {
		out = append(out, dsarRow{r.ID, r.Email, r.Deadline.Format(time.DateOnly), r.DaysLeft(db.now()), r.Overdue(db.now()), r.IsOpen()})
	}
	return out
}

func TestDSARsOverdueFirstThenByDeadline(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t) // today: 2026-11-23
	// Added in an order that is none of the orders checked.
	soon := mustDSAR(t, db, NewDSAR{Email: "soon@example.com", Kind: DSARAccess, Received: date("2026-11-10")})
	today := mustDSAR(t, db, NewDSAR{Email: "today@example.com", Kind: DSARDeletion})
	late := mustDSAR(t, db, NewDSAR{Email: "late@example.com", Kind: DSARObjection, Received: date("2026-10-20")})
	closed := mustDSAR(t, db, NewDSAR{Email: "closed@example.com", Kind: DSARCorrection, Received: date("2026-09-01")})
	latest := mustDSAR(t, db, NewDSAR{Email: "Latest@Example.com ", Kind: DSAROther, Received: date("2026-10-01")})
	edge := mustDSAR(t, db, NewDSAR{Email: "edge@example.com", Kind: DSARAccess, Received: date("2026-10-24")})
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
	if diff := cmp.Diff(want, dsarRows(t, db, false)); diff != "" {
		t.Errorf("open requests (-want +got):\n%s", diff)
	}
	withClosed := append(append([]dsarRow{}, want...), dsarRow{closed.ID, "closed@example.com", "2026-10-01", -53, false, false})
	if diff := cmp.Diff(withClosed, dsarRows(t, db, true)); diff != "" {
		t.Errorf("all requests (-want +got):\n%s", diff)
	}

	// A day later the one due today is overdue, and listed before the
	// ones that are not.
	clock.Advance(24 * time.Hour)
	rows := dsarRows(t, db, false)
	if rows[2].ID != edge.ID || !rows[2].Overdue || rows[2].DaysLeft != -1 || rows[3].Overdue {
		t.Errorf("a day later: %+v", rows)
	}
}

func TestDSARValidation(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	for name, n := range map[string]NewDSAR{
		"no email":    {Kind: DSARAccess},
		"bad kind":    {Email: "a@example.com", Kind: "everything"},
		"future date": {Email: "a@example.com", Kind: DSARAccess, Received: date("2026-11-24")},
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

func TestCloseDSAR(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	r := mustDSAR(t, db, NewDSAR{Email: "a@example.com", Kind: DSARAccess, Note: "asked by reply to a receipt"})
	clock.Advance(3 * time.Hour)
	got, err := db.CloseDSAR(r.ID, "export sent")
	if err != nil {
		t.Fatal(err)
	}
	if got.IsOpen() || !got.Closed.Equal(clock.Now()) || got.CloseNote != "export sent" || got.Note != "asked by reply to a receipt" {
		t.Errorf("closed request: %+v", got)
	}
	if _, err := db.CloseDSAR(r.ID, ""); !errors.Is(err, ErrConflict) {
		t.Errorf("closing twice: %v, want ErrConflict", err)
	}
	if _, err := db.CloseDSAR("dsar-999", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("closing an unknown request: %v, want ErrNotFound", err)
	}
	if open := dsarRows(t, db, false); len(open) != 0 {
		t.Errorf("closed request still listed as open: %+v", open)
	}
}

// The requester's email and the notes are personal data: never in the
// file in the clear, and unrecoverable once the retention after closing
// ends — also from a backup copy taken before.
func TestDSAREmailSealedAndDestroyed(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	const email, note = "dsar-marker-7f3a@example.com", "note-marker-c41d"
	r := mustDSAR(t, db, NewDSAR{Email: email, Kind: DSARDeletion, Note: note})
	other := mustDSAR(t, db, NewDSAR{Email: "still-open@example.com", Kind: DSARAccess})
	for _, s := range []string{email, note, "still-open@example.com"} {
		if fileContains(t, path, []byte(s)) {
			t.Errorf("%q is readable in the store's files", s)
		}
	}
	if got, _ := db.DSAR(r.ID); got.Email != email || got.Note != note {
		t.Fatalf("the operator cannot read the request: %+v", got)
	}
	backup, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := db.CloseDSAR(r.ID, "done"); err != nil {
		t.Fatal(err)
	}
	const keepPersonal, keepRecord = 30 * 24 * time.Hour, 3 * 365 * 24 * time.Hour
	clock.Advance(keepPersonal - time.Second)
	if n, _, err := db.ExpireDSARs(keepPersonal, keepRecord); err != nil || n != 0 {
		t.Fatalf("before the retention ended: erased %d, %v", n, err)
	}
	clock.Advance(time.Second)
	if n, d, err := db.ExpireDSARs(keepPersonal, keepRecord); err != nil || n != 1 || d != 0 {
		t.Fatalf("expire: erased %d deleted %d, %v", n, d, err)
	}
	got, err := db.DSAR(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := DSAR{ID: r.ID, Kind: DSARDeletion, Received: r.Received, Deadline: r.Deadline, Closed: got.Closed, Erased: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("erased request (-want +got):\n%s", diff)
	}
	if _, err := db.keys.get(dsarSlot(t, db, r.ID), dsarTag(r.ID)); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("key after erasure: %v, want ErrKeyDestroyed", err)
	}
	// The backup still holds the sealed bytes, and they no longer open.
	if bytes.Contains(backup, []byte(email)) {
		t.Error("the backup holds the email in the clear")
	}
	if got, _ := db.DSAR(other.ID); got.Email != "still-open@example.com" {
		t.Errorf("an open request was touched: %+v", got)
	}

	// Idempotent, then the record itself goes after its own retention.
	if n, d, err := db.ExpireDSARs(keepPersonal, keepRecord); err != nil || n+d != 0 {
		t.Errorf("second expire: erased %d deleted %d, %v", n, d, err)
	}
	clock.Advance(keepRecord)
	if _, d, err := db.ExpireDSARs(keepPersonal, keepRecord); err != nil || d != 1 {
		t.Errorf("record retention: deleted %d, %v", d, err)
	}
	if _, err := db.DSAR(r.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("record after its retention: %v", err)
	}
	if _, _, err := db.ExpireDSARs(0, keepRecord); err == nil {
		t.Error("a zero retention was accepted")
	}
}

func dsarSlot(t *testing.T, db *DB, id string) uint64 {
	t.Helper()
	var rec dsarRecord
	db.bolt.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketDSAR), []byte(id), &rec) })
	if rec.Slot == 0 {
		t.Fatalf("no record %s", id)
	}
	return rec.Slot
}
