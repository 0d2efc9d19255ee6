package gateway

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/store"
)

// lookupCounter is the real store, counting credential lookups.
type lookupCounter struct {
	Store
	keys, sessions atomic.Int64
}

func (s *lookupCounter) ValidateAPIKey(secret string) (store.APIKey, error) {
	s.keys.Add(1)
	return s.Store.ValidateAPIKey(secret)
}

func (s *lookupCounter) ValidateSession(token string) (store.Session, error) {
	s.sessions.Add(1)
	return s.Store.ValidateSession(token)
}

// TestCredentialGuessesAreLimitedBeforeTheStore sends unknown API keys and
// ended session cookies from one address: past the per-source allowance
// they are refused with 429 before any lookup, while a key and a session
// that work — from that address too — and other addresses go on.
func TestCredentialGuessesAreLimitedBeforeTheStore(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	counter := &lookupCounter{}
	const quota = 5
	e := newEnv(t, envOptions{limits: true, now: clock.Now,
		wrapStore: func(s Store) Store { counter.Store = s; return counter },
		cfg: Config{
			ClientIP:    ClientIPConfig{TrustedProxies: []string{"127.0.0.1/32"}, Header: "Fly-Client-IP"},
			Credentials: ratelimit.CredentialGuardConfig{PerSource: ratelimit.Policy{Quota: quota, Window: time.Minute}},
			FreeQuota:   DailyQuotaConfig{FreeImagesPerDay: UnlimitedFreeImages()},
		}})
	const attacker, bystander = "203.0.113.66", "198.51.100.7"
	owner, acct := e.signedIn("guarded@example.com")
	owner.header.Set("Fly-Client-IP", attacker) // the owner shares the attacker's address (a NAT)
	key, _ := e.keyClient(owner, `["account:read"]`)
	key.header.Set("Fly-Client-IP", attacker)
	want(t, key.call("GET", "/v1/account", "", nil), 200)
	// The owner's first lookups (session, key) were charged like anyone's;
	// from now on both are known.
	clock.Advance(time.Minute)

	from := func(ip string, headers ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", e.url+"/v1/account", nil)
		req.Header.Set("Fly-Client-IP", ip)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, _ := e.do(req)
		return resp
	}
	guess := func(n int) string { return "sk_guess" + string(rune('a'+n)) }
	ended, _, err := e.db.CreateSession(acct.ID, store.SessionPolicy{Idle: time.Hour, Absolute: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.DeleteSession(ended); err != nil {
		t.Fatal(err)
	}

	keys0, sessions0 := counter.keys.Load(), counter.sessions.Load()
	for i := range quota {
		if i%2 == 0 {
			if resp := from(attacker, "Authorization", "Bearer "+guess(i)); resp.StatusCode != 401 {
				t.Fatalf("guess %d: %d, want 401", i, resp.StatusCode)
			}
		} else if resp := from(attacker, "Cookie", cookieSession+"="+ended); resp.StatusCode != 401 {
			t.Fatalf("stale cookie %d: %d, want 401 (anonymous on an account route)", i, resp.StatusCode)
		}
	}
	keys1, sessions1 := counter.keys.Load(), counter.sessions.Load()
	if keys1-keys0+sessions1-sessions0 != quota {
		t.Fatalf("%d lookups for %d guesses", keys1-keys0+sessions1-sessions0, quota)
	}
	for i, h := range [][]string{{"Authorization", "Bearer " + guess(10)}, {"Cookie", cookieSession + "=" + ended}} {
		resp := from(attacker, h...)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("guess %d past the allowance: %d (Retry-After %q), want 429 with Retry-After", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if counter.keys.Load() != keys1 || counter.sessions.Load() != sessions1 {
		t.Errorf("refused guesses reached the store: %d key and %d session lookups", counter.keys.Load()-keys1, counter.sessions.Load()-sessions1)
	}

	// What works keeps working, on the attacker's address and elsewhere;
	// other addresses guess on their own allowance.
	want(t, key.call("GET", "/v1/account", "", nil), 200)
	want(t, owner.call("GET", "/v1/account", "", nil), 200)
	if resp := from(bystander, "Authorization", "Bearer "+guess(11)); resp.StatusCode != 401 {
		t.Errorf("another address's first guess: %d, want 401", resp.StatusCode)
	}
	// A known key that is revoked is looked up, refused and forgotten: its
	// next use is charged like any guess.
	_, revoked := e.keyClient(owner, "")
	revokedKey := &browser{t: t, e: e, client: e.client, header: http.Header{"Authorization": {"Bearer " + revoked.Key}, "Fly-Client-IP": {bystander}}}
	want(t, revokedKey.call("POST", "/v1/images/generations", `{"prompt":"known then revoked","size":"256x256"}`, nil), 200)
	want(t, owner.call("DELETE", "/v1/account/api-keys/"+revoked.ID, "", nil), 204)
	for range quota - 1 {
		want(t, revokedKey.call("POST", "/v1/images/generations", `{"prompt":"known then revoked","size":"256x256"}`, nil), 401)
	}
	want(t, revokedKey.call("POST", "/v1/images/generations", `{"prompt":"known then revoked","size":"256x256"}`, nil), 429)

	if n := walkMetric(t, e.gwReg, "imagegate_credential_lookups_refused_total"); n != 3 {
		t.Errorf("imagegate_credential_lookups_refused_total = %v, want the 3 refusals", n)
	}

	// The allowance refills.
	clock.Advance(time.Minute)
	if resp := from(attacker, "Authorization", "Bearer "+guess(12)); resp.StatusCode != 401 {
		t.Errorf("after the window: %d, want 401", resp.StatusCode)
	}
}
