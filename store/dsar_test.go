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
