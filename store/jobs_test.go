package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

// A job's request (its prompt) is sealed in the file; an anonymous job
// opens only with its own key; the same idempotency key is the same job.
func TestJobsSealedKeyedAndIdempotent(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	a := mustAccount(t, db, "jobs@example.com")
	body := []byte(`{"prompt":"job-prompt-marker-7731"}`)
	j, created, err := db.CreateJob(Job{ID: NewJobID(), Owner: a.ID, Request: body, IdemKey: "k1"}, nil)
	if err != nil || !created || j.Status != JobQueued {
		t.Fatalf("create: %+v %v %v", j, created, err)
	}
	again, created, err := db.CreateJob(Job{ID: NewJobID(), Owner: a.ID, Request: body, IdemKey: "k1"}, nil)
	if err != nil || created || again.ID != j.ID {
		t.Errorf("same idempotency key: %s created=%v %v, want %s", again.ID, created, err, j.ID)
	}
	anonKey := sha256.Sum256([]byte("token"))
	anon, _, err := db.CreateJob(Job{ID: NewJobID(), Request: []byte(`{"prompt":"anon-prompt-marker-4410"}`)}, anonKey[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{"job-prompt-marker-7731", "anon-prompt-marker-4410"} {
		if fileContains(t, path, []byte(needle)) {
			t.Errorf("%q is readable in the store files", needle)
		}
	}
	got, err := db.Job(j.ID, nil)
	if err != nil || !bytes.Equal(got.Request, body) {
		t.Errorf("owner's job: %q %v", got.Request, err)
	}
	wrong := sha256.Sum256([]byte("another token"))
	if _, err := db.Job(anon.ID, wrong[:]); !errors.Is(err, ErrNotFound) {
		t.Errorf("anonymous job with the wrong key: %v", err)
	}
	if got, err := db.Job(anon.ID, anonKey[:]); err != nil || !bytes.Contains(got.Request, []byte("anon-prompt")) {
		t.Errorf("anonymous job with its key: %v", err)
	}
	unfinished, err := db.UnfinishedJobs()
	if err != nil || len(unfinished) != 2 {
		t.Fatalf("unfinished: %d %v", len(unfinished), err)
	}
	for _, u := range unfinished {
		if (u.Owner == "") != (u.Request == nil) {
			t.Errorf("unfinished %s: owner %q, request %q", u.ID, u.Owner, u.Request)
		}
	}
}

// Jobs go with their account's erasure, and finished ones after their
// keep time; unfinished ones are never swept.
func TestJobsErasedWithTheAccountAndSwept(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	gone := mustAccount(t, db, "gone-jobs@example.com")
	kept := mustAccount(t, db, "kept-jobs@example.com")
	j, _, _ := db.CreateJob(Job{ID: NewJobID(), Owner: gone.ID, Request: []byte(`{}`), IdemKey: "x"}, nil)
	done, _, _ := db.CreateJob(Job{ID: NewJobID(), Owner: kept.ID, Request: []byte(`{}`)}, nil)
	running, _, _ := db.CreateJob(Job{ID: NewJobID(), Owner: kept.ID, Request: []byte(`{}`)}, nil)
	db.UpdateJob(done.ID, func(j *Job) error { j.Status = JobSucceeded; return nil })
	db.UpdateJob(running.ID, func(j *Job) error { j.Status = JobRunning; return nil })

	if _, err := db.BeginErasure(gone.ID, ErasureByUser); err != nil {
		t.Fatal(err)
	}
	for finished := false; !finished; {
		var err error
		if finished, err = db.EraseStep(gone.ID, 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Job(j.ID, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("an erased account's job: %v", err)
	}
	if js, _ := db.AccountJobs(kept.ID); len(js) != 2 {
		t.Errorf("the other account has %d jobs, want 2", len(js))
	}

	clock.Advance(2 * time.Hour)
	if n, err := db.SweepJobs(clock.Now().Add(-time.Hour)); err != nil || n != 1 {
		t.Errorf("swept %d (%v), want the finished one", n, err)
	}
	if _, err := db.Job(running.ID, nil); err != nil {
		t.Errorf("the running job was swept: %v", err)
	}
}
