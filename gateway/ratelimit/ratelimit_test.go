package ratelimit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/clientip"
	"github.com/imagegate/imagegate/internal/testpeer"
)

var rateTestEpoch = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// rateTestApp is a Fiber app whose error handler sends an *apierror.Error
// the way the gateway's does: its status, Retry-After and the DESIGN.md
// error body. Anything else is a 500, which no test here expects.
func rateTestApp() *fiber.App {
	return fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			var ae *apierror.Error
			if !errors.As(err, &ae) {
				return c.Status(fiber.StatusInternalServerError).SendString(err.Error())
			}
			if ae.RetryAfter > 0 {
				c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ae.RetryAfter))
			}
			return c.Status(ae.Status).JSON(errorBody{Error: errorDetail{Message: ae.Msg, Type: ae.Type, Code: ae.Code}})
		},
	})
}

// errorBody is the DESIGN.md error shape.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

// rateTestServe runs app on a real loopback listener, so the TCP peer is
// 127.0.0.1, and returns its base URL.
func rateTestServe(t *testing.T, app *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	t.Cleanup(func() { app.Shutdown() })
	return "http://" + ln.Addr().String()
}

// rateTestResponse is what the tests look at in a response.
type rateTestResponse struct {
	Status     int
	RetryAfter string
	Policy     string
	Limit      string
	Code       string
	Body       string
}

func rateTestGet(t *testing.T, client *http.Client, url string, header map[string]string) rateTestResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := rateTestResponse{
		Status:     resp.StatusCode,
		RetryAfter: resp.Header.Get("Retry-After"),
		Policy:     resp.Header.Get("RateLimit-Policy"),
		Limit:      resp.Header.Get("RateLimit"),
	}
	if resp.StatusCode >= 400 {
		var eb errorBody
		if err := json.Unmarshal(body, &eb); err != nil {
			t.Fatalf("error body %q: %v", body, err)
		}
		r.Code = eb.Error.Code
	} else {
		r.Body = string(body)
	}
	return r
}

func mustRateLimiter(t testing.TB, cfg Config, ipCfg clientip.Config, clock *testpeer.Clock) *Limiter {
	t.Helper()
	res, err := clientip.New(ipCfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(cfg, res, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRateLimitConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string // substrings, all required; none means valid
	}{
		{name: "zero value is the defaults", cfg: Config{}},
		{name: "disabled", cfg: Config{Disabled: true}},
		{
			name:    "quota below the dearest cost",
			cfg:     Config{IP: Policy{Quota: 10, Window: time.Minute}},
			wantErr: []string{"rate limit ip: quota 10 cannot pay for the dearest request (cost 20)"},
		},
		{
			name:    "fractional window",
			cfg:     Config{Anonymous: Policy{Quota: 100, Window: 1500 * time.Millisecond}},
			wantErr: []string{"rate limit anonymous: window 1.5s must be whole seconds"},
		},
		{
			name: "costs out of order and an unknown default plan, all reported",
			cfg: Config{
				Costs:       Costs{Default: 1, Object: 5, GenerationHit: 2, GenerationMiss: 20},
				Plans:       map[string]Policy{"pro": {Quota: 100, Window: time.Minute}, "bad": {Quota: 0, Window: time.Minute}},
				DefaultPlan: "free",
			},
			wantErr: []string{"object ≤ generation hit ≤ generation miss", `plan "bad": quota 0`, `default plan "free" is not among`},
		},
		{name: "negative cap", cfg: Config{MaxKeys: -1}, wantErr: []string{"max keys must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !testpeer.CheckValidation(t, tt.cfg.Validate(), tt.wantErr) {
				return
			}
			if tt.cfg.MaxKeys != defaultRateMaxKeys || tt.cfg.Plans[tt.cfg.DefaultPlan].Quota == 0 {
				t.Errorf("defaults not filled: %+v", tt.cfg)
			}
		})
	}
}

// TestRateLimitTenThousandRequestsAtFiveTimesTheLimit drives one client
// address at five requests a second against a limit of one a second (60
// per 60 s) for 10,000 requests over a real socket.
func TestRateLimitTenThousandRequestsAtFiveTimesTheLimit(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{
		IP:        Policy{Quota: 60, Window: time.Minute},
		Anonymous: Policy{Quota: 6000, Window: time.Minute}, // never the binding limit here
	}, clientip.Config{}, clock)
	app := rateTestApp()
	var served atomic.Int64
	app.Get("/x", l.Limit(1, nil), func(c *fiber.Ctx) error {
		served.Add(1)
		return c.SendString("ok")
	})
	url := rateTestServe(t, app) + "/x"
	client := &http.Client{Timeout: 10 * time.Second}

	const requests = 10000
	const step = 200 * time.Millisecond // 5 per second
	allowed, refused := 0, 0
	for i := range requests {
		r := rateTestGet(t, client, url, nil)
		switch r.Status {
		case http.StatusOK:
			allowed++
		case http.StatusTooManyRequests:
			refused++
			secs, err := strconv.Atoi(r.RetryAfter)
			if err != nil || secs < 1 || secs > 1 {
				// A refused client waits for one token at one per second.
				t.Fatalf("request %d: Retry-After %q, want 1", i, r.RetryAfter)
			}
			if r.Code != "rate_limited" {
				t.Fatalf("request %d: code %q", i, r.Code)
			}
		default:
			t.Fatalf("request %d: status %d", i, r.Status)
		}
		if r.Policy == "" || r.Limit == "" {
			t.Fatalf("request %d (%d): RateLimit headers missing", i, r.Status)
		}
		clock.Advance(step)
	}
	// The bucket starts with 60 and the client always wants more than it
	// has, so the bucket is never full again and every token it ever holds
	// is spent: 60 + 1/s × 1999.8 s elapsed by the last request, floored.
	const wantAllowed = 60 + 1999
	if allowed != wantAllowed || refused != requests-wantAllowed || served.Load() != wantAllowed {
		t.Fatalf("allowed %d, refused %d, served %d; want %d allowed", allowed, refused, served.Load(), wantAllowed)
	}
}

func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{
		IP:        Policy{Quota: 10, Window: 10 * time.Second}, // 1/s
		Anonymous: Policy{Quota: 4, Window: 8 * time.Second},   // 0.5/s
		Plans: map[string]Policy{
			"free": {Quota: 3, Window: 3 * time.Second},
			"paid": {Quota: 9, Window: 3 * time.Second},
		},
		Costs: Costs{Default: 1, Object: 1, GenerationHit: 1, GenerationMiss: 2},
	}, clientip.Config{}, clock)
	app := rateTestApp()
	who := func(c *fiber.Ctx) Identity {
		return Identity{Account: c.Get("X-Test-Account"), APIKey: c.Get("X-Test-Key"), Plan: c.Get("X-Test-Plan")}
	}
	app.Get("/x", l.Limit(1, who), func(c *fiber.Ctx) error { return c.SendString("ok") })
	app.Get("/unlimited", func(c *fiber.Ctx) error { return c.SendString("ok") })
	base := rateTestServe(t, app)
	client := &http.Client{Timeout: 10 * time.Second}

	const anonPolicy = `"ip";q=10;w=10, "anon";q=4;w=8`
	steps := []struct {
		advance time.Duration
		path    string
		header  map[string]string
		want    rateTestResponse
	}{
		{path: "/x", want: rateTestResponse{Status: 200, Policy: anonPolicy, Limit: `"ip";r=9;t=1, "anon";r=3;t=2`, Body: "ok"}},
		{path: "/x", want: rateTestResponse{Status: 200, Policy: anonPolicy, Limit: `"ip";r=8;t=2, "anon";r=2;t=4`, Body: "ok"}},
		{path: "/x", want: rateTestResponse{Status: 200, Policy: anonPolicy, Limit: `"ip";r=7;t=3, "anon";r=1;t=6`, Body: "ok"}},
		{path: "/x", want: rateTestResponse{Status: 200, Policy: anonPolicy, Limit: `"ip";r=6;t=4, "anon";r=0;t=8`, Body: "ok"}},
		// The anonymous bucket refuses; the IP bucket is not charged, and
		// no window outlasts Retry-After.
		{path: "/x", want: rateTestResponse{Status: 429, RetryAfter: "2", Policy: anonPolicy, Limit: `"ip";r=6;t=2, "anon";r=0;t=2`, Code: "rate_limited"}},
		{advance: 2 * time.Second, path: "/x", want: rateTestResponse{Status: 200, Policy: anonPolicy, Limit: `"ip";r=7;t=3, "anon";r=0;t=8`, Body: "ok"}},
		// Signed in: the account's plan bucket instead of the anonymous one.
		{path: "/x", header: map[string]string{"X-Test-Account": "acct-1", "X-Test-Plan": "paid"},
			want: rateTestResponse{Status: 200, Policy: `"ip";q=10;w=10, "acct";q=9;w=3`, Limit: `"ip";r=6;t=4, "acct";r=8;t=1`, Body: "ok"}},
		// An unknown plan is the default plan; an API key has a bucket of
		// its own.
		{path: "/x", header: map[string]string{"X-Test-Account": "acct-2", "X-Test-Key": "key-1", "X-Test-Plan": "gold"},
			want: rateTestResponse{Status: 200, Policy: `"ip";q=10;w=10, "acct";q=3;w=3, "key";q=3;w=3`, Limit: `"ip";r=5;t=5, "acct";r=2;t=1, "key";r=2;t=1`, Body: "ok"}},
		// Routes without the middleware carry no RateLimit headers.
		{path: "/unlimited", want: rateTestResponse{Status: 200, Body: "ok"}},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		got := rateTestGet(t, client, base+s.path, s.header)
		if diff := cmp.Diff(s.want, got); diff != "" {
			t.Fatalf("step %d (-want +got):\n%s", i, diff)
		}
	}
}

func TestRateLimitAccountRefusalNamesAccount(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{
		Plans: map[string]Policy{"free": {Quota: 20, Window: 20 * time.Second}},
	}, clientip.Config{}, clock)
	subs := l.subjects(netip.MustParseAddr("192.0.2.1"), Identity{Account: "a"})
	if d := l.take(subs, 20); !d.allowed {
		t.Fatal("first charge refused")
	}
	d := l.take(subs, 20)
	if d.allowed {
		t.Fatal("second charge allowed with an empty account bucket")
	}
	ae := rateLimited(d)
	want := &apierror.Error{Status: 429, Type: "rate_limit_error", Code: "rate_limited", Msg: "too many requests from this account; retry in 20 s", RetryAfter: 20}
	if diff := cmp.Diff(want, ae); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// The IP bucket paid for the first charge only.
	if got := d.states[0]; got.name != "ip" || got.remaining != 580 {
		t.Errorf("ip state %+v, want 580 remaining", got)
	}
}

// TestRateChargeExtra charges a cache miss's extra cost after the
// middleware let the request in, as the generation handler does before it
// calls the GPU.
func TestRateChargeExtra(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{
		IP:        Policy{Quota: 30, Window: 30 * time.Second}, // 1/s
		Anonymous: Policy{Quota: 3000, Window: 30 * time.Second},
	}, clientip.Config{}, clock)
	app := rateTestApp()
	var gpuCalls atomic.Int64
	app.Get("/gen", l.Limit(4, nil), func(c *fiber.Ctx) error {
		ch := ChargeOf(c)
		// The charge works without the fiber.Ctx, from another goroutine.
		errc := make(chan error, 1)
		go func() { errc <- ch.Extra(16) }()
		if err := <-errc; err != nil {
			return err
		}
		gpuCalls.Add(1)
		return c.SendString("generated")
	})
	base := rateTestServe(t, app)
	client := &http.Client{Timeout: 10 * time.Second}

	const policy = `"ip";q=30;w=30, "anon";q=3000;w=30`
	want := []rateTestResponse{
		{Status: 200, Policy: policy, Limit: `"ip";r=10;t=20, "anon";r=2980;t=1`, Body: "generated"},
		// 4 admitted it (10 → 6), then 16 more could not be paid: 429
		// before the GPU, with the retry for 16 − 6 tokens at 1/s.
		{Status: 429, RetryAfter: "10", Policy: policy, Limit: `"ip";r=6;t=10, "anon";r=2976;t=1`, Code: "rate_limited"},
	}
	for i, w := range want {
		got := rateTestGet(t, client, base+"/gen", nil)
		if diff := cmp.Diff(w, got); diff != "" {
			t.Fatalf("request %d (-want +got):\n%s", i, diff)
		}
	}
	if n := gpuCalls.Load(); n != 1 {
		t.Errorf("GPU called %d times, want 1", n)
	}
	// A charge bigger than the whole bucket empties it instead of being
	// refused forever.
	clock.Advance(30 * time.Second)
	subs := l.subjects(netip.MustParseAddr("127.0.0.1"), Identity{})
	if d := l.take(subs, 31); !d.allowed || d.states[0].remaining != 0 {
		t.Errorf("oversized charge on a full bucket: %+v", d)
	}
}

func TestRateLimitDisabled(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{Disabled: true, IP: Policy{Quota: 20, Window: time.Minute}}, clientip.Config{}, clock)
	app := rateTestApp()
	app.Get("/x", l.Limit(20, nil), func(c *fiber.Ctx) error {
		if err := ChargeOf(c).Extra(1000); err != nil {
			return err
		}
		return c.SendString("ok")
	})
	for i := range 50 {
		resp, err := app.Test(httptest.NewRequest(http.MethodGet, "/x", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("RateLimit") != "" || resp.Header.Get("RateLimit-Policy") != "" {
			t.Fatalf("request %d: status %d, RateLimit %q", i, resp.StatusCode, resp.Header.Get("RateLimit"))
		}
	}
	if s := l.Stats(); s.Keys != 0 {
		t.Errorf("disabled limiter remembers %d keys", s.Keys)
	}
}

// TestRateLimitSpoofedHeadersDoNotChangeKey sends every request with a new
// forged X-Forwarded-For and Fly-Client-IP over a real socket from
// 127.0.0.1. Untrusted, the forgeries change nothing; once 127.0.0.1 is a
// trusted proxy, the configured header is the key.
func TestRateLimitSpoofedHeadersDoNotChangeKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		ipCfg     clientip.Config
		header    func(i int) map[string]string
		wantCodes []int
	}{
		{
			name:  "no proxy trusted",
			ipCfg: clientip.Config{},
			header: func(i int) map[string]string {
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i), "Fly-Client-IP": fmt.Sprintf("203.0.113.%d", i)}
			},
			wantCodes: []int{200, 200, 200, 429, 429},
		},
		{
			name:  "another proxy trusted, XFF configured",
			ipCfg: clientip.Config{TrustedProxies: []string{"10.0.0.0/8"}, Header: "X-Forwarded-For"},
			header: func(i int) map[string]string {
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d, 10.0.0.1", i)}
			},
			wantCodes: []int{200, 200, 200, 429, 429},
		},
		{
			name:  "loopback trusted, Fly-Client-IP configured, XFF forged",
			ipCfg: clientip.Config{TrustedProxies: []string{"127.0.0.1/32"}, Header: "fly-client-ip"},
			header: func(i int) map[string]string {
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i), "Fly-Client-IP": "203.0.113.9"}
			},
			wantCodes: []int{200, 200, 200, 429, 429},
		},
		{
			name:  "loopback trusted, each request from a new client",
			ipCfg: clientip.Config{TrustedProxies: []string{"127.0.0.1"}, Header: "Fly-Client-IP"},
			header: func(i int) map[string]string {
				return map[string]string{"Fly-Client-IP": fmt.Sprintf("203.0.113.%d", i)}
			},
			wantCodes: []int{200, 200, 200, 200, 200},
		},
		{
			name:  "loopback trusted, XFF walked from the right",
			ipCfg: clientip.Config{TrustedProxies: []string{"127.0.0.0/8", "10.0.0.0/8"}, Header: "X-Forwarded-For"},
			header: func(i int) map[string]string {
				// The forged left part changes; the client our proxy saw does not.
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d, 203.0.113.7, 10.1.2.3", i)}
			},
			wantCodes: []int{200, 200, 200, 429, 429},
		},
		{
			name:  "IPv6 clients in one /64 share a bucket",
			ipCfg: clientip.Config{TrustedProxies: []string{"127.0.0.1/32"}, Header: "X-Forwarded-For"},
			header: func(i int) map[string]string {
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("2001:db8:1:2:%x::%x", i*7919, i)}
			},
			wantCodes: []int{200, 200, 200, 429, 429},
		},
		{
			name:  "IPv6 clients in different /64s do not",
			ipCfg: clientip.Config{TrustedProxies: []string{"127.0.0.1/32"}, Header: "X-Forwarded-For"},
			header: func(i int) map[string]string {
				return map[string]string{"X-Forwarded-For": fmt.Sprintf("2001:db8:1:%x::1", i)}
			},
			wantCodes: []int{200, 200, 200, 200, 200},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := testpeer.NewClock(rateTestEpoch)
			l := mustRateLimiter(t, Config{
				IP:        Policy{Quota: 3, Window: time.Hour},
				Anonymous: Policy{Quota: 300, Window: time.Hour},
				Costs:     Costs{Default: 1, Object: 1, GenerationHit: 1, GenerationMiss: 1},
			}, tt.ipCfg, clock)
			app := rateTestApp()
			app.Get("/x", l.Limit(1, nil), func(c *fiber.Ctx) error { return c.SendString(l.clientIP.Addr(c).String()) })
			url := rateTestServe(t, app) + "/x"
			client := &http.Client{Timeout: 10 * time.Second}
			var got []int
			for i := range tt.wantCodes {
				got = append(got, rateTestGet(t, client, url, tt.header(i+1)).Status)
			}
			if diff := cmp.Diff(tt.wantCodes, got); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRateLimitPlanChangeKeepsSpending(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{
		Plans: map[string]Policy{
			"free": {Quota: 20, Window: 20 * time.Second},
			"paid": {Quota: 100, Window: 20 * time.Second},
		},
	}, clientip.Config{}, clock)
	addr := netip.MustParseAddr("192.0.2.1")
	if d := l.take(l.subjects(addr, Identity{Account: "a", Plan: "free"}), 15); !d.allowed {
		t.Fatal("refused")
	}
	// Upgraded: the bucket grows to the paid size, keeping what was spent.
	d := l.take(l.subjects(addr, Identity{Account: "a", Plan: "paid"}), 1)
	got := d.states[1]
	want := rateState{name: "acct", quota: 100, window: 20, remaining: 4, reset: 20}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(rateState{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestRateLimiterForgetsOnlyFullBuckets(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{MaxKeys: 1000}, clientip.Config{}, clock)
	policy := Policy{Quota: 10, Window: 10 * time.Second}
	subject := func(i int) []rateSubject {
		return []rateSubject{{name: "ip", key: addrRateKey(rateNSIP, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})), policy: policy}}
	}
	for i := range 10 {
		l.take(subject(i), 1+i) // bucket i is full again after 1+i seconds
	}
	if n := l.Stats().Keys; n != 10 {
		t.Fatalf("%d keys, want 10", n)
	}
	clock.Advance(5 * time.Second)
	// Buckets 0–4 are full: forgetting them changes nothing; 5–9 are not.
	if n := l.Sweep(); n != 5 {
		t.Errorf("sweep forgot %d, want 5", n)
	}
	for i := 5; i < 10; i++ {
		d := l.take(subject(i), 0)
		if want := int64(min(10, 10-(1+i)+5)); d.states[0].remaining != want {
			t.Errorf("bucket %d: %d remaining, want %d (kept across the sweep)", i, d.states[0].remaining, want)
		}
	}
	// A forgotten bucket comes back full: exactly Quota allowed, as if it
	// had been remembered.
	allowed := 0
	for l.take(subject(0), 1).allowed {
		allowed++
	}
	if allowed != 10 {
		t.Errorf("forgotten bucket allowed %d, want 10", allowed)
	}
	// New keys also clear full buckets from the cold end as they arrive.
	clock.Advance(time.Hour)
	for i := 100; i < 110; i++ {
		l.take(subject(i), 1)
	}
	if s := l.Stats(); s.Keys != 10 || s.EvictedLive != 0 {
		t.Errorf("stats %+v: want 10 keys (the new ones), no live evictions", s)
	}
}

func TestRateLimiterHardCap(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{MaxKeys: 8}, clientip.Config{}, clock)
	policy := Policy{Quota: 10, Window: time.Hour}
	subject := func(i int) []rateSubject {
		return []rateSubject{{name: "ip", key: addrRateKey(rateNSIP, netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})), policy: policy}}
	}
	remaining := func(i int) int64 { return l.take(subject(i), 0).states[0].remaining }

	l.take(subject(0), 10)   // coldest, empty
	l.take(subject(1), 0)    // full: idle
	for i := 2; i < 8; i++ { // busy
		l.take(subject(i), 5)
	}
	// At the cap, a new key evicts the idle bucket, not the colder busy one.
	l.take(subject(8), 5)
	if s := l.Stats(); s.Keys != 8 || s.EvictedIdle != 1 || s.EvictedLive != 0 {
		t.Fatalf("stats %+v, want 8 keys and one idle eviction", s)
	}
	if r := remaining(0); r != 0 {
		t.Errorf("coldest busy bucket was forgotten: %d remaining", r)
	}
	// remaining(0) touched bucket 0; now bucket 2 is coldest. Nothing is
	// idle, so the least recently used bucket goes.
	l.take(subject(9), 5)
	if s := l.Stats(); s.Keys != 8 || s.EvictedLive != 1 {
		t.Fatalf("stats %+v, want 8 keys and one live eviction", s)
	}
	if r := remaining(2); r != 10 {
		t.Errorf("bucket 2 has %d remaining; want it forgotten (10)", r)
	}
	// Many distinct keys never grow it past the cap.
	for i := 10; i < 5000; i++ {
		l.take(subject(i), 1)
		if i%500 == 0 {
			if n := l.Stats().Keys; n > 8 {
				t.Fatalf("%d keys with a cap of 8", n)
			}
		}
	}
}

func TestRateLimiterCapAcrossShards(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	const maxKeys = 1 << 16
	l := mustRateLimiter(t, Config{MaxKeys: maxKeys}, clientip.Config{}, clock)
	if n := len(l.buckets.shards); n != 64 {
		t.Fatalf("%d shards, want 64", n)
	}
	policy := Policy{Quota: 10, Window: time.Hour}
	// Half as many keys again as the cap overfills every shard (each gets
	// 1,536 on average, ±39) without making the test slow.
	for i := range maxKeys * 3 / 2 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.take([]rateSubject{{name: "ip", key: addrRateKey(rateNSIP, a), policy: policy}}, 1)
	}
	if n := l.Stats().Keys; n > maxKeys {
		t.Errorf("%d keys with a cap of %d", n, maxKeys)
	}
}

func TestRateLimiterConcurrentChargesAreExact(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(t, Config{
		IP:    Policy{Quota: 1000, Window: time.Hour},
		Plans: map[string]Policy{"free": {Quota: 300, Window: time.Hour}},
	}, clientip.Config{}, clock)
	// Two accounts behind one address, charged concurrently: the account
	// buckets and the shared address bucket must all agree.
	addr := netip.MustParseAddr("2001:db8::1")
	var allowed [2]atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			acct := g % 2
			subs := l.subjects(addr, Identity{Account: strconv.Itoa(acct)})
			for range 100 {
				if l.take(subs, 1).allowed {
					allowed[acct].Add(1)
				}
			}
		})
	}
	wg.Wait()
	if a, b := allowed[0].Load(), allowed[1].Load(); a != 300 || b != 300 {
		t.Errorf("accounts allowed %d and %d, want 300 each", a, b)
	}
	d := l.take(l.subjects(addr, Identity{Account: "2"}), 0)
	if r := d.states[0].remaining; r != 400 {
		t.Errorf("address bucket has %d left, want 1000 − 600 = 400", r)
	}
}

// rateLimiterBytesPerKey is the documented bound on memory per remembered
// bucket, measured by BenchmarkRateLimiterMillionIPs at about 190 bytes: a
// 128-byte entry (rate.Limiter, key, LRU links) plus its map slot. With the
// default cap of 262,144 keys a limiter never holds more than 64 MiB,
// whatever the number of distinct clients.
const rateLimiterBytesPerKey = 256

// BenchmarkRateLimiterMillionIPs charges 1,000,000 distinct client
// addresses, each once, and reports the heap the limiter holds: uncapped
// (bytes per key) and under the default cap (total). It fails if either
// exceeds the documented bound.
func BenchmarkRateLimiterMillionIPs(b *testing.B) {
	const ips = 1_000_000
	for _, bc := range []struct {
		name    string
		maxKeys int
	}{
		{"uncapped", ips},
		{"default-cap", defaultRateMaxKeys},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var heap, perKey float64
			for b.Loop() {
				clock := testpeer.NewClock(rateTestEpoch)
				res, _ := clientip.New(clientip.Config{})
				before := rateHeapInUse()
				l, err := New(Config{MaxKeys: bc.maxKeys}, res, clock.Now)
				if err != nil {
					b.Fatal(err)
				}
				subs := make([]rateSubject, 1)
				for i := range ips {
					a := netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})
					subs[0] = rateSubject{name: "ip", key: addrRateKey(rateNSIP, a), policy: l.cfg.IP}
					l.take(subs, 1)
				}
				heap = float64(rateHeapInUse() - before)
				keys := l.Stats().Keys
				perKey = heap / float64(keys)
				runtime.KeepAlive(l)
			}
			b.ReportMetric(heap/(1<<20), "heap-MiB")
			b.ReportMetric(perKey, "bytes/key")
			if perKey > rateLimiterBytesPerKey {
				b.Errorf("%.0f bytes per key, documented bound %d", perKey, rateLimiterBytesPerKey)
			}
			if bc.maxKeys == defaultRateMaxKeys && heap > float64(defaultRateMaxKeys*rateLimiterBytesPerKey) {
				b.Errorf("%.1f MiB under the default cap, documented bound %d MiB", heap/(1<<20), defaultRateMaxKeys*rateLimiterBytesPerKey>>20)
			}
		})
	}
}

func rateHeapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkRateLimiterTake is the per-request cost of a signed-in charge
// (address and account buckets) from many goroutines.
func BenchmarkRateLimiterTake(b *testing.B) {
	clock := testpeer.NewClock(rateTestEpoch)
	l := mustRateLimiter(b, Config{
		IP:    Policy{Quota: 1 << 30, Window: time.Second},
		Plans: map[string]Policy{"free": {Quota: 1 << 30, Window: time.Second}},
	}, clientip.Config{}, clock)
	b.ReportAllocs()
	var next atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		n := next.Add(1)
		subs := l.subjects(netip.AddrFrom4([4]byte{192, 0, byte(n >> 8), byte(n)}), Identity{Account: strconv.Itoa(int(n))})
		for pb.Next() {
			l.take(subs, 1)
		}
	})
}

// TestAddrRateKey keys addresses by their clientip.Prefix: one key per /64
// and per IPv4 address, and none shared across namespaces.
func TestAddrRateKey(t *testing.T) {
	t.Parallel()
	// One /64 is one key; the next /64 and the IPv4 form are others.
	k := func(s string) rateKey { return addrRateKey(rateNSIP, netip.MustParseAddr(s)) }
	if k("2001:db8:1:2::1") != k("2001:db8:1:2:abcd::9") {
		t.Error("two addresses in one /64 have different keys")
	}
	if k("2001:db8:1:2::1") == k("2001:db8:1:3::1") {
		t.Error("two /64s share a key")
	}
	if k("::ffff:198.51.100.7") != k("198.51.100.7") || k("198.51.100.7") == k("198.51.100.8") {
		t.Error("IPv4 keys are not per address")
	}
	if addrRateKey(rateNSIP, netip.MustParseAddr("198.51.100.7")) == addrRateKey(rateNSAnon, netip.MustParseAddr("198.51.100.7")) {
		t.Error("namespaces share a key")
	}
}
