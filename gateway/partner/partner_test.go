package partner

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

const host = "https://shop.example"

func testEngine(t *testing.T) (*Engine, *store.DB, *testpeer.Clock) {
	t.Helper()
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	db, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "db"), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e, err := New(Config{EmbedKey: []byte(strings.Repeat("k", 32))}, db, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return e, db, clock
}

func addPartner(t *testing.T, db *store.DB, rate, quota int) (store.Partner, string) {
	t.Helper()
	p, secret, err := db.CreatePartner(store.NewPartner{Name: "Shop", Origins: []string{host}, MonthlyQuota: quota, RateLimit: rate, Plan: "free"})
	if err != nil {
		t.Fatal(err)
	}
	return p, secret
}

func TestPublishable(t *testing.T) {
	t.Parallel()
	e, db, clock := testEngine(t)
	p, secret := addPartner(t, db, 60, 100)
	other, _ := addPartner(t, db, 60, 100)
	self := "https://gen.example"
	tok := e.EmbedToken(p, host)
	expiring := e.EmbedToken(p, host)
	for _, tc := range []struct {
		name string
		req  Request
		want error
	}{
		{"partner origin", Request{Key: p.PublishableKey, Origin: host, SelfOrigin: self}, nil},
		{"frame with token", Request{Key: p.PublishableKey, Origin: self, SelfOrigin: self, EmbedToken: tok}, nil},
		{"unknown key", Request{Key: "pk_nope", Origin: host}, ErrUnknownKey},
		{"secret as publishable", Request{Key: secret, Origin: host}, ErrUnknownKey},
		{"other origin", Request{Key: p.PublishableKey, Origin: "https://evil.example", SelfOrigin: self}, ErrOrigin},
		{"origin differing in port", Request{Key: p.PublishableKey, Origin: host + ":8443", SelfOrigin: self}, ErrOrigin},
		{"non-canonical origin", Request{Key: p.PublishableKey, Origin: "HTTPS://shop.example", SelfOrigin: self}, ErrOrigin},
		{"no origin", Request{Key: p.PublishableKey, SelfOrigin: self}, ErrOrigin},
		{"frame without token", Request{Key: p.PublishableKey, Origin: self, SelfOrigin: self}, ErrOrigin},
		{"token of another partner", Request{Key: other.PublishableKey, Origin: self, SelfOrigin: self, EmbedToken: tok}, ErrBadEmbedToken},
		{"forged token", Request{Key: p.PublishableKey, Origin: self, SelfOrigin: self, EmbedToken: tok[:len(tok)-2] + "AA"}, ErrBadEmbedToken},
		{"token from another origin", Request{Key: p.PublishableKey, Origin: "https://evil.example", SelfOrigin: self, EmbedToken: tok}, ErrOrigin},
	} {
		got, err := e.Publishable(t.Context(), tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if tc.want == nil && got.ID != p.ID {
			t.Errorf("%s: partner %q, want %q", tc.name, got.ID, p.ID)
		}
	}

	clock.Advance(3 * time.Hour)
	if _, err := e.Publishable(t.Context(), Request{Key: p.PublishableKey, Origin: self, SelfOrigin: self, EmbedToken: expiring}); !errors.Is(err, ErrBadEmbedToken) {
		t.Errorf("expired token: %v", err)
	}
	fresh := e.EmbedToken(p, host)
	// Removing the origin revokes frames already handed out for it.
	if _, err := db.UpdatePartner(p.ID, store.PartnerChange{Origins: []string{"https://new.example"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Publishable(t.Context(), Request{Key: p.PublishableKey, Origin: self, SelfOrigin: self, EmbedToken: fresh}); !errors.Is(err, ErrOrigin) {
		t.Errorf("token for a removed origin: %v", err)
	}
	disabled := true
	if _, err := db.UpdatePartner(p.ID, store.PartnerChange{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error {
			_, err := e.Publishable(t.Context(), Request{Key: p.PublishableKey, Origin: "https://new.example"})
			return err
		}(),
		func() error { _, err := e.Secret(t.Context(), secret); return err }(),
		func() error { _, err := e.Lookup(t.Context(), p.PublishableKey); return err }(),
	} {
		if !errors.Is(err, ErrDisabled) {
			t.Errorf("disabled partner: %v, want ErrDisabled", err)
		}
	}
}

func TestSecret(t *testing.T) {
	t.Parallel()
	e, db, _ := testEngine(t)
	p, secret := addPartner(t, db, 60, 100)
	if got, err := e.Secret(t.Context(), secret); err != nil || got.ID != p.ID {
		t.Fatalf("secret: %v %v", got.ID, err)
	}
	for _, bad := range []string{"", p.PublishableKey, secret + "x", "sk_" + secret[4:]} {
		if _, err := e.Secret(t.Context(), bad); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Secret(%q): %v, want ErrUnknownKey", bad, err)
		}
	}
}

func TestAllowRateLimit(t *testing.T) {
	t.Parallel()
	e, db, clock := testEngine(t)
	p, _ := addPartner(t, db, 2, 100) // 2 a minute
	for i := range 2 {
		if err := e.Allow(p); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	var rl *RateLimitError
	if err := e.Allow(p); !errors.As(err, &rl) || rl.RetryAfter != 30*time.Second {
		t.Fatalf("third request: %v, want a 30s rate limit", err)
	}
	clock.Advance(30 * time.Second)
	if err := e.Allow(p); err != nil {
		t.Errorf("after the wait: %v", err)
	}
	// A raised limit applies at once.
	p.RateLimit = 10
	if err := e.Allow(p); err != nil {
		t.Errorf("raised limit: %v", err)
	}
}

func TestReserveQuota(t *testing.T) {
	t.Parallel()
	e, db, clock := testEngine(t)
	p, _ := addPartner(t, db, 60, 3)
	if err := e.Reserve(t.Context(), p, 2); err != nil {
		t.Fatal(err)
	}
	if err := e.Reserve(t.Context(), p, 2); !errors.Is(err, ErrQuota) {
		t.Fatalf("over quota: %v", err)
	}
	if err := e.Release(t.Context(), p, 2); err != nil {
		t.Fatal(err)
	}
	if err := e.Reserve(t.Context(), p, 3); err != nil {
		t.Errorf("after release: %v", err)
	}
	if n, _ := db.PartnerMonthUsage(p.ID, clock.Now()); n != 3 {
		t.Errorf("usage %d, want 3", n)
	}
}

func TestFrameAncestors(t *testing.T) {
	t.Parallel()
	p := store.Partner{Origins: []string{"https://a.example", "http://127.0.0.2:8080"}}
	if got, want := FrameAncestors(p), "frame-ancestors https://a.example http://127.0.0.2:8080"; got != want {
		t.Errorf("FrameAncestors = %q, want %q", got, want)
	}
}

// FuzzEmbedToken feeds arbitrary tokens to the parser: nothing but a
// token the engine issued may be accepted.
func FuzzEmbedToken(f *testing.F) {
	e, err := New(Config{EmbedKey: []byte(strings.Repeat("k", 32))}, nil, func() time.Time { return time.Unix(1e9, 0) })
	if err != nil {
		f.Fatal(err)
	}
	good := e.EmbedToken(store.Partner{ID: "ptr_a"}, host)
	for _, s := range []string{good, "", ".", "e1.ptr_a.x.1.sig", good + "x", strings.Replace(good, "ptr_a", "ptr_b", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if _, _, _, err := e.parseEmbedToken(tok); err == nil && tok != good {
			t.Fatalf("accepted a token the engine did not issue: %q", tok)
		}
	})
}
