package sched

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// events records what the scheduler reports; queued receives once per
// admitted job.
type events struct {
	queued  chan struct{}
	refused chan string

	mu       sync.Mutex
	started  []string // "model@worker#attempt"
	rejected []string
	canceled int
}

func newEvents() *events {
	return &events{queued: make(chan struct{}, 1000), refused: make(chan string, 1000)}
}

func (e *events) Queued(model, class string, depth int) {
	select {
	case e.queued <- struct{}{}:
	default:
	}
}

func (e *events) Started(model, class, worker string, wait time.Duration, attempt int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.started = append(e.started, fmt.Sprintf("%s@%s#%d", model, worker, attempt))
}
func (e *events) Finished(model, class, worker string, run time.Duration, err error) {}
func (e *events) Rejected(model, class, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rejected = append(e.rejected, class+":"+reason)
	select {
	case e.refused <- reason:
	default:
	}
}
func (e *events) Canceled(model, class string, running bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.canceled++
}

// harness runs jobs that block until released and records the order they
// start in.
type harness struct {
	t      *testing.T
	s      *Scheduler
	clock  *testpeer.Clock // advanced 1 s by every job that finishes
	ev     *events
	order  chan string   // tags of jobs as they start
	gate   chan struct{} // each receive lets one running job finish
	done   chan error
	wg     sync.WaitGroup
	cancel context.CancelFunc
	ctx    context.Context
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	ev := newEvents()
	cfg.Observer = ev
	clock := testpeer.NewClock(time.Now())
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = time.Hour
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	h := &harness{t: t, s: s, ev: ev, clock: clock, order: make(chan string, 10000), gate: make(chan struct{}),
		done: make(chan error, 10000), ctx: ctx, cancel: cancel}
	t.Cleanup(func() { cancel(); h.wg.Wait() })
	return h
}

// submit admits a job tagged tag and returns once it is queued (or
// running).
func (h *harness) submit(job Job, tag string) {
	h.t.Helper()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.done <- h.s.Do(h.ctx, job, func(ctx context.Context, a Attempt) error {
			h.order <- tag
			select {
			case <-h.gate:
				h.clock.Advance(time.Second)
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	select {
	case <-h.ev.queued:
	case reason := <-h.ev.refused:
		h.t.Fatalf("job %s refused: %s", tag, reason)
	case <-time.After(60 * time.Second):
		h.t.Fatal("job never queued")
	}
}

// next lets one running job finish and returns the tag of the job that
// starts in its place.
func (h *harness) next() string {
	h.t.Helper()
	h.gate <- struct{}{}
	return h.started()
}

func (h *harness) started() string {
	h.t.Helper()
	select {
	case tag := <-h.order:
		return tag
	case <-time.After(60 * time.Second):
		h.t.Fatal("no job started")
		return ""
	}
}

func oneWorker(slots int, models ...string) []Worker {
	return []Worker{{ID: "w1", Slots: slots, Models: models}}
}

func TestFairShareWithinClass(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Workers: oneWorker(1, "m")})
	h.submit(Job{Model: "m", Key: "busy"}, "blocker")
	if got := h.started(); got != "blocker" {
		t.Fatalf("first started %q", got)
	}
	for i := range 10 {
		h.submit(Job{Model: "m", Key: "busy"}, fmt.Sprintf("busy%d", i))
	}
	h.submit(Job{Model: "m", Key: "quiet"}, "quiet")
	// The quiet key's one job goes next, not after busy's ten: busy has
	// already been served once (the blocker).
	var got []string
	for range 4 {
		got = append(got, h.next())
	}
	if diff := cmp.Diff([]string{"quiet", "busy0", "busy1", "busy2"}, got); diff != "" {
		t.Errorf("start order (-want +got):\n%s", diff)
	}
}

func TestWeightedClasses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{
		Workers:      oneWorker(1, "m"),
		Classes:      map[string]Class{"paid": {Weight: 3}, "free": {Weight: 1}},
		DefaultClass: "free",
	})
	h.submit(Job{Model: "m", Key: "x", Class: "free"}, "blocker")
	h.started()
	for range 20 {
		h.submit(Job{Model: "m", Key: "f", Class: "free"}, "free")
		h.submit(Job{Model: "m", Key: "p", Class: "paid"}, "paid")
	}
	counts := map[string]int{}
	for range 16 {
		counts[h.next()]++
	}
	// Weights 3:1 give paid 12 and free 4 of 16 starts, give or take one.
	if counts["paid"] < 11 || counts["paid"] > 13 {
		t.Errorf("paid got %d of 16 starts, want 12±1 (free %d)", counts["paid"], counts["free"])
	}
	// An unknown class is the default class, not a way around weights.
	if got := h.s.ClassOf("platinum"); got != "free" {
		t.Errorf("unknown class went to %q", got)
	}
}

func TestIdleFlowBanksNoCredit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Workers: oneWorker(1, "m")})
	h.submit(Job{Model: "m", Key: "a"}, "a")
	h.started()
	for range 5 {
		h.submit(Job{Model: "m", Key: "a"}, "a")
		h.submit(Job{Model: "m", Key: "b"}, "b")
	}
	for range 10 {
		h.next()
	}
	// Key c was idle all along; now it gets its fair turn, not ten.
	for range 4 {
		h.submit(Job{Model: "m", Key: "b"}, "b")
		h.submit(Job{Model: "m", Key: "c"}, "c")
	}
	var got []string
	for range 4 {
		got = append(got, h.next())
	}
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	if count["b"] != 2 || count["c"] != 2 {
		t.Errorf("after c rejoined, starts were %v; want b and c alternating", got)
	}
}

func TestAdmissionCaps(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{
		Workers:      oneWorker(1, "m"),
		Classes:      map[string]Class{"free": {Weight: 1, MaxQueued: 2}, "paid": {Weight: 2}},
		DefaultClass: "free",
		MaxQueue:     4,
	})
	h.submit(Job{Model: "m", Key: "a", Class: "paid"}, "running")
	h.started()
	h.submit(Job{Model: "m", Key: "a", Class: "free"}, "q1")
	h.submit(Job{Model: "m", Key: "b", Class: "free"}, "q2")
	err := h.s.Do(t.Context(), Job{Model: "m", Key: "c", Class: "free"}, nil)
	var oe *OverloadError
	if !errors.As(err, &oe) || oe.Reason != "class_full" || oe.RetryAfter < time.Second {
		t.Fatalf("third free job: %v, want class_full with a Retry-After", err)
	}
	<-h.ev.refused
	h.submit(Job{Model: "m", Key: "a", Class: "paid"}, "q3")
	h.submit(Job{Model: "m", Key: "b", Class: "paid"}, "q4")
	if err := h.s.Do(t.Context(), Job{Model: "m", Key: "d", Class: "paid"}, nil); !errors.As(err, &oe) || oe.Reason != "queue_full" {
		t.Fatalf("fifth queued job: %v, want queue_full", err)
	}
	<-h.ev.refused
	if !errors.Is(err, ErrOverloaded) {
		t.Errorf("%v does not match ErrOverloaded", err)
	}
	if err := h.s.Do(t.Context(), Job{Model: "nope"}, nil); !errors.Is(err, ErrNoWorker) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestAdmissionRefusesWaitsPastDeadline(t *testing.T) {
	t.Parallel()
	now := time.Now() // fixed: the scheduler's clock does not move
	h := newHarness(t, Config{Workers: oneWorker(1, "m"), Now: func() time.Time { return now }})
	h.submit(Job{Model: "m"}, "running")
	h.started()
	// No run has finished: the assumed cost is 10 s, so the next job
	// expects to wait 10 s.
	ctx, cancel := context.WithDeadline(t.Context(), now.Add(5*time.Second))
	defer cancel()
	err := h.s.Do(ctx, Job{Model: "m"}, nil)
	var oe *OverloadError
	if !errors.As(err, &oe) || oe.Reason != "deadline" || oe.RetryAfter != 10*time.Second {
		t.Fatalf("got %v, want deadline refusal retrying after 10s", err)
	}
	ctx2, cancel2 := context.WithDeadline(t.Context(), now.Add(time.Minute))
	defer cancel2()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.done <- h.s.Do(ctx2, Job{Model: "m"}, func(context.Context, Attempt) error { h.order <- "fits"; return nil })
	}()
	<-h.ev.queued
	if got := h.next(); got != "fits" {
		t.Errorf("a job whose deadline allows the wait did not run: %q", got)
	}
}

func TestMaxRunningPerClass(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{
		Workers:      oneWorker(3, "m"),
		Classes:      map[string]Class{"free": {Weight: 1, MaxRunning: 1}, "paid": {Weight: 1}},
		DefaultClass: "free",
	})
	h.submit(Job{Model: "m", Key: "a", Class: "free"}, "free1")
	h.started()
	h.submit(Job{Model: "m", Key: "b", Class: "free"}, "free2")
	h.submit(Job{Model: "m", Key: "c", Class: "paid"}, "paid")
	// Two slots are free but free may run only one job: paid starts, free2
	// waits.
	if got := h.started(); got != "paid" {
		t.Fatalf("started %q, want paid", got)
	}
	if st := h.s.Stats(); st.Queued != 1 || st.Running != 2 {
		t.Errorf("stats %+v, want 1 queued and 2 running", st)
	}
}

func TestRetryOnAnotherWorker(t *testing.T) {
	t.Parallel()
	ev := newEvents()
	s, err := New(Config{
		Workers:  []Worker{{ID: "bad", Slots: 1, Models: []string{"m"}}, {ID: "good", Slots: 1, Models: []string{"m"}}},
		Observer: ev,
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("connection reset")
	var tried []string
	err = s.Do(t.Context(), Job{Model: "m"}, func(ctx context.Context, a Attempt) error {
		tried = append(tried, a.Worker)
		if a.Worker == "bad" {
			return boom
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tried) == 0 || tried[len(tried)-1] != "good" || len(tried) > 2 {
		t.Errorf("tried %v, want at most one failure then good", tried)
	}
	// The failed worker is now avoided by the next job.
	tried = nil
	if err := s.Do(t.Context(), Job{Model: "m"}, func(ctx context.Context, a Attempt) error {
		tried = append(tried, a.Worker)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(tried) != 1 || tried[0] != "good" {
		t.Errorf("after a failure, next job went to %v", tried)
	}

	// Attempts are capped, and non-retryable errors are not retried.
	s2, _ := New(Config{Workers: oneWorker(1, "m"), MaxAttempts: 2,
		Retryable: func(err error) bool { return !errors.Is(err, errPermanent) }})
	n := 0
	if err := s2.Do(t.Context(), Job{Model: "m"}, func(context.Context, Attempt) error { n++; return boom }); !errors.Is(err, boom) || n != 2 {
		t.Errorf("always failing: %v after %d attempts, want boom after 2", err, n)
	}
	n = 0
	if err := s2.Do(t.Context(), Job{Model: "m"}, func(context.Context, Attempt) error { n++; return errPermanent }); !errors.Is(err, errPermanent) || n != 1 {
		t.Errorf("permanent: %v after %d attempts, want 1", err, n)
	}
}

var errPermanent = errors.New("permanent")

func TestWatchdogEndsStalledAttempts(t *testing.T) {
	t.Parallel()
	s, err := New(Config{
		Workers:      []Worker{{ID: "hung", Slots: 1, Models: []string{"m"}}, {ID: "ok", Slots: 1, Models: []string{"m"}}},
		StallTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var stalled error
	err = s.Do(t.Context(), Job{Model: "m"}, func(ctx context.Context, a Attempt) error {
		if a.Worker == "hung" {
			<-ctx.Done() // a backend that never answers
			stalled = context.Cause(ctx)
			return ctx.Err()
		}
		// A slow but live attempt keeps beating and is not cut.
		for range 5 {
			a.Beat()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("job did not fail over from the hung worker: %v", err)
	}
	if stalled != nil && !errors.Is(stalled, ErrStalled) {
		t.Errorf("hung attempt ended by %v, want ErrStalled", stalled)
	}
}

func TestModelAffinity(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Workers: []Worker{
		{ID: "a", Slots: 2, Models: []string{"sdxl", "flux"}},
		{ID: "b", Slots: 2, Models: []string{"sdxl", "flux"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	run := func(model string) string {
		var got string
		if err := s.Do(t.Context(), Job{Model: model}, func(_ context.Context, a Attempt) error { got = a.Worker; return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := run("flux")
	other := run("sdxl")
	if other == first {
		t.Fatalf("sdxl went to %s, which has flux loaded, while the other worker was idle", other)
	}
	for range 3 {
		if got := run("flux"); got != first {
			t.Errorf("flux went to %s, want %s which has it loaded", got, first)
		}
		if got := run("sdxl"); got != other {
			t.Errorf("sdxl went to %s, want %s which has it loaded", got, other)
		}
	}
}

func TestCancelWhileQueued(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Workers: oneWorker(1, "m")})
	h.submit(Job{Model: "m"}, "running")
	h.started()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- h.s.Do(ctx, Job{Model: "m", Key: "leaver"}, func(context.Context, Attempt) error {
			t.Error("a job canceled while queued ran")
			return nil
		})
	}()
	<-h.ev.queued
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if st := h.s.Stats(); st.Queued != 0 {
		t.Errorf("canceled job still queued: %+v", st)
	}
	h.submit(Job{Model: "m"}, "after")
	if got := h.next(); got != "after" {
		t.Errorf("next started %q", got)
	}
	h.ev.mu.Lock()
	defer h.ev.mu.Unlock()
	if h.ev.canceled != 1 {
		t.Errorf("%d cancellations observed, want 1", h.ev.canceled)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	err := Config{
		Workers:      []Worker{{ID: "", Slots: 0}, {ID: "x", Slots: 1, Models: []string{"m"}}, {ID: "x", Slots: 1, Models: []string{"m"}}},
		Classes:      map[string]Class{"free": {Weight: 0}},
		DefaultClass: "paid",
		MaxWait:      -1,
	}.Validate()
	for _, want := range []string{"no ID", "0 slots", "serves no model", `two workers with ID "x"`, "weight 0", `default class "paid"`, "negative limit"} {
		if err == nil || !contains(err.Error(), want) {
			t.Errorf("Validate missed %q: %v", want, err)
		}
	}
	if err := (Config{Workers: oneWorker(1, "m")}).Validate(); err != nil {
		t.Errorf("minimal config refused: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestPromoteMovesAWaitingJob(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{
		Workers:      oneWorker(1, "m"),
		Classes:      map[string]Class{"free": {Weight: 1}, "paid": {Weight: 100}},
		DefaultClass: "free",
	})
	h.submit(Job{Model: "m", Key: "p", Class: "paid"}, "blocker")
	h.started()
	for range 10 {
		h.submit(Job{Model: "m", Key: "p", Class: "paid"}, "paid")
	}
	promote := make(chan Job, 1)
	h.submit(Job{Model: "m", Key: "f", Class: "free", Promote: promote}, "shared")
	// Weight 100 to 1: as free, the shared job would wait for all ten.
	// A paid caller joins it: it moves to paid under the joiner's key.
	promote <- Job{Class: "paid", Key: "q"}
	for {
		select {
		case <-h.ev.queued: // the promotion's two depth reports
		case <-time.After(60 * time.Second):
			t.Fatal("promotion not reported")
		}
		if st := h.s.Stats(); st.Queued == 11 {
			h.s.mu.Lock()
			moved := h.s.classes["paid"].queued == 11
			h.s.mu.Unlock()
			if moved {
				break
			}
		}
	}
	var order []string
	for range 3 {
		order = append(order, h.next())
	}
	if !slices.Contains(order[:2], "shared") {
		t.Errorf("start order %v: the promoted job should start within two", order)
	}
	// A class weighing no more does not move it (nothing to test on the
	// order: Weight reports it).
	if h.s.Weight("free") != 1 || h.s.Weight("nope") != 1 || h.s.Weight("paid") != 100 {
		t.Error("Weight")
	}
}
