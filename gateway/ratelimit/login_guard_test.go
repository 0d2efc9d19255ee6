package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/clientip"
	"github.com/imagegate/imagegate/internal/testpeer"
)

func mustLoginGuard(t *testing.T, cfg LoginGuardConfig, clock *testpeer.Clock) *LoginGuard {
	t.Helper()
	g, err := NewLoginGuard(cfg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestLoginGuardConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     LoginGuardConfig
		wantErr []string
	}{
		{name: "zero value is the defaults", cfg: LoginGuardConfig{}},
		{
			name:    "account limit a single source could exhaust",
			cfg:     LoginGuardConfig{PerAccountSource: Policy{Quota: 10, Window: time.Minute}, PerAccount: Policy{Quota: 100, Window: time.Hour}},
			wantErr: []string{"one source could lock new sources out"},
		},
		{
			name:    "bad windows and TTL, all reported",
			cfg:     LoginGuardConfig{PerSource: Policy{Quota: 50, Window: 0}, KnownSourceTTL: time.Second, MaxKeys: -1},
			wantErr: []string{"sign-in per source: window 0s", "known-source TTL 1s", "max keys must be positive"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testpeer.CheckValidation(t, tt.cfg.Validate(), tt.wantErr)
		})
	}
}

// TestLoginGuardAttackerCannotLockOutVictim has an attacker guess the
// victim's password at 100 attempts a second for ten minutes, from
// addresses rotating through one IPv6 /64, while the victim signs in every
// minute from her usual address and from a new one.
func TestLoginGuardAttackerCannotLockOutVictim(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{}, clock) // defaults
	const victim = "hmac-of-victim-email"
	usual := netip.MustParseAddr("198.51.100.20")
	if ok, _ := g.Attempt(usual, victim); !ok {
		t.Fatal("victim's first sign-in refused")
	}
	g.Succeeded(usual, victim)

	attackerAllowed := 0
	for i := range 100 * 600 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xa, 0, 0xb, 8: byte(i >> 24), 9: byte(i >> 16), 10: byte(i >> 8), 11: byte(i)})
		if ok, _ := g.Attempt(a, victim); ok {
			attackerAllowed++ // and the password is wrong: no succeeded
		}
		if i%6000 == 5999 {
			minute := i / 6000
			if ok, retry := g.Attempt(usual, victim); !ok {
				t.Fatalf("minute %d: victim refused from her usual address (retry %s)", minute, retry)
			}
			g.Succeeded(usual, victim)
			fresh := netip.AddrFrom4([4]byte{203, 0, 113, byte(minute)})
			if ok, retry := g.Attempt(fresh, victim); !ok {
				t.Fatalf("minute %d: victim refused from a new address (retry %s)", minute, retry)
			}
			g.Succeeded(fresh, victim)
		}
		clock.Advance(10 * time.Millisecond)
	}
	// The attacker's /64 is one source: 5 at once, then one per 180 s:
	// 5 + 600/180, floored.
	if attackerAllowed != 8 {
		t.Errorf("attacker got %d guesses in 10 minutes, want 8", attackerAllowed)
	}
}

// TestLoginGuardDistributedAttackDelaysOnlyNewSources has 40 sources guess
// at once: the per-account bucket stops them after 100, which also delays
// sign-ins from new places, but never from a source that signed in before.
func TestLoginGuardDistributedAttackDelaysOnlyNewSources(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{KnownSourceTTL: time.Hour}, clock)
	const victim = "victim"
	known1, known2 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	for _, a := range []netip.Addr{known1, known2} {
		if ok, _ := g.Attempt(a, victim); !ok {
			t.Fatal("first sign-in refused")
		}
		g.Succeeded(a, victim)
	}
	allowed := 0
	for src := range 40 {
		for range 5 {
			if ok, _ := g.Attempt(netip.AddrFrom4([4]byte{192, 0, 2, byte(src)}), victim); ok {
				allowed++
			}
		}
	}
	if allowed != 98 {
		t.Errorf("distributed attack got %d guesses, want 100 − the 2 first sign-ins = 98", allowed)
	}
	if ok, retry := g.Attempt(netip.MustParseAddr("203.0.113.1"), victim); ok || retry != 36*time.Second {
		t.Errorf("new source: allowed %v, retry %s; want refused for 36 s (one attempt at 100/h)", ok, retry)
	}
	if ok, _ := g.Attempt(known1, victim); !ok {
		t.Error("known source refused during the attack")
	}
	// Other accounts are untouched.
	if ok, _ := g.Attempt(netip.MustParseAddr("203.0.113.1"), "someone-else"); !ok {
		t.Error("an unrelated account was refused")
	}
	// A success vouches for its source for KnownSourceTTL only. (The
	// account bucket refills too, so the attack goes on.)
	clock.Advance(time.Hour + time.Second)
	for src := range 40 {
		for range 5 {
			g.Attempt(netip.AddrFrom4([4]byte{192, 0, 2, byte(src)}), victim)
		}
	}
	if ok, _ := g.Attempt(known2, victim); ok {
		t.Error("a source known over an hour ago still skips the account limit")
	}
}

func TestLoginGuardSourceAcrossAccounts(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{}, clock)
	sprayer, other := netip.MustParseAddr("192.0.2.66"), netip.MustParseAddr("192.0.2.67")
	allowed := 0
	for i := range 60 {
		if ok, _ := g.Attempt(sprayer, fmt.Sprintf("account-%d", i)); ok {
			allowed++
		}
	}
	if allowed != 50 {
		t.Errorf("one source got %d attempts over 60 accounts, want 50", allowed)
	}
	if ok, _ := g.Attempt(other, "account-0"); !ok {
		t.Error("another source was refused")
	}
}

func TestLoginGuardSuccessForgivesThePair(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{}, clock)
	addr := netip.MustParseAddr("2001:db8::5")
	count := func() int {
		n := 0
		for range 10 {
			if ok, _ := g.Attempt(addr, "typo-prone"); ok {
				n++
			}
		}
		return n
	}
	if n := count(); n != 5 {
		t.Fatalf("%d attempts allowed, want 5", n)
	}
	clock.Advance(3 * time.Minute) // one more attempt refills
	if ok, _ := g.Attempt(addr, "typo-prone"); !ok {
		t.Fatal("attempt after the refill refused")
	}
	g.Succeeded(addr, "typo-prone")
	if n := count(); n != 5 {
		t.Errorf("after a success %d attempts allowed, want a fresh 5", n)
	}
}

func TestLoginGuardConcurrentAttemptsAreBounded(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{}, clock)
	addr := netip.MustParseAddr("192.0.2.9")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if ok, _ := g.Attempt(addr, "victim"); ok {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 5 {
		t.Errorf("%d of 200 concurrent guesses allowed, want 5", n)
	}
}

func TestLoginGuardForgetsIdleState(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{KnownSourceTTL: time.Hour}, clock)
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		g.Attempt(a, "a")
		g.Succeeded(a, "a")
	}
	if n := g.buckets.len() + g.known.len(); n == 0 {
		t.Fatal("nothing remembered")
	}
	clock.Advance(2 * time.Hour)
	g.Sweep()
	if b, k := g.buckets.len(), g.known.len(); b != 0 || k != 0 {
		t.Errorf("after two hours %d buckets and %d known sources remain, want none", b, k)
	}
}

// TestLoginGuardOverHTTP wires the guard into a sign-in route the way the
// auth handler does, through the gateway's error handler.
func TestLoginGuardOverHTTP(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	g := mustLoginGuard(t, LoginGuardConfig{}, clock)
	ips, err := clientip.New(clientip.Config{})
	if err != nil {
		t.Fatal(err)
	}
	app := rateTestApp()
	app.Post("/login", func(c *fiber.Ctx) error {
		addr, account := ips.Addr(c), c.FormValue("account")
		if ok, retry := g.Attempt(addr, account); !ok {
			return LoginThrottled(retry)
		}
		if c.FormValue("password") != "right" {
			return &apierror.Error{Status: fiber.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_credentials", Msg: "wrong email or password"}
		}
		g.Succeeded(addr, account)
		return c.SendString("welcome")
	})
	post := func(password string) (int, string) {
		form := url.Values{"account": {"acct"}, "password": {password}}
		req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i := range 5 {
		if status, _ := post("wrong"); status != 401 {
			t.Fatalf("attempt %d: status %d, want 401", i, status)
		}
	}
	// Even the right password waits: the guard answers before the check.
	if status, retry := post("right"); status != 429 || retry != "180" {
		t.Fatalf("sixth attempt: status %d, Retry-After %q; want 429 after 180 s", status, retry)
	}
	clock.Advance(180 * time.Second)
	if status, _ := post("right"); status != 200 {
		t.Fatalf("after the wait: status %d", status)
	}
}
