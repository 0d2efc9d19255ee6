package gateway

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// jobCall sends method path with body and headers as b, decoding a job.
func jobCall(t *testing.T, b *browser, method, path, body string, headers ...string) (*http.Response, jobJSON) {
	t.Helper()
	saved := b.header.Clone()
	if b.header == nil {
		b.header = http.Header{}
	}
	for i := 0; i+1 < len(headers); i += 2 {
		b.header.Set(headers[i], headers[i+1])
	}
	var j jobJSON
	resp := b.call(method, path, body, nil)
	b.header = saved
	if resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp, j
}

// awaitJob follows the job's event stream to its end and returns the job.
func awaitJob(t *testing.T, e *env, id string, headers ...string) (jobJSON, []sse) {
	t.Helper()
	resp, evs := e.openStream(t, "/v1/jobs/"+id+"/events", "GET", "", headers...)
	want(t, resp, 200)
	var got []sse
	for ev := range evs {
		if !ev.comment {
			got = append(got, ev)
		}
	}
	var j jobJSON
	r, body := e.get(e.url+"/v1/jobs/"+id, headers...)
	want(t, r, 200)
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	return j, got
}

// Prefer: respond-async answers 202 with a job; its events end in the
// completed image and the job shows the result. A retried POST under the
// same Idempotency-Key is the same job, generating nothing more; another
// request under it is refused.
func TestAsyncJobCompletesAndIdempotencyKeyReturnsIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, _ := e.signedIn("jobs@example.com")
	api := e.apiClient(b)
	const body = `{"prompt":"a queued lighthouse","size":"256x256"}`
	resp, j := jobCall(t, api, "POST", "/v1/images/generations", body, "Prefer", "respond-async", "Idempotency-Key", "retry-1")
	want(t, resp, 202)
	if loc := resp.Header.Get("Location"); loc != "/v1/jobs/"+j.ID || !strings.HasPrefix(j.ID, "job_") || j.Token != "" {
		t.Fatalf("Location %q, job %+v", loc, j)
	}
	auth := []string{"Authorization", api.header.Get("Authorization")}
	done, events := awaitJob(t, e, j.ID, auth...)
	if done.Status != store.JobSucceeded || done.Result == nil || len(done.Result.Data) != 1 {
		t.Fatalf("job %+v", done)
	}
	if last := events[len(events)-1]; last.name != "image_generation.completed" {
		t.Errorf("last event %s", last.name)
	}
	for _, ev := range events[:len(events)-1] {
		if ev.name != "imagegate.progress" {
			t.Errorf("event %s before completed", ev.name)
		}
	}
	img, data := e.get(done.Result.Data[0].URL)
	want(t, img, 200)
	if len(data) == 0 || img.Header.Get("Content-Type") != "image/png" {
		t.Errorf("result link served %q", img.Header.Get("Content-Type"))
	}

	resp, again := jobCall(t, api, "POST", "/v1/images/generations", body, "Prefer", "respond-async", "Idempotency-Key", "retry-1")
	want(t, resp, 202)
	if again.ID != j.ID || again.Status != store.JobSucceeded {
		t.Errorf("retry got job %+v, want %s succeeded", again, j.ID)
	}
	if n := e.generations(); n != 1 {
		t.Errorf("%v generations, want 1", n)
	}
	resp, _ = jobCall(t, api, "POST", "/v1/images/generations", `{"prompt":"something else","size":"256x256"}`, "Prefer", "respond-async", "Idempotency-Key", "retry-1")
	want(t, resp, 422)

	// The export carries the job with its request; it is the account's.
	exp := b.call("GET", "/v1/account/export", "", nil)
	want(t, exp, 200)
	raw, _ := io.ReadAll(exp.Body)
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var exported []exportJobJSON
	for _, f := range zr.File {
		if f.Name == "jobs.json" {
			rc, _ := f.Open()
			json.NewDecoder(rc).Decode(&exported)
			rc.Close()
		}
	}
	if len(exported) != 1 || exported[0].ID != j.ID || !strings.Contains(string(exported[0].Request), "a queued lighthouse") {
		t.Errorf("exported jobs %+v", exported)
	}

	// Another account cannot see, follow or cancel it.
	other, _ := e.signedIn("nosy@example.com")
	for _, m := range []string{"GET", "DELETE"} {
		r, _ := jobCall(t, other, m, "/v1/jobs/"+j.ID, "")
		want(t, r, 404)
	}
}

// An anonymous job is bound to its token: without it the job does not
// exist; with it, it can be read and cancelled.
func TestAnonymousJobNeedsItsToken(t *testing.T) {
	t.Parallel()
	gate := newPreviewBackend()
	e := newEnv(t, envOptions{backend: gate})
	anon := e.browser()
	resp, j := jobCall(t, anon, "POST", "/v1/images/generations", `{"prompt":"an anonymous kite","size":"256x256"}`, "Prefer", "respond-async")
	want(t, resp, 202)
	if !strings.HasPrefix(j.Token, jobTokenPrefix) {
		t.Fatalf("no token in %+v", j)
	}
	<-gate.began
	for _, h := range [][]string{nil, {"Job-Token", jobTokenPrefix + "wrong"}} {
		r, _ := jobCall(t, e.browser(), "GET", "/v1/jobs/"+j.ID, "", h...)
		want(t, r, 404)
	}
	r, seen := jobCall(t, e.browser(), "GET", "/v1/jobs/"+j.ID+"?token="+j.Token, "")
	want(t, r, 200)
	if seen.Status != store.JobRunning || seen.Token != "" {
		t.Errorf("job %+v", seen)
	}
	r, cancelled := jobCall(t, e.browser(), "DELETE", "/v1/jobs/"+j.ID, "", "Job-Token", j.Token)
	want(t, r, 200)
	if cancelled.Status != store.JobCancelled {
		t.Errorf("after DELETE: %+v", cancelled)
	}
	<-gate.cancelled // nobody else waited: the GPU stopped
	resp, _ = jobCall(t, anon, "POST", "/v1/images/generations", `{"prompt":"x"}`, "Prefer", "respond-async", "Idempotency-Key", "k")
	want(t, resp, 400)
}

// Cancelling a job stops the GPU work and gives back its credits.
func TestCancelledJobRefundsCredits(t *testing.T) {
	t.Parallel()
	gate := newPreviewBackend()
	e := newEnv(t, envOptions{backend: gate, cfg: Config{Plans: testPlans(10)}})
	b, _ := e.signedIn("cancel@example.com")
	before := credits(t, b)
	resp, j := jobCall(t, b, "POST", "/v1/images/generations", `{"prompt":"a job to cancel","size":"512x512","n":2}`, "Prefer", "respond-async")
	want(t, resp, 202)
	<-gate.began
	<-gate.began
	if got := credits(t, b); got != before-4 {
		t.Fatalf("while running: %d credits, want %d reserved off %d", got, before-4, before)
	}
	r, cancelled := jobCall(t, b, "DELETE", "/v1/jobs/"+j.ID, "")
	want(t, r, 200)
	if cancelled.Status != store.JobCancelled {
		t.Fatalf("after DELETE: %+v", cancelled)
	}
	<-gate.cancelled
	<-gate.cancelled
	waitFor(t, "the refund", func() bool { return credits(t, b) == before })
	if s, c := e.jobOutcomes("submitted"), e.jobOutcomes("cancelled"); s != 1 || c != 1 {
		t.Errorf("imagegate_jobs_total: submitted %v, cancelled %v; want 1 and 1", s, c)
	}
}

// A gateway stopping mid-job leaves it queued; the next start runs it to
// the end: no job is lost.
func TestJobSurvivesGatewayRestart(t *testing.T) {
	t.Parallel()
	gate := newPreviewBackend()
	dir := t.TempDir()
	e := newEnv(t, envOptions{dir: dir, backend: gate})
	b, _ := e.signedIn("restart@example.com")
	api := e.apiClient(b)
	resp, j := jobCall(t, api, "POST", "/v1/images/generations", `{"prompt":"a job across restarts","size":"256x256"}`, "Prefer", "respond-async")
	want(t, resp, 202)
	<-gate.began
	e.close()

	e2 := newEnv(t, envOptions{dir: dir})
	auth := []string{"Authorization", api.header.Get("Authorization")}
	done, _ := awaitJob(t, e2, j.ID, auth...)
	if done.Status != store.JobSucceeded || done.Result == nil || len(done.Result.Data) != 1 {
		t.Fatalf("after restart: %+v", done)
	}
	if r := e2.jobOutcomes("resumed"); r != 1 {
		t.Errorf("imagegate_jobs_total{outcome=resumed} %v, want 1", r)
	}
	stored, err := e2.db.Job(j.ID, nil)
	if err != nil || stored.Runs != 2 {
		t.Errorf("runs %d (%v), want 2", stored.Runs, err)
	}
}

// With AsyncJobs.After, a plain request still waiting for the GPU past
// the limit is answered 202 with a job that carries on the same
// generation: nothing is generated twice, and the job ends with the image.
func TestLongWaitBecomesAJob(t *testing.T) {
	t.Parallel()
	gate := newPreviewBackend()
	e := newEnv(t, envOptions{backend: gate, cfg: Config{AsyncJobs: AsyncJobsConfig{After: time.Millisecond}}})
	b, _ := e.signedIn("deferred@example.com")
	api := e.apiClient(b)
	// The backend holds the image until after the answer: only a job can
	// answer within the limit.
	resp, j := jobCall(t, api, "POST", "/v1/images/generations", `{"prompt":"a deferred kite","size":"256x256"}`)
	want(t, resp, 202)
	if resp.Header.Get("Location") != "/v1/jobs/"+j.ID {
		t.Fatalf("Location %q for %+v", resp.Header.Get("Location"), j)
	}
	<-gate.began
	gate.proceed <- struct{}{}
	close(gate.release)
	done, _ := awaitJob(t, e, j.ID, "Authorization", api.header.Get("Authorization"))
	if done.Status != store.JobSucceeded || len(done.Result.Data) != 1 {
		t.Fatalf("job %+v", done)
	}
	if n := e.generations(); n != 1 {
		t.Errorf("%v generations, want 1", n)
	}
}

// jobOutcomes reads imagegate_jobs_total for outcome.
func (e *env) jobOutcomes(outcome string) float64 {
	e.t.Helper()
	mfs, err := e.gwReg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "imagegate_jobs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// leaseThief is the store as a gateway sees it once another gateway took
// its jobs over: its leases no longer renew, and it claims nothing.
type leaseThief struct {
	*store.DB
	stolen atomic.Bool
}

func (l *leaseThief) RenewJobLeases(ids []string, ttl time.Duration) ([]string, error) {
	if l.stolen.Load() {
		return nil, nil
	}
	return l.DB.RenewJobLeases(ids, ttl)
}

func (l *leaseThief) ClaimJobs(ttl time.Duration) ([]store.Job, error) {
	if l.stolen.Load() {
		return nil, nil
	}
	return l.DB.ClaimJobs(ttl)
}

// A running job writes its credit holds to the store before its image
// reaches the GPU (so a gateway taking it over can give them back), and
// renews its lease; once the lease is another gateway's, the run stops,
// gives back its credits and records nothing: the job's outcome is the
// new holder's to record.
func TestJobWhoseLeaseIsLostStopsWithoutRecording(t *testing.T) {
	t.Parallel()
	gate := newPreviewBackend()
	thief := &leaseThief{}
	e := newEnv(t, envOptions{backend: gate, wrapStore: func(s Store) Store { thief.DB = s.(*store.DB); return thief },
		cfg: Config{AsyncJobs: AsyncJobsConfig{Lease: 60 * time.Millisecond}, Plans: testPlans(10)}})
	b, _ := e.signedIn("lease-lost@example.com")
	before := credits(t, b)
	resp, j := jobCall(t, b, "POST", "/v1/images/generations", `{"prompt":"a job that moves away","size":"512x512"}`, "Prefer", "respond-async")
	want(t, resp, 202)
	<-gate.began
	stored, err := e.db.Job(j.ID, nil)
	if err != nil || len(stored.Holds) != 1 || stored.Status != store.JobRunning {
		t.Fatalf("running job in the store: %+v %v; want its one credit hold recorded", stored, err)
	}
	if got := credits(t, b); got != before-2 {
		t.Fatalf("%d credits while running, want %d", got, before-2)
	}
	// Renewals keep the lease while it is this gateway's.
	waitFor(t, "a renewal", func() bool {
		j, _ := e.db.Job(stored.ID, nil)
		return j.LeaseUntil.After(stored.LeaseUntil)
	})
	thief.stolen.Store(true)
	<-gate.cancelled
	waitFor(t, "the refund", func() bool { return credits(t, b) == before })
	waitFor(t, "the lost lease counted", func() bool { return e.jobOutcomes("lease_lost") == 1 })
	after, err := e.db.Job(j.ID, nil)
	if err != nil || after.Status != store.JobRunning || after.Error != nil {
		t.Errorf("the job after its lease was lost: %+v %v; want it left for its new holder", after, err)
	}
	if f := e.jobOutcomes("failed"); f != 0 {
		t.Errorf("a run that lost its lease recorded a failure (%v)", f)
	}
}

// holdWitness checks, as each credit hold is taken, whether the running
// job already records the hold's ID.
type holdWitness struct {
	*store.DB
	mu       sync.Mutex
	recorded []bool // per ReserveHold: the ID was on a running job first
}

func (w *holdWitness) ReserveHold(h store.Hold) (store.Hold, error) {
	seen := false
	if jobs, err := w.DB.AccountJobs(h.AccountID); err == nil {
		for _, j := range jobs {
			seen = seen || slices.Contains(j.Holds, h.ID)
		}
	}
	w.mu.Lock()
	w.recorded = append(w.recorded, seen)
	w.mu.Unlock()
	return w.DB.ReserveHold(h)
}

// A job's run records each credit hold's ID on the job before the hold
// exists, so a gateway dying at any moment leaves no hold its successor
// cannot find and give back.
func TestJobRecordsItsHoldsBeforeTakingThem(t *testing.T) {
	t.Parallel()
	gate := newPreviewBackend()
	w := &holdWitness{}
	e := newEnv(t, envOptions{backend: gate, wrapStore: func(s Store) Store { w.DB = s.(*store.DB); return w },
		cfg: Config{Plans: testPlans(10)}})
	b, _ := e.signedIn("holds-first@example.com")
	resp, j := jobCall(t, b, "POST", "/v1/images/generations", `{"prompt":"a job paid in order","size":"512x512","n":2}`, "Prefer", "respond-async")
	want(t, resp, 202)
	<-gate.began
	<-gate.began
	w.mu.Lock()
	recorded := slices.Clone(w.recorded)
	w.mu.Unlock()
	if len(recorded) != 2 || slices.Contains(recorded, false) {
		t.Errorf("holds taken with their ID already on the job: %v, want [true true]", recorded)
	}
	stored, err := e.db.Job(j.ID, nil)
	if err != nil || len(stored.Holds) != 2 {
		t.Errorf("the running job records holds %v (%v), want 2", stored.Holds, err)
	}
}
