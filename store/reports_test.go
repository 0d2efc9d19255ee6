package store

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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

func TestReportsAreSealedAndListedNewestFirst(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	image := append([]byte("\x89PNG marker-image-bytes "), bytes.Repeat([]byte{7}, 64)...)
	first := mustReport(t, db, Report{
		Category: "sexual_minors", Source: ReportFromOutput, AccountID: "acct_marker-account",
		Prompt: "marker-prompt-secret", NegativePrompt: "marker-negative-secret",
		Params: map[string]string{"model": "retro", "seed": "7"}, Image: image, ContentType: "image/png",
	})
	clock.Advance(time.Minute)
	second := mustReport(t, db, Report{Category: "sexual_minors", Source: ReportFromPrompt, ClientIP: "203.0.113.77", Prompt: "marker-prompt-other"})

	if want := clock.Now().Add(year); !second.HoldUntil.Equal(want) {
		t.Errorf("HoldUntil = %v, want %v", second.HoldUntil, want)
	}
	if first.ImageSize != len(image) || len(first.ImageSHA256) != 64 {
		t.Errorf("image digest not stamped: %d bytes, %q", first.ImageSize, first.ImageSHA256)
	}

	list, err := db.Reports()
	if err != nil {
		t.Fatal(err)
	}
	listed := first
	listed.Image = nil // listings carry no image bytes
	if diff := cmp.Diff([]Report{second, listed}, list, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Reports (-want +got):\n%s", diff)
	}
	got, err := db.Report(first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, got); diff != "" {
		t.Errorf("Report (-want +got):\n%s", diff)
	}
	if _, err := db.Report("rpt_nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing report: %v, want ErrNotFound", err)
	}
	if _, err := db.Report(first.ID + "\x00image"); !errors.Is(err, ErrNotFound) {
		t.Errorf("an image key read as a report: %v", err)
	}

	db.bolt.Sync()
	for _, marker := range []string{"marker-prompt", "marker-negative", "marker-image-bytes", "marker-account", "203.0.113.77"} {
		if reportFileContains(t, path, []byte(marker)) {
			t.Errorf("%q is readable in the store files", marker)
		}
	}
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

func TestReportsSurviveErasure(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "reported@example.com")
	if _, _, err := db.RecordGeneration(a.ID, testGeneration("earlier prompt", hash64('c')), time.Hour); err != nil {
		t.Fatal(err)
	}
	r := mustReport(t, db, Report{Category: "sexual_minors", Source: ReportFromPrompt, AccountID: a.ID, Prompt: "held prompt"})
	if err := db.SetStatus(a.ID, StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BeginErasure(a.ID, ErasureByUser); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		var err error
		if done, err = db.EraseStep(a.ID, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FinishErasure(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Account(a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("account after erasure: %v", err)
	}
	got, err := db.Report(r.ID)
	if err != nil {
		t.Fatalf("report after erasure: %v", err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Errorf("report changed by erasure (-want +got):\n%s", diff)
	}
}

func TestCreateReportRefusesIncompleteReports(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	for _, tc := range []struct {
		name string
		r    Report
		hold time.Duration
	}{
		{"no category", Report{Source: ReportFromPrompt}, year},
		{"bad source", Report{Category: "sexual_minors", Source: "upload"}, year},
		{"no hold", Report{Category: "sexual_minors", Source: ReportFromPrompt}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := db.CreateReport(tc.r, tc.hold); err == nil {
				t.Error("accepted")
			}
		})
	}
	if list, _ := db.Reports(); len(list) != 0 {
		t.Errorf("refused reports were stored: %+v", list)
	}
}
