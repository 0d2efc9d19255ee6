package store

import (
	"errors"
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
