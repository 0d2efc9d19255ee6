package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// jobStore is asynchronous generation jobs.
type jobStore interface {
	CreateJob(j store.Job, anonKey []byte) (store.Job, bool, error)
	Job(id string, anonKey []byte) (store.Job, error)
	UpdateJob(id string, fn func(*store.Job) error) (store.Job, error)
	ClaimJobs(ttl time.Duration) ([]store.Job, error)
	RenewJobLeases(ids []string, ttl time.Duration) ([]string, error)
	JobLeaseHolder() string
	SweepJobs(cutoff time.Time) (int, error)
	AccountJobs(accountID string) ([]store.Job, error)
}

// A job's request (its prompt) is sealed; an anonymous job opens only with
// its own key; the same idempotency key of one owner is the same job, of
// another owner another job.
func testJobsSealedKeyedAndIdempotent(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "jobs@example.com")
	b := mustAccount(t, db, "jobs-b@example.com")
	body := []byte(`{"prompt":"job-prompt-marker-7731"}`)
	j, created, err := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: a.ID, Request: body, IdemKey: "k1", Holds: []string{"hold_x"}}, nil)
	if err != nil || !created || j.Status != store.JobQueued {
		t.Fatalf("create: %+v %v %v", j, created, err)
	}
	again, created, err := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: a.ID, Request: body, IdemKey: "k1"}, nil)
	if err != nil || created || again.ID != j.ID {
		t.Errorf("same idempotency key: %s created=%v %v, want %s", again.ID, created, err, j.ID)
	}
	other, created, err := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: b.ID, Request: body, IdemKey: "k1"}, nil)
	if err != nil || !created || other.ID == j.ID {
		t.Errorf("another owner's key k1: %s created=%v %v", other.ID, created, err)
	}
	anonKey := sha256.Sum256([]byte("token"))
	anon, _, err := db.CreateJob(store.Job{ID: store.NewJobID(), Request: []byte(`{"prompt":"anon-prompt-marker-4410"}`)}, anonKey[:])
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{"job-prompt-marker-7731", "anon-prompt-marker-4410"} {
		if h.Contains(t, db, []byte(needle)) {
			t.Errorf("%q is readable in the store", needle)
		}
	}
	got, err := db.Job(j.ID, nil)
	if err != nil || !bytes.Equal(got.Request, body) || !slices.Equal(got.Holds, []string{"hold_x"}) {
		t.Errorf("owner's job: %q holds %v %v", got.Request, got.Holds, err)
	}
	wrong := sha256.Sum256([]byte("another token"))
	if _, err := db.Job(anon.ID, wrong[:]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("anonymous job with the wrong key: %v", err)
	}
	if _, err := db.Job(anon.ID, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("anonymous job without a key: %v", err)
	}
	if got, err := db.Job(anon.ID, anonKey[:]); err != nil || !bytes.Contains(got.Request, []byte("anon-prompt")) {
		t.Errorf("anonymous job with its key: %v", err)
	}
	if _, err := db.Job("job_missing", nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing job: %v", err)
	}
	// The stored identity of a job is not UpdateJob's to change.
	up, err := db.UpdateJob(j.ID, func(sj *store.Job) error {
		sj.Owner, sj.IdemKey, sj.Status, sj.Runs, sj.Holds = b.ID, "k2", store.JobRunning, 1, nil
		return nil
	})
	if err != nil || up.Owner != a.ID || up.IdemKey != "k1" || up.Status != store.JobRunning || up.Runs != 1 || len(up.Holds) != 0 {
		t.Errorf("update: %+v %v", up, err)
	}
	if js, err := db.AccountJobs(a.ID); err != nil || len(js) != 1 || !bytes.Equal(js[0].Request, body) {
		t.Errorf("account jobs: %+v %v", js, err)
	}
}

// Gateways retrying one POST on different clients of one database at once
// get one job.
func testJobIdempotencyAcrossClients(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "idem@example.com")
	clients := []Store{db, h.reopenShared(t, db, clock), h.reopenShared(t, db, clock)}
	ids := make([]string, 9)
	created := make([]bool, 9)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			j, c, err := clients[i%3].CreateJob(store.Job{ID: store.NewJobID(), Owner: a.ID, Request: []byte(`{}`), IdemKey: "same"}, nil)
			if err != nil {
				t.Error(err)
			}
			ids[i], created[i] = j.ID, c
		})
	}
	wg.Wait()
	n := 0
	for i := range ids {
		if ids[i] != ids[0] {
			t.Errorf("client %d got job %s, another %s", i, ids[i], ids[0])
		}
		if created[i] {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d creations reported, want 1", n)
	}
	if js, _ := db.AccountJobs(a.ID); len(js) != 1 {
		t.Errorf("%d jobs stored, want 1", len(js))
	}
}

// An unfinished job is leased to one client at a time: another claims it
// only once the lease lapsed, and the first then holds it no more.
func testJobLeaseGoesToOneClientAtATime(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "lease@example.com")
	j, _, err := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: a.ID, Request: []byte(`{"prompt":"p"}`), LeaseUntil: clock.Now().Add(time.Minute)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.LeaseHolder != db.JobLeaseHolder() {
		t.Errorf("created job leased to %q, want %q", j.LeaseHolder, db.JobLeaseHolder())
	}
	if got, err := db.ClaimJobs(time.Minute); err != nil || len(got) != 0 {
		t.Errorf("its holder claimed its own live lease: %d %v", len(got), err)
	}
	if held, err := db.RenewJobLeases([]string{j.ID}, time.Minute); err != nil || !slices.Equal(held, []string{j.ID}) {
		t.Errorf("renew: %v %v", held, err)
	}
	if h.Share == nil {
		// One process at a time opens the file: a lease left by a run of
		// the store that ended is a dead process's, claimed at once.
		db2 := h.reopen(t, db, clock)
		got, err := db2.ClaimJobs(time.Minute)
		if err != nil || len(got) != 1 || got[0].ID != j.ID || !bytes.Equal(got[0].Request, []byte(`{"prompt":"p"}`)) {
			t.Fatalf("claim after a restart: %+v %v", got, err)
		}
		return
	}
	db2 := h.reopenShared(t, db, clock)
	if got, err := db2.ClaimJobs(time.Minute); err != nil || len(got) != 0 {
		t.Errorf("another client claimed a live lease: %d %v", len(got), err)
	}
	clock.Advance(61 * time.Second)
	got, err := db2.ClaimJobs(time.Minute)
	if err != nil || len(got) != 1 || got[0].ID != j.ID || got[0].LeaseHolder != db2.JobLeaseHolder() || !bytes.Equal(got[0].Request, []byte(`{"prompt":"p"}`)) {
		t.Fatalf("claim after the lease lapsed: %+v %v", got, err)
	}
	if held, err := db.RenewJobLeases([]string{j.ID}, time.Minute); err != nil || len(held) != 0 {
		t.Errorf("the first client still renews a lost lease: %v %v", held, err)
	}
	if held, err := db2.RenewJobLeases([]string{j.ID}, time.Minute); err != nil || len(held) != 1 {
		t.Errorf("the new holder cannot renew: %v %v", held, err)
	}

	// Many lapsed jobs, claimed by three clients at once: each job by one.
	var want []string
	for range 30 {
		j, _, err := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: a.ID, Request: []byte(`{}`), LeaseUntil: clock.Now().Add(time.Second)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, j.ID)
	}
	clock.Advance(2 * time.Second)
	clients := []Store{db, db2, h.reopenShared(t, db, clock)}
	claims := make([][]store.Job, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			var err error
			if claims[i], err = c.ClaimJobs(time.Minute); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var all []string
	for _, cl := range claims {
		for _, j := range cl {
			all = append(all, j.ID)
		}
	}
	slices.Sort(all)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Errorf("claimed %d jobs (%d distinct wanted): some twice or missed", len(all), len(want))
	}
}

// After a restart an unfinished job is claimed with its request, an
// anonymous one too (from its resume copy); a job that finished has
// dropped that copy, and a finished job is never claimed.
func testJobsResumeAfterRestart(t *testing.T, h Harness) {
	db, clock := h.open(t)
	anonKey := sha256.Sum256([]byte("visitor token"))
	body := []byte(`{"prompt":"anon-resume-marker-5521"}`)
	anon, _, err := db.CreateJob(store.Job{ID: store.NewJobID(), Request: body, TokenHash: []byte("h"), LeaseUntil: clock.Now().Add(time.Minute)}, anonKey[:])
	if err != nil {
		t.Fatal(err)
	}
	done, _, err := db.CreateJob(store.Job{ID: store.NewJobID(), Request: []byte(`{"prompt":"done"}`)}, anonKey[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateJob(done.ID, func(j *store.Job) error { j.Status = store.JobSucceeded; return nil }); err != nil {
		t.Fatal(err)
	}
	if h.Contains(t, db, []byte("anon-resume-marker-5521")) {
		t.Error("the anonymous prompt is readable in the store")
	}
	db = h.reopen(t, db, clock)
	clock.Advance(2 * time.Minute) // the lease of the process that stopped lapses
	got, err := db.ClaimJobs(time.Minute)
	if err != nil || len(got) != 1 || got[0].ID != anon.ID {
		t.Fatalf("claimed %+v %v, want the unfinished anonymous job", got, err)
	}
	if !bytes.Equal(got[0].Request, body) {
		t.Errorf("anonymous job claimed with request %q, want it from its resume copy", got[0].Request)
	}
	// The visitor's token still opens it, and only it.
	if v, err := db.Job(anon.ID, anonKey[:]); err != nil || !bytes.Equal(v.Request, body) {
		t.Errorf("visitor's read: %v", err)
	}
	// Finishing drops the resume copy: put back in the queue, the job
	// comes back without a readable request.
	if _, err := db.UpdateJob(anon.ID, func(j *store.Job) error { j.Status = store.JobFailed; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateJob(anon.ID, func(j *store.Job) error { j.Status, j.LeaseUntil = store.JobQueued, time.Time{}; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err = db.ClaimJobs(time.Minute)
	if err != nil || len(got) != 1 || got[0].Request != nil {
		t.Errorf("after finishing, claimed %+v %v; want the job without its request", got, err)
	}
	if v, err := db.Job(anon.ID, anonKey[:]); err != nil || !bytes.Equal(v.Request, body) {
		t.Errorf("the visitor's copy went with the resume copy: %v", err)
	}
}

// Jobs go with their account's erasure, and finished ones after their
// keep time; unfinished ones are never swept.
func testJobsErasedWithTheAccountAndSwept(t *testing.T, h Harness) {
	db, clock := h.open(t)
	gone := mustAccount(t, db, "gone-jobs@example.com")
	kept := mustAccount(t, db, "kept-jobs@example.com")
	j, _, _ := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: gone.ID, Request: []byte(`{}`), IdemKey: "x"}, nil)
	done, _, _ := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: kept.ID, Request: []byte(`{}`)}, nil)
	running, _, _ := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: kept.ID, Request: []byte(`{}`)}, nil)
	db.UpdateJob(done.ID, func(j *store.Job) error { j.Status = store.JobSucceeded; return nil })
	db.UpdateJob(running.ID, func(j *store.Job) error { j.Status = store.JobRunning; return nil })

	if _, err := db.BeginErasure(gone.ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateJob(store.Job{ID: store.NewJobID(), Owner: gone.ID, Request: []byte(`{}`)}, nil); !errors.Is(err, store.ErrAccountInactive) {
		t.Errorf("a job for an account being erased: %v", err)
	}
	for finished := false; !finished; {
		var err error
		if finished, err = db.EraseStep(gone.ID, 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Job(j.ID, nil); !errors.Is(err, store.ErrNotFound) {
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
	if _, err := db.Job(done.ID, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the finished job survived the sweep: %v", err)
	}
}
