package storetest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/imagegate/imagegate/store"
)

func testReportsAreSealedAndListedNewestFirst(t *testing.T, h Harness) {
	db, clock := h.open(t)
	image := append([]byte("\x89PNG marker-image-bytes "), bytes.Repeat([]byte{7}, 64)...)
	first := mustReport(t, db, store.Report{
		Category: "sexual_minors", Source: store.ReportFromOutput, AccountID: "acct_marker-account",
		Prompt: "marker-prompt-secret", NegativePrompt: "marker-negative-secret",
		Params: map[string]string{"model": "retro", "seed": "7"}, Image: image, ContentType: "image/png",
	})
	clock.Advance(time.Minute)
	second := mustReport(t, db, store.Report{Category: "sexual_minors", Source: store.ReportFromPrompt, ClientIP: "203.0.113.77", Prompt: "marker-prompt-other"})

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
	if diff := cmp.Diff([]store.Report{second, listed}, list, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Reports (-want +got):\n%s", diff)
	}
	got, err := db.Report(first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, got); diff != "" {
		t.Errorf("Report (-want +got):\n%s", diff)
	}
	if _, err := db.Report("rpt_nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing report: %v, want store.ErrNotFound", err)
	}
	if _, err := db.Report(first.ID + "\x00image"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an image key read as a report: %v", err)
	}

	for _, marker := range []string{"marker-prompt", "marker-negative", "marker-image-bytes", "marker-account", "203.0.113.77"} {
		if h.Contains(t, db, []byte(marker)) {
			t.Errorf("%q is readable in the store files", marker)
		}
	}
}

func testReportsSurviveErasure(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "reported@example.com")
	if _, _, err := db.RecordGeneration(a.ID, testGeneration("earlier prompt", hash64('c')), time.Hour); err != nil {
		t.Fatal(err)
	}
	r := mustReport(t, db, store.Report{Category: "sexual_minors", Source: store.ReportFromPrompt, AccountID: a.ID, Prompt: "held prompt"})
	if err := db.SetStatus(a.ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BeginErasure(a.ID, store.ErasureByUser); err != nil {
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
	if _, err := db.Account(a.ID); !errors.Is(err, store.ErrNotFound) {
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

func testCreateReportRefusesIncompleteReports(t *testing.T, h Harness) {
	db, _ := h.open(t)
	for _, tc := range []struct {
		name string
		r    store.Report
		hold time.Duration
	}{
		{"no category", store.Report{Source: store.ReportFromPrompt}, year},
		{"bad source", store.Report{Category: "sexual_minors", Source: "upload"}, year},
		{"no hold", store.Report{Category: "sexual_minors", Source: store.ReportFromPrompt}, 0},
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

const year = 365 * 24 * time.Hour

func mustReport(t *testing.T, db Store, r store.Report) store.Report {
	t.Helper()
	r, err := db.CreateReport(r, year)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
