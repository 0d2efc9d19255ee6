package store

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const year = 365 * 24 * time.Hour

func mustReport(t *testing.T, db *DB, r Report) Report {
	t.Helper()
	r, err := db.CreateReport(r, year)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// reportFileContains is fileContains plus the report key file.
func reportFileContains(t *testing.T, path string, needle []byte) bool {
	t.Helper()
	data, err := os.ReadFile(path + ".reportkeys")
	if err != nil {
		t.Fatal(err)
	}
	return fileContains(t, path, needle) || bytes.Contains(data, needle)
}

// reportSlot is the report's key slot.
func reportSlot(t *testing.T, db *DB, id string) uint64 {
	t.Helper()
	var rec reportRecord
	err := db.bolt.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketReports), []byte(id), &rec) })
	if err != nil {
		t.Fatal(err)
	}
	return rec.Slot
}

func TestReportHoldExpiryDestroysKeyAndRecord(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	r := mustReport(t, db, Report{Category: "sexual_minors", Source: ReportFromOutput, Prompt: "p", Image: []byte("marker-material")})
	slot := reportSlot(t, db, r.ID)

	clock.Advance(year - time.Second)
	if n, err := db.SweepReports(); err != nil || n != 0 {
		t.Fatalf("sweep before the hold ends = %d, %v", n, err)
	}
	if _, err := db.Report(r.ID); err != nil {
		t.Fatalf("report gone before its hold ended: %v", err)
	}

	clock.Advance(time.Second)
	if n, err := db.SweepReports(); err != nil || n != 1 {
		t.Fatalf("sweep at the hold's end = %d, %v", n, err)
	}
	if _, err := db.Report(r.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("report after its hold: %v, want ErrNotFound", err)
	}
	if list, _ := db.Reports(); len(list) != 0 {
		t.Errorf("listed after the hold: %+v", list)
	}
	// The key is gone, so a copy of the sealed bytes (a freed page, a
	// backup) opens for nobody.
	if _, err := db.reportKeys.get(slot, reportTag(r.ID)); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("report key after the hold: %v, want ErrKeyDestroyed", err)
	}
	if raw, _ := os.ReadFile(path + ".reportkeys"); len(raw) < int(slot+1)*slotSize || !isZero(raw[slot*slotSize:(slot+1)*slotSize]) {
		t.Errorf("the key slot was not zeroed in the file")
	}
	db.bolt.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketReports).Cursor().First(); k != nil {
			t.Errorf("key %q (record or image) left in the reports bucket", k)
		}
		return nil
	})
	if n, err := db.SweepReports(); err != nil || n != 0 {
		t.Errorf("second sweep = %d, %v; want 0 (idempotent)", n, err)
	}
}

func TestReportSweepResumesAfterCrash(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	r := mustReport(t, db, Report{Category: "sexual_minors", Source: ReportFromPrompt, Prompt: "p"})
	keep := mustReport(t, db, Report{Category: "sexual_minors", Source: ReportFromPrompt, Prompt: "q"})
	clock.Advance(year)
	// A sweep that died after destroying the key and before deleting the
	// record leaves an unreadable record: listings skip it, and the next
	// sweep deletes it.
	if err := db.reportKeys.destroy(reportSlot(t, db, r.ID)); err != nil {
		t.Fatal(err)
	}
	list, err := db.Reports()
	if err != nil || len(list) != 1 || list[0].ID != keep.ID {
		t.Fatalf("Reports with a destroyed key = %+v, %v", list, err)
	}
	if _, err := db.Report(r.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Report with a destroyed key: %v, want ErrNotFound", err)
	}
	if n, err := db.SweepReports(); err != nil || n != 2 {
		t.Errorf("sweep = %d, %v; want both reports (their holds ended)", n, err)
	}
}
