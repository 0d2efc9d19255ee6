package inference

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/inference/sched"
	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

func testPool(t testing.TB, url string) *Pool {
	t.Helper()
	p, err := newPool(PoolConfig{URLs: []string{url}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestServerRefusesWhenTheQueueIsFull(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.started = make(chan struct{}, 4)
	b.release = make(chan struct{})
	s, srv, reg := startServer(t, ServerConfig{MaxConcurrent: 1, Queue: QueueConfig{MaxQueue: 1}}, b)
	queued := make(chan struct{}, 1)
	s.queued = func() { queued <- struct{}{} }
	client := newClient(t, srv.URL)
	errs := make(chan error, 2)
	go func() {
		_, err := client.Generate(t.Context(), connect.NewRequest(testRequest("one")))
		errs <- err
	}()
	<-b.started
	go func() {
		_, err := client.Generate(t.Context(), connect.NewRequest(testRequest("two")))
		errs <- err
	}()
	<-queued

	_, err := client.Generate(t.Context(), connect.NewRequest(testRequest("three")))
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeResourceExhausted || cerr.Meta().Get("Retry-After") == "" {
		t.Fatalf("third request: %v, want resource_exhausted with Retry-After", err)
	}
	// Through the pool the gateway uses: unavailable, with the tier's wait.
	_, _, err = testPool(t, srv.URL).Generate(t.Context(), "", Request{Prompt: "four", Width: 8, Height: 8, Style: "auto"})
	if d, ok := RetryAfter(err); !errors.Is(err, ErrUnavailable) || !ok || d < time.Second {
		t.Errorf("pool: %v (retry after %v), want ErrUnavailable with the tier's Retry-After", err, d)
	}
	if got := metricValue(t, reg, "imagegate_inference_rejected_total", map[string]string{"model": "test", "plan": "default", "reason": "queue_full"}); got < 2 {
		t.Errorf("rejected_total = %v, want at least 2", got)
	}
	close(b.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestSchedulingNeitherSplitsFlightsNorReachesBackends(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.started = make(chan struct{}, 1)
	b.release = make(chan struct{})
	var sawScheduling atomic.Bool
	spy := spyBackend{testBackend: b, saw: &sawScheduling}
	s, srv, reg := startServer(t, ServerConfig{Queue: QueueConfig{
		Classes:      map[string]sched.Class{"free": {Weight: 1}, "paid": {Weight: 4}},
		DefaultClass: "free",
	}}, spy)
	joined := make(chan struct{}, 8)
	s.flights.joined = func() { joined <- struct{}{} }
	pools := []*Pool{testPool(t, srv.URL), testPool(t, srv.URL), testPool(t, srv.URL)}
	salt := []byte("gateway salt")
	errs := make(chan error, 3)
	for i, p := range pools {
		go func() {
			req := Request{Prompt: "same", Width: 8, Height: 8, Seed: 1, Style: "auto", Scheduling: Scheduling{
				FairnessKey: FairnessKey(salt, []string{"acct-1", "acct-2", "1.2.3.0/24"}[i]),
				PlanClass:   []string{"free", "paid", "platinum"}[i],
			}}
			_, _, err := p.Generate(t.Context(), "", req)
			errs <- err
		}()
		if i == 0 {
			<-b.started
		} else {
			<-joined
		}
	}
	close(b.release)
	for range pools {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := b.calls.Load(); got != 1 {
		t.Errorf("three gateways, three accounts, one request: backend ran %d times", got)
	}
	if sawScheduling.Load() {
		t.Error("a backend saw the scheduling fields")
	}
	// Metrics say which plan class used the worker, never whose key.
	families, _ := reg.Gather()
	key := FairnessKey(salt, "acct-1")
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if strings.Contains(v, hex.EncodeToString(key)) || strings.Contains(v, string(key)) || strings.Contains(v, "acct") {
					t.Errorf("metric %s label %s=%q carries identity", f.GetName(), l.GetName(), v)
				}
				if l.GetName() == "plan" && v != "free" && v != "paid" {
					t.Errorf("metric %s has plan %q, not a configured class", f.GetName(), v)
				}
			}
		}
	}
	free := map[string]string{"model": "test", "plan": "free"}
	if got := metricValue(t, reg, "imagegate_inference_queue_wait_seconds", free); got != 1 {
		t.Errorf("queue_wait count = %v, want the one generation, under the first caller's class", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_run_seconds", free); got != 1 {
		t.Errorf("run_seconds count = %v, want 1", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_worker_seconds_total", free); got <= 0 {
		t.Errorf("worker_seconds_total = %v, want the time the one generation held its slot", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_queue_depth", free); got != 0 {
		t.Errorf("queue_depth = %v after all finished", got)
	}
}

// spyBackend records whether a request reaching the backend carried
// scheduling fields.
type spyBackend struct {
	*testBackend
	saw *atomic.Bool
}

func (s spyBackend) Generate(ctx context.Context, req Request, progress ProgressFunc) (Result, error) {
	if req.Scheduling.FairnessKey != nil || req.Scheduling.PlanClass != "" {
		s.saw.Store(true)
	}
	return s.testBackend.Generate(ctx, req, progress)
}

func TestFairnessKeyIsOpaque(t *testing.T) {
	t.Parallel()
	a, b := FairnessKey([]byte("salt-1"), "acct-1"), FairnessKey([]byte("salt-2"), "acct-1")
	if bytes.Equal(a, b) || len(a) != 16 || bytes.Contains(a, []byte("acct")) {
		t.Errorf("keys %x and %x: want 16 bytes, different per salt", a, b)
	}
	if !bytes.Equal(a, FairnessKey([]byte("salt-1"), "acct-1")) {
		t.Error("the same subject and salt gave different keys")
	}
	fields := (&inferencev1.Scheduling{}).ProtoReflect().Descriptor().Fields()
	var names []string
	for i := range fields.Len() {
		names = append(names, string(fields.Get(i).Name()))
	}
	if strings.Join(names, ",") != "fairness_key,plan_class" {
		t.Errorf("Scheduling fields %v changed: a new one must not identify the requester (X1)", names)
	}
}

func TestServerRefusesOversizedSchedulingFields(t *testing.T) {
	t.Parallel()
	_, srv, _ := startServer(t, ServerConfig{}, newTestBackend("test"))
	client := newClient(t, srv.URL)
	req := testRequest("x")
	req.Scheduling = &inferencev1.Scheduling{FairnessKey: make([]byte, 33), PlanClass: strings.Repeat("p", 65)}
	_, err := client.Generate(t.Context(), connect.NewRequest(req))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "fairness key") || !strings.Contains(err.Error(), "plan class") {
		t.Errorf("got %v", err)
	}
}

// BenchmarkCrossEdgeDedup sends 100 identical misses spread over 3
// gateways (3 pools) to one tier and reports how many backend calls they
// made; the baseline sends 100 different requests the same way.
func BenchmarkCrossEdgeDedup(b *testing.B) {
	for _, mode := range []struct {
		name      string
		identical bool
	}{{"identical", true}, {"distinct-baseline", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var calls int64
			for b.Loop() {
				calls = crossEdgeRound(b, mode.identical)
			}
			b.ReportMetric(100, "requests")
			b.ReportMetric(float64(calls), "backend-calls")
		})
	}
}

func crossEdgeRound(b *testing.B, identical bool) int64 {
	b.Helper()
	backend := newTestBackend("test")
	backend.release = make(chan struct{})
	s, srv, _ := startServer(b, ServerConfig{MaxConcurrent: 128}, backend)
	joined := make(chan struct{}, 100)
	s.flights.joined = func() { joined <- struct{}{} }
	started := make(chan struct{}, 100)
	backend.started = started
	pools := []*Pool{testPool(b, srv.URL), testPool(b, srv.URL), testPool(b, srv.URL)}
	errs := make(chan error, 100)
	for i := range 100 {
		prompt := "the same miss"
		if !identical {
			prompt = fmt.Sprintf("miss %d", i)
		}
		go func() {
			_, _, err := pools[i%3].Generate(b.Context(), "", Request{Prompt: prompt, Width: 8, Height: 8, Seed: 1, Style: "auto",
				Scheduling: Scheduling{FairnessKey: []byte{byte(i)}, PlanClass: "default"}})
			errs <- err
		}()
	}
	// Hold the backend until every request has either started a call or
	// joined one, so the count does not depend on timing.
	for range 100 {
		select {
		case <-joined:
		case <-started:
		}
	}
	close(backend.release)
	for range 100 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return backend.calls.Load()
}

func TestLastCallerLeavingCancelsTheGeneration(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.started = make(chan struct{}, 4)
	b.release = make(chan struct{})
	b.finished = make(chan error, 4)
	s, srv, reg := startServer(t, ServerConfig{MaxConcurrent: 1}, b)
	queued := make(chan struct{}, 1)
	s.queued = func() { queued <- struct{}{} }
	client := newClient(t, srv.URL)

	// Running: its only caller leaves, the backend's context ends.
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := client.Generate(ctx, connect.NewRequest(testRequest("abandoned")))
		errc <- err
	}()
	<-b.started
	cancel()
	<-errc
	if err := <-b.finished; !errors.Is(err, context.Canceled) {
		t.Fatalf("backend context ended with %v, want canceled", err)
	}
	running := map[string]string{"model": "test", "plan": "default", "stage": "running"}
	waitForMetric(t, reg, "imagegate_inference_cancellations_total", running, 1)

	// Queued: the blocker holds the one slot; the second's caller leaves
	// before it starts, and it never runs.
	blockerDone := make(chan error, 1)
	go func() {
		_, err := client.Generate(t.Context(), connect.NewRequest(testRequest("blocker")))
		blockerDone <- err
	}()
	<-b.started
	ctx2, cancel2 := context.WithCancel(t.Context())
	go func() {
		_, err := client.Generate(ctx2, connect.NewRequest(testRequest("left while queued")))
		errc <- err
	}()
	<-queued
	cancel2()
	<-errc
	queuedStage := map[string]string{"model": "test", "plan": "default", "stage": "queued"}
	waitForMetric(t, reg, "imagegate_inference_cancellations_total", queuedStage, 1)
	close(b.release)
	if err := <-blockerDone; err != nil {
		t.Fatal(err)
	}
	if got := b.calls.Load(); got != 2 {
		t.Errorf("backend ran %d times, want 2 (the abandoned and the blocker, not the one left in the queue)", got)
	}
	// The same request again starts afresh rather than joining the
	// canceled flight.
	if _, err := client.Generate(t.Context(), connect.NewRequest(testRequest("abandoned"))); err != nil {
		t.Errorf("after abandonment: %v", err)
	}
}

// waitForMetric waits until a counter reaches want: the tier counts
// cancellations as it notices them, after the caller has its answer.
func waitForMetric(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for metricValueOrZero(t, g, name, labels) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s%v never reached %v", name, labels, want)
		}
		runtime.Gosched()
	}
}

func TestPaidJoinerPromotesASharedGeneration(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.started = make(chan struct{}, 32)
	b.release = make(chan struct{})
	// No run has finished, so the scheduler assumes 10 s a job, and at
	// 1:100 free's expected wait is long: let admission allow it.
	s, srv, reg := startServer(t, ServerConfig{MaxConcurrent: 1, GenerateTimeout: 1000 * time.Hour, Queue: QueueConfig{
		Classes:      map[string]sched.Class{"free": {Weight: 1}, "paid": {Weight: 100}},
		DefaultClass: "free",
		MaxWait:      1000 * time.Hour,
	}}, b)
	queued := make(chan struct{}, 64)
	s.queued = func() { queued <- struct{}{} }
	joined := make(chan struct{}, 1)
	s.flights.joined = func() { joined <- struct{}{} }
	client := newClient(t, srv.URL)
	type reply struct {
		prompt string
		err    error
	}
	replies := make(chan reply, 32)
	send := func(prompt, class string, key byte) {
		req := testRequest(prompt)
		req.Scheduling = &inferencev1.Scheduling{PlanClass: class, FairnessKey: []byte{key}}
		go func() {
			_, err := client.Generate(t.Context(), connect.NewRequest(req))
			replies <- reply{prompt, err}
		}()
	}
	send("blocker", "paid", 1)
	<-b.started
	for i := range 5 {
		send(fmt.Sprint("paid ", i), "paid", 1)
		<-queued
	}
	send("shared", "free", 2)
	<-queued
	send("shared", "paid", 3) // a paid caller joins the free one's generation
	<-joined
	// The promotion is asynchronous: wait until the shared job is queued
	// as paid.
	paid := map[string]string{"model": "test", "plan": "paid"}
	for metricValue(t, reg, "imagegate_inference_queue_depth", paid) != 6 {
		select {
		case <-queued:
		case <-time.After(60 * time.Second):
			t.Fatal("the shared generation was never queued as paid")
		}
	}
	close(b.release)
	for range 8 {
		if r := <-replies; r.err != nil {
			t.Fatal(r.err)
		}
	}
	// The backend's own record, not the replies: with one slot the order
	// calls started is the order they ran, while replies race each other
	// back over the network once the backend no longer blocks. As free at
	// weight 1 to 100 the shared generation would run after all five paid
	// ones; promoted, it shares paid's turn with key 1 and runs within the
	// first three after the blocker.
	order := b.startOrder()
	if i := slices.Index(order, "shared"); len(order) != 7 || i < 0 || i > 3 { // blocker, then at most paid 0 and 1
		t.Errorf("run order %v: the promoted generation ran too late", order)
	}
}
