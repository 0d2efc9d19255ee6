package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/retro"
	"github.com/imagegate/imagegate/store"
)

// failingBackend is retro, except that prompts containing "fail" fail.
type failingBackend struct{ inference.Backend }

func (f failingBackend) Generate(ctx context.Context, req inference.Request, p inference.ProgressFunc) (inference.Result, error) {
	if strings.Contains(req.Prompt, "fail") {
		return inference.Result{}, errors.New("gpu on fire")
	}
	return f.Backend.Generate(ctx, req, p)
}

// testPlans is a plan table whose free month holds exactly monthly
// credits, 256 px images costing 1 and 512 px costing 2.
func testPlans(monthly int64) PlansConfig {
	return PlansConfig{
		Plans: map[string]Plan{
			planAnonymous: {MaxSize: 256, RetentionDays: 1},
			"free":        {MonthlyCredits: monthly, MaxSize: 512, RetentionDays: 30},
		},
		ImageCredits: map[int]int64{256: 1, 512: 2},
	}
}

// creditsEnv runs with testPlans(monthly).
func creditsEnv(t *testing.T, monthly int64) *env {
	return newEnv(t, envOptions{backend: failingBackend{retro.New()}, cfg: Config{Plans: testPlans(monthly)}})
}

func (e *env) apiClient(b *browser) *browser {
	var created apiKeyJSON
	want(e.t, b.call("POST", "/v1/account/api-keys", `{"name":"load"}`, &created), 201)
	return &browser{t: e.t, e: e, client: &http.Client{Timeout: 60 * time.Second}, header: http.Header{"Authorization": {"Bearer " + created.Key}}}
}

func credits(t testing.TB, b *browser) int64 {
	t.Helper()
	var v accountJSON
	want(t, b.call("GET", "/v1/account", "", &v), 200)
	return v.Credits
}

func TestCreditsDropOnlyOnMisses(t *testing.T) {
	t.Parallel()
	e := creditsEnv(t, 10)
	b, acct := e.signedIn("spend@example.com")
	if got := credits(t, b); got != 10 {
		t.Fatalf("monthly grant: %d credits, want 10", got)
	}
	gen := func(body string, headers ...string) *http.Response {
		t.Helper()
		req := body
		c := *b
		c.header = b.header.Clone()
		for i := 0; i+1 < len(headers); i += 2 {
			c.header.Set(headers[i], headers[i+1])
		}
		return c.call("POST", "/v1/images/generations", req, nil)
	}
	steps := []struct {
		name, body string
		headers    []string
		status     int
		left       int64
	}{
		{"miss 512", `{"prompt":"one","size":"512x512"}`, nil, 200, 8},
		{"hit", `{"prompt":"one","size":"512x512"}`, nil, 200, 8},
		{"miss 256", `{"prompt":"two","size":"256x256"}`, nil, 200, 7},
		{"n=2 half cached", `{"prompt":"two","size":"256x256","n":2}`, nil, 200, 6},
		{"forced regeneration", `{"prompt":"one","size":"512x512"}`, []string{"Cache-Control", "no-cache"}, 200, 4},
		{"failure refunds", `{"prompt":"fail please","size":"512x512"}`, nil, 500, 4},
		{"plan limit", `{"prompt":"big","size":"1024x1024"}`, nil, 403, 4},
	}
	for _, s := range steps {
		resp := gen(s.body, s.headers...)
		if resp.StatusCode != s.status {
			t.Fatalf("%s: status %d, want %d", s.name, resp.StatusCode, s.status)
		}
		if got := credits(t, b); got != s.left {
			t.Fatalf("%s: %d credits left, want %d", s.name, got, s.left)
		}
	}
	want(t, gen(`{"prompt":"three","size":"512x512","n":3}`), 402)
	if got := credits(t, b); got != 4 {
		t.Errorf("a refused request cost credits: %d left", got)
	}
	checkLedger(t, e.db, acct.ID)
}

// checkLedger asserts that the balance equals the sum of the ledger and
// nothing is left held.
func checkLedger(t *testing.T, db *store.DB, id string) {
	t.Helper()
	a, err := db.Account(id)
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := db.Ledger(id)
	var sum int64
	for _, e := range entries {
		sum += e.Amount
	}
	if sum != a.Credits || a.Held != 0 {
		t.Errorf("ledger sums to %d, balance %d, held %d", sum, a.Credits, a.Held)
	}
	if mm, _ := db.Reconcile(false); len(mm) != 0 {
		t.Errorf("reconcile mismatches: %+v", mm)
	}
}

func TestConcurrentGenerationsNeverOverspend(t *testing.T) {
	t.Parallel()
	e := creditsEnv(t, 10)
	b, acct := e.signedIn("storm@example.com")
	api := e.apiClient(b)
	const n = 500
	var ok, broke atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp := api.call("POST", "/v1/images/generations", fmt.Sprintf(`{"prompt":"storm %d","size":"256x256"}`, i), nil)
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 402:
				broke.Add(1)
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || broke.Load() != n-10 {
		t.Errorf("%d generated, %d refused; want 10 and %d", ok.Load(), broke.Load(), n-10)
	}
	if got := e.generations(); got != 10 {
		t.Errorf("the tier generated %v images, want 10", got)
	}
	entries, _ := e.db.Ledger(acct.ID)
	charges := 0
	for _, en := range entries {
		if en.Kind == store.KindCharge {
			charges++
		}
	}
	if charges != 10 {
		t.Errorf("%d charges in the ledger, want 10", charges)
	}
	checkLedger(t, e.db, acct.ID)
}

func TestAnonymousDailyQuota(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := newEnv(t, envOptions{limits: true, now: clock.Now, cfg: Config{
		FreeQuota:  DailyQuotaConfig{FreeImagesPerDay: FreeImagesPerDay(2)},
		RateLimits: RateLimitConfig{Disabled: true},
	}})
	for i, status := range []int{200, 200, 429} {
		resp, _ := e.postJSON(fmt.Sprintf(`{"prompt":"free %d","size":"256x256"}`, i))
		if resp.StatusCode != status {
			t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, status)
		}
		if status == 429 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("quota refusal without Retry-After")
		}
	}
	// Hits stay free; a failed generation would not have counted.
	if resp, _ := e.postJSON(`{"prompt":"free 0","size":"256x256"}`); resp.StatusCode != 200 {
		t.Errorf("a cache hit was refused by the quota: %d", resp.StatusCode)
	}
	if resp, _ := e.postJSON(`{"prompt":"too big","size":"1024x1024"}`); resp.StatusCode != 403 {
		t.Errorf("anonymous 1024: %d, want 403 (plan limit)", resp.StatusCode)
	}
	clock.Advance(24 * time.Hour)
	if resp, _ := e.postJSON(`{"prompt":"free tomorrow","size":"256x256"}`); resp.StatusCode != 200 {
		t.Errorf("quota did not reset the next day: %d", resp.StatusCode)
	}
}

func TestRateLimitHeadersAndRefusals(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := newEnv(t, envOptions{limits: true, now: clock.Now, cfg: Config{
		FreeQuota: DailyQuotaConfig{FreeImagesPerDay: UnlimitedFreeImages()},
		RateLimits: RateLimitConfig{
			IP:        LimitPolicy{Quota: 40, Window: time.Minute},
			Anonymous: LimitPolicy{Quota: 40, Window: time.Minute},
		},
	}})
	resp, _ := e.postJSON(`{"prompt":"limited","size":"256x256"}`) // a miss: 20 units
	if resp.StatusCode != 200 || resp.Header.Get("RateLimit-Policy") == "" || resp.Header.Get("RateLimit") == "" {
		t.Fatalf("first request: %d, headers %v", resp.StatusCode, resp.Header)
	}
	statuses := map[int]int{}
	for range 20 {
		resp, _ := e.postJSON(`{"prompt":"limited","size":"256x256"}`) // hits: 4 units
		statuses[resp.StatusCode]++
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Fatalf("429 without Retry-After")
		}
	}
	if statuses[200] != 5 || statuses[429] != 15 {
		t.Errorf("statuses %v; want 5 allowed (20 units left / 4) and 15 refused", statuses)
	}
	clock.Advance(time.Minute)
	if resp, _ := e.postJSON(`{"prompt":"limited","size":"256x256"}`); resp.StatusCode != 200 {
		t.Errorf("after the window: %d", resp.StatusCode)
	}
}

// TestRequestsAreNeverHalfPaid: a request for several images reserves all
// of them before any reaches the GPU, so a refusal generates nothing that
// a later request could pick up for free.
func TestRequestsAreNeverHalfPaid(t *testing.T) {
	t.Parallel()
	e := creditsEnv(t, 2)
	b, acct := e.signedIn("half@example.com")
	want(t, b.call("POST", "/v1/images/generations", `{"prompt":"two at once","size":"512x512","n":2}`, nil), 402)
	if got := e.generations(); got != 0 {
		t.Errorf("a refused request ran %v generations", got)
	}
	if got := credits(t, b); got != 2 {
		t.Errorf("credits %d after a refused request, want 2", got)
	}
	// The first image of that request is not waiting in the cache.
	resp := b.call("POST", "/v1/images/generations", `{"prompt":"two at once","size":"512x512"}`, nil)
	want(t, resp, 200)
	if !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=miss") {
		t.Errorf("after a refused n=2 request: %q, want a miss", resp.Header.Get("Cache-Status"))
	}
	checkLedger(t, e.db, acct.ID)

	anon := newEnv(t, envOptions{limits: true, cfg: Config{
		FreeQuota: DailyQuotaConfig{FreeImagesPerDay: FreeImagesPerDay(1)}, RateLimits: RateLimitConfig{Disabled: true},
	}})
	for range 3 {
		if resp, _ := anon.postJSON(`{"prompt":"free pair","size":"256x256","n":2}`); resp.StatusCode != 429 {
			t.Fatalf("n=2 over a quota of 1: %d, want 429", resp.StatusCode)
		}
	}
	if got := anon.generations(); got != 0 {
		t.Errorf("refused anonymous requests ran %v generations", got)
	}
}
