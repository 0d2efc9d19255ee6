package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

func testNotifyMailsEachListedActiveAccountOnce(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "a@example.com")
	b := mustAccount(t, db, "b@example.com")
	susp := mustAccount(t, db, "suspended@example.com")
	erasing := mustAccount(t, db, "erasing@example.com")
	if err := db.SetStatus(susp.ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := db.BeginErasure(erasing.ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	job, err := db.CreateNotifyJob(store.NewNotifyJob{
		Subject: "Security notice", Template: "Hello", Rate: 5,
		Accounts: []string{b.ID, a.ID, susp.ID, "acct_gone", erasing.ID, a.ID},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := drainNotify(t, db, job.ID)
	slices.Sort(got)
	if diff := cmp.Diff([]string{"a@example.com", "b@example.com"}, got); diff != "" {
		t.Errorf("mailed (-want +got):\n%s", diff)
	}
	job, err = db.NotifyJob(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := store.NotifyCounts{Total: 5, Sent: 2, Skipped: map[string]int{store.SkipSuspended: 1, store.SkipErasing: 1, store.SkipDeleted: 1}}
	if diff := cmp.Diff(want, job.Counts); diff != "" || job.State != store.NotifyDone || job.Finished.IsZero() {
		t.Errorf("job %s %v (-want +got):\n%s", job.State, job.Finished, diff)
	}
	if _, err := db.NextNotifyRecipient(job.ID); !errors.Is(err, store.ErrJobFinished) {
		t.Errorf("a finished job: %v", err)
	}
	if left, _ := db.UnfinishedNotifyJobs(); len(left) != 0 {
		t.Errorf("unfinished jobs: %+v", left)
	}
}

// An --all job mails every account that existed when it began, listing
// them in batches; accounts created later are not affected.
func testNotifyAllListsAccountsCreatedBeforeTheJob(t *testing.T, h Harness) {
	db, clock := h.open(t)
	var want []string
	for _, e := range []string{"x1@example.com", "x2@example.com", "x3@example.com", "x4@example.com", "x5@example.com"} {
		mustAccount(t, db, e)
		want = append(want, e)
	}
	job, err := db.CreateNotifyJob(store.NewNotifyJob{Subject: "s", Template: "t", Rate: 1, All: true})
	if err != nil {
		t.Fatal(err)
	}
	if job.State != store.NotifyListing {
		t.Fatalf("state %s", job.State)
	}
	if _, err := db.NextNotifyRecipient(job.ID); err == nil {
		t.Error("a job still listing handed out a recipient")
	}
	clock.Advance(time.Second)
	mustAccount(t, db, "later@example.com")
	for i := 0; ; i++ {
		done, err := db.ListNotifyRecipients(job.ID, 2)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			break
		}
		if i > 10 {
			t.Fatal("listing never ends")
		}
	}
	got := drainNotify(t, db, job.ID)
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mailed (-want +got):\n%s", diff)
	}
}

func testCreateNotifyJobValidation(t *testing.T, h Harness) {
	db, _ := h.open(t)
	for name, n := range map[string]store.NewNotifyJob{
		"no subject":   {Template: "t", Rate: 1, All: true},
		"no template":  {Subject: "s", Rate: 1, All: true},
		"zero rate":    {Subject: "s", Template: "t", All: true},
		"no one":       {Subject: "s", Template: "t", Rate: 1},
		"list and all": {Subject: "s", Template: "t", Rate: 1, All: true, Accounts: []string{"acct_x"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := db.CreateNotifyJob(n); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// A recipient whose mail certainly did not leave is next in line again.
func testNotifyRetryKeepsTheRecipientNext(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "a@example.com")
	b := mustAccount(t, db, "b@example.com")
	job, err := db.CreateNotifyJob(store.NewNotifyJob{Subject: "s", Template: "t", Rate: 1, Accounts: []string{a.ID, b.ID}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := db.NextNotifyRecipient(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := db.FinishNotifyRecipient(job.ID, first.AccountID, store.NotifyRetry); err != nil {
			t.Fatal(err)
		}
		again, err := db.NextNotifyRecipient(job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if again.AccountID != first.AccountID {
			t.Fatalf("after a retry %s was claimed, want %s again", again.AccountID, first.AccountID)
		}
	}
	if err := db.FinishNotifyRecipient(job.ID, first.AccountID, store.NotifySent); err != nil {
		t.Fatal(err)
	}
	if rest := drainNotify(t, db, job.ID); len(rest) != 1 || rest[0] == first.Email {
		t.Errorf("then mailed %v", rest)
	}
	job, _ = db.NotifyJob(job.ID)
	if diff := cmp.Diff(store.NotifyCounts{Total: 2, Sent: 2, Skipped: map[string]int{}}, job.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// drainNotify claims every recipient left, reporting each as sent, and
// returns the emails claimed.
func drainNotify(t *testing.T, db Store, jobID string) []string {
	t.Helper()
	var got []string
	for {
		r, err := db.NextNotifyRecipient(jobID)
		if errors.Is(err, store.ErrJobFinished) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Email)
		if err := db.FinishNotifyRecipient(jobID, r.AccountID, store.NotifySent); err != nil {
			t.Fatal(err)
		}
	}
}
