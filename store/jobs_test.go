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
	unfinished, err := db.ClaimJobs(time.Minute)
	if err != nil || len(unfinished) != 2 {
		t.Fatalf("unfinished: %d %v", len(unfinished), err)
	}
	for _, u := range unfinished {
		if u.Request == nil {
			t.Errorf("unfinished %s (owner %q) claimed without its request", u.ID, u.Owner)
		}
	}
}
