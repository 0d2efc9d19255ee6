package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/retro"
	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

// tierSpy records the Scheduling of every generation the gateway sends the
// tier, decoded from the Connect request on the wire.
type tierSpy struct {
	mu   sync.Mutex
	seen []*inferencev1.Scheduling
}

func (s *tierSpy) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/Generate") || strings.HasSuffix(r.URL.Path, "/GenerateStream") {
			body, _ := io.ReadAll(r.Body)
			msg := body
			if strings.HasPrefix(r.Header.Get("Content-Type"), "application/connect+") && len(body) >= 5 {
				n := binary.BigEndian.Uint32(body[1:5])
				msg = body[5 : 5+n] // one enveloped message: the request
			}
			var req inferencev1.GenerateRequest
			if err := proto.Unmarshal(msg, &req); err == nil {
				s.mu.Lock()
				s.seen = append(s.seen, req.GetScheduling())
				s.mu.Unlock()
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(w, r)
	})
}

func (s *tierSpy) last(t *testing.T) *inferencev1.Scheduling {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		t.Fatal("the tier saw no generation")
	}
	return s.seen[len(s.seen)-1]
}

// The tier learns a plan class and an opaque key: equal for one account's
// requests, different between accounts, and neither the account ID nor
// anything derived from it without the gateway's salt (promise X1).
func TestSchedulingCarriesOpaqueKeyAndPlan(t *testing.T) {
	t.Parallel()
	spy := &tierSpy{}
	salt := []byte("fairness-salt-for-tests-0123456789abcdef")
	e := newEnv(t, envOptions{tierWrap: spy.wrap, cfg: Config{FairnessSalt: salt}})
	a, acctA := e.signedIn("fair-a@example.com")
	b, acctB := e.signedIn("fair-b@example.com")

	want(t, a.call("POST", "/v1/images/generations", `{"prompt":"a red kite","size":"256x256"}`, nil), 200)
	first := spy.last(t)
	want(t, a.call("POST", "/v1/images/generations", `{"prompt":"a blue kite","size":"256x256"}`, nil), 200)
	second := spy.last(t)
	want(t, b.call("POST", "/v1/images/generations", `{"prompt":"a green kite","size":"256x256"}`, nil), 200)
	other := spy.last(t)

	if first.GetPlanClass() != acctA.Plan || other.GetPlanClass() != acctB.Plan {
		t.Errorf("plan classes %q, %q; want the accounts' plans %q, %q", first.GetPlanClass(), other.GetPlanClass(), acctA.Plan, acctB.Plan)
	}
	if len(first.GetFairnessKey()) != 16 || !bytes.Equal(first.GetFairnessKey(), second.GetFairnessKey()) {
		t.Errorf("one account's keys %x and %x: want one 16-byte key", first.GetFairnessKey(), second.GetFairnessKey())
	}
	if bytes.Equal(first.GetFairnessKey(), other.GetFairnessKey()) {
		t.Error("two accounts share a fairness key")
	}
	if !bytes.Equal(first.GetFairnessKey(), inference.FairnessKey(salt, "account:"+acctA.ID)) {
		t.Error("the key is not the salted HMAC of the account")
	}
	if bytes.Contains(first.GetFairnessKey(), []byte(acctA.ID)) || bytes.Equal(first.GetFairnessKey(), inference.FairnessKey(nil, "account:"+acctA.ID)) {
		t.Error("the key can be linked to the account without the salt")
	}

	// A visitor without an account is keyed by its network, in the
	// anonymous class.
	resp, _ := e.postJSON(`{"prompt":"an orange kite","size":"256x256"}`)
	want(t, resp, 200)
	anon := spy.last(t)
	if anon.GetPlanClass() != planAnonymous || len(anon.GetFairnessKey()) != 16 || bytes.Equal(anon.GetFairnessKey(), first.GetFairnessKey()) {
		t.Errorf("anonymous scheduling %q %x", anon.GetPlanClass(), anon.GetFairnessKey())
	}
}

// gatedBackend is retro that holds each generation until released, and
// says when one has begun.
type gatedBackend struct {
	inference.Backend
	began   chan struct{}
	release chan struct{}
}

func newGatedBackend() *gatedBackend {
	return &gatedBackend{Backend: retro.New(), began: make(chan struct{}, 16), release: make(chan struct{})}
}

func (b *gatedBackend) Generate(ctx context.Context, req inference.Request, progress inference.ProgressFunc) (inference.Result, error) {
	b.began <- struct{}{}
	if progress != nil {
		progress(0.25, "sampling")
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return inference.Result{}, ctx.Err()
	}
	return b.Backend.Generate(ctx, req, progress)
}

// A tier that refuses admission because the expected wait is too long
// answers 503 with its own estimate as Retry-After, not a fixed guess.
func TestTierAdmissionRefusalIs503WithItsRetryAfter(t *testing.T) {
	t.Parallel()
	gate := newGatedBackend()
	e := newEnv(t, envOptions{backend: gate, tier: inference.ServerConfig{
		MaxConcurrent: 1, Queue: inference.QueueConfig{MaxWait: time.Millisecond},
	}})
	done := make(chan int, 1)
	go func() {
		resp, _ := e.postJSON(`{"prompt":"the one that runs","size":"256x256"}`)
		done <- resp.StatusCode
	}()
	<-gate.began // the only slot is busy: any other job would wait

	resp, body := e.postJSON(`{"prompt":"the one refused","size":"256x256"}`)
	if resp.StatusCode != 503 {
		t.Fatalf("status %d %s, want 503", resp.StatusCode, body)
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	// The tier expects a wait of one run of a model it has not timed yet:
	// sched's default cost of 10 s, far above the gateway's fallback of 2.
	if err != nil || secs != 10 {
		t.Errorf("Retry-After %q, want the tier's 10", resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(string(body), `"type":"server_error"`) {
		t.Errorf("body %s", body)
	}
	close(gate.release)
	if code := <-done; code != 200 {
		t.Errorf("the running generation ended %d", code)
	}
}

// A model the tier's catalogue prices costs its catalogue price per
// image, not the plan table's price for the size.
func TestCataloguePriceIsCharged(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		tier: inference.ServerConfig{Terms: map[string]inference.ModelTerms{"retro": {PriceCredits: 3}}},
		cfg:  Config{Plans: testPlans(10)},
	})
	b, _ := e.signedIn("priced@example.com")
	want(t, b.call("POST", "/v1/images/generations", `{"prompt":"a priced kite","size":"256x256"}`, nil), 200)
	if got := credits(t, b); got != 7 {
		t.Errorf("after one miss: %d credits, want 10 - the catalogue's 3", got)
	}
}
