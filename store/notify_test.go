package store

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

// drainNotify claims every recipient left, reporting each as sent, and
// returns the emails claimed.
func drainNotify(t *testing.T, db *DB, jobID string) []string {
	t.Helper()
	var got []string
	for {
		r, err := db.NextNotifyRecipient(jobID)
		if errors.Is(err, ErrJobFinished) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Email)
		if err := db.FinishNotifyRecipient(jobID, r.AccountID, NotifySent); err != nil {
			t.Fatal(err)
		}
	}
}

func notifyRows(db *DB) int {
	n := 0
	db.bolt.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketNotifyRecipients).Stats().KeyN
		return nil
	})
	return n
}

// A recipient claimed by a run that stopped before reporting back may or
// may not have received the mail: it is counted as interrupted and never
// mailed again; the job survives a reopen of the store.
func TestNotifyResumesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	db, err := Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range []string{"r1@example.com", "r2@example.com", "r3@example.com", "r4@example.com"} {
		ids = append(ids, mustAccount(t, db, e).ID)
	}
	job, err := db.CreateNotifyJob(NewNotifyJob{Subject: "s", Template: "t", Rate: 1, Accounts: ids})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	first, err := db.NextNotifyRecipient(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	seen[first.Email]++
	if err := db.FinishNotifyRecipient(job.ID, first.AccountID, NotifySent); err != nil {
		t.Fatal(err)
	}
	crashed, err := db.NextNotifyRecipient(job.ID) // claimed, never reported
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	left, err := db.UnfinishedNotifyJobs()
	if err != nil || len(left) != 1 || left[0].ID != job.ID || left[0].Counts.Sending != 1 {
		t.Fatalf("unfinished after reopen: %+v, %v", left, err)
	}
	for _, e := range drainNotify(t, db, job.ID) {
		seen[e]++
	}
	if seen[crashed.Email] != 0 {
		t.Errorf("the interrupted recipient %s was claimed again", crashed.Email)
	}
	for e, n := range seen {
		if n != 1 {
			t.Errorf("%s claimed %d times", e, n)
		}
	}
	if len(seen) != 3 {
		t.Errorf("claimed %v, want the 3 not interrupted", seen)
	}
	job, _ = db.NotifyJob(job.ID)
	if diff := cmp.Diff(NotifyCounts{Total: 4, Sent: 3, Interrupted: 1, Skipped: map[string]int{}}, job.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

func TestNotifyFailuresAndErasure(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "a@example.com")
	b := mustAccount(t, db, "b@example.com")
	c := mustAccount(t, db, "c@example.com")
	job, err := db.CreateNotifyJob(NewNotifyJob{Subject: "s", Template: "t", Rate: 1, Accounts: []string{a.ID, b.ID, c.ID}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := db.NextNotifyRecipient(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.FinishNotifyRecipient(job.ID, r.AccountID, NotifyFailed); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishNotifyRecipient(job.ID, r.AccountID, NotifySent); !errors.Is(err, ErrConflict) {
		t.Errorf("reporting twice: %v, want ErrConflict", err)
	}
	// Erasing an account takes it out of the job and out of the bucket.
	gone := b.ID
	if r.AccountID == b.ID {
		gone = c.ID
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return forgetNotifyRecipient(tx, gone) }); err != nil {
		t.Fatal(err)
	}
	if got := bucketsMention(t, db, gone); slices.Contains(got, "notify_recipients") || slices.Contains(got, "notify_jobs") {
		t.Errorf("after forgetting, the account is mentioned in %v", got)
	}
	drainNotify(t, db, job.ID)
	job, _ = db.NotifyJob(job.ID)
	if diff := cmp.Diff(NotifyCounts{Total: 3, Sent: 1, Failed: 1, Skipped: map[string]int{SkipDeleted: 1}}, job.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}
