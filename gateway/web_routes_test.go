package gateway

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// form posts a form the way the site's pages do (same-origin).
func (b *browser) form(path string, v url.Values, headers ...string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest("POST", b.e.url+path, strings.NewReader(v.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	for k, vs := range b.header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

// TestFormsTakeTheAPIsChecks posts the pages' forms without script: each
// refusal is the API's, shown on the page, and changes nothing.
func TestFormsTakeTheAPIsChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	t.Run("sign-up needs the 18+ attestation", func(t *testing.T) {
		t.Parallel()
		resp, page := e.browser().form("/signup", url.Values{"email": {"young@example.com"}, "password": {testPassword}})
		if resp.StatusCode != 400 || !strings.Contains(page, "18 or older") || !strings.Contains(page, `role="alert"`) {
			t.Errorf("sign-up without attestation: %d, page shows the error: %v", resp.StatusCode, strings.Contains(page, "18 or older"))
		}
		if _, err := e.db.AccountByEmail("young@example.com"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("an account was created without the attestation: %v", err)
		}
		resp, page = e.browser().form("/signup", url.Values{"email": {"adult@example.com"}, "password": {testPassword}, "over_18": {"on"}})
		if resp.StatusCode != 200 || !strings.Contains(page, `id="signup-sent"`) {
			t.Errorf("sign-up: %d", resp.StatusCode)
		}
		if a, err := e.db.AccountByEmail("adult@example.com"); err != nil || a.AgeAttested.IsZero() {
			t.Errorf("account after the form: %+v %v", a, err)
		}
	})

	t.Run("sign-in", func(t *testing.T) {
		t.Parallel()
		_, acct := e.signedIn("signin-form@example.com")
		b := e.browser()
		resp, page := b.form("/signin", url.Values{"email": {acct.Email}, "password": {"wrong password here"}})
		if resp.StatusCode != 401 || !strings.Contains(page, "invalid email or password") || b.sessionCookie() != "" {
			t.Errorf("wrong password: %d, session %q", resp.StatusCode, b.sessionCookie())
		}
		for next, want := range map[string]string{"/gallery": "/gallery", "//evil.example/x": "/", "https://evil.example": "/", "/\\evil.example": "/"} {
			b := e.browser()
			resp, _ := b.form("/signin?next="+url.QueryEscape(next), url.Values{"email": {acct.Email}, "password": {testPassword}})
			if resp.StatusCode != 303 || resp.Header.Get("Location") != want || b.sessionCookie() == "" {
				t.Errorf("next=%q: %d to %q (session %v), want 303 to %q", next, resp.StatusCode, resp.Header.Get("Location"), b.sessionCookie() != "", want)
			}
		}
	})

	t.Run("reset and password forms", func(t *testing.T) {
		t.Parallel()
		b, acct := e.signedIn("reset-form@example.com")
		resp, page := e.browser().form("/reset-password", url.Values{"email": {acct.Email}})
		if resp.StatusCode != 200 || !strings.Contains(page, "Check your inbox") {
			t.Fatalf("reset request: %d", resp.StatusCode)
		}
		token := linkToken(t, e.mailWithSubject(acct.Email, "Reset your password"))
		resp, page = e.browser().form("/reset-password/confirm", url.Values{"token": {token}, "new_password": {"short"}})
		if resp.StatusCode != 400 || !strings.Contains(page, `value="`+token+`"`) {
			t.Errorf("short password: %d; the form must keep the token to retry", resp.StatusCode)
		}
		resp, page = e.browser().form("/reset-password/confirm", url.Values{"token": {token}, "new_password": {"a reset passphrase 1"}})
		if resp.StatusCode != 200 || !strings.Contains(page, "Password changed") {
			t.Errorf("reset confirm: %d", resp.StatusCode)
		}
		if resp := b.call("GET", "/v1/account", "", nil); resp.StatusCode != 401 {
			t.Errorf("the old session survived the reset: %d", resp.StatusCode)
		}
		b2 := e.browser()
		if resp, _ := b2.form("/signin", url.Values{"email": {acct.Email}, "password": {"a reset passphrase 1"}}); resp.StatusCode != 303 {
			t.Fatalf("sign in with the reset password: %d", resp.StatusCode)
		}
		resp, _ = b2.form("/account/password", url.Values{"current_password": {"a reset passphrase 1"}, "new_password": {"a changed passphrase 2"}})
		if resp.StatusCode != 303 || resp.Header.Get("Location") != "/account?done=password" {
			t.Errorf("password form: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		if resp, _ := e.browser().form("/signin", url.Values{"email": {acct.Email}, "password": {"a changed passphrase 2"}}); resp.StatusCode != 303 {
			t.Errorf("sign in with the changed password: %d", resp.StatusCode)
		}
	})

	t.Run("pages that need an account send visitors to sign in", func(t *testing.T) {
		t.Parallel()
		for _, p := range []string{"/gallery", "/account"} {
			resp := e.browser().call("GET", p, "", nil)
			if resp.StatusCode != 303 || resp.Header.Get("Location") != "/signin?next="+url.QueryEscape(p) {
				t.Errorf("GET %s signed out: %d %q", p, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	})

	t.Run("account centre", func(t *testing.T) {
		t.Parallel()
		b, acct := e.signedIn("centre@example.com")
		resp, page := b.form("/account/api-keys", url.Values{"name": {"laptop"}})
		keys, _ := e.db.APIKeys(acct.ID)
		if resp.StatusCode != 200 || len(keys) != 1 || !strings.Contains(page, `id="new-key"`) || !strings.Contains(page, "sk_") {
			t.Fatalf("create key: %d, %d keys", resp.StatusCode, len(keys))
		}
		if resp, _ := b.form("/account/api-keys/"+keys[0].ID+"/delete", nil); resp.StatusCode != 303 {
			t.Errorf("revoke: %d", resp.StatusCode)
		}
		if keys, _ := e.db.APIKeys(acct.ID); len(keys) != 0 {
			t.Errorf("%d keys after revoking", len(keys))
		}

		// Unticked boxes are opt-outs, stored as such.
		if resp, _ := b.form("/account/settings", url.Values{"product_email": {"on"}}); resp.StatusCode != 303 {
			t.Errorf("settings: %d", resp.StatusCode)
		}
		if a, _ := e.db.Account(acct.ID); !a.Settings.NoAnalytics || !a.Settings.NoModelImprovement || !a.Settings.ProductEmail {
			t.Errorf("settings after the form: %+v", a.Settings)
		}

		// A form from another site is refused and changes nothing.
		resp, _ = b.form("/account/settings", url.Values{"analytics": {"on"}, "model_improvement": {"on"}}, "Sec-Fetch-Site", "cross-site")
		if a, _ := e.db.Account(acct.ID); resp.StatusCode != 403 || !a.Settings.NoAnalytics {
			t.Errorf("cross-site settings post: %d, analytics opt-out %v", resp.StatusCode, a.Settings.NoAnalytics)
		}

		// Deleting needs the confirmation and the password.
		resp, page = b.form("/account/delete", url.Values{"password": {testPassword}})
		if a, _ := e.db.Account(acct.ID); resp.StatusCode != 400 || a.Status != store.StatusActive || !strings.Contains(page, "Tick the confirmation") {
			t.Errorf("delete without confirmation: %d, status %s", resp.StatusCode, a.Status)
		}
		resp, _ = b.form("/account/delete", url.Values{"password": {"not the password"}, "confirm": {"yes"}})
		if a, _ := e.db.Account(acct.ID); resp.StatusCode != 403 || a.Status != store.StatusActive {
			t.Errorf("delete with a wrong password: %d, status %s", resp.StatusCode, a.Status)
		}
		resp, page = b.form("/account/delete", url.Values{"password": {testPassword}, "confirm": {"yes"}})
		if a, err := e.db.Account(acct.ID); resp.StatusCode != 200 || !strings.Contains(page, "being deleted") || (err == nil && a.Status == store.StatusActive) {
			t.Errorf("delete: %d, account %+v %v", resp.StatusCode, a.Status, err)
		}
	})

	t.Run("generator form", func(t *testing.T) {
		t.Parallel()
		post := func(fields map[string]string) (*http.Response, string) {
			var body bytes.Buffer
			mw := multipart.NewWriter(&body)
			for k, v := range fields {
				mw.WriteField(k, v)
			}
			mw.CreateFormFile("image", "") // the empty file input a browser sends
			mw.Close()
			req, _ := http.NewRequest("POST", e.url+"/generate", &body)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			resp, raw := e.do(req)
			return resp, string(raw)
		}
		before := e.generations()
		resp, page := post(map[string]string{"prompt": "four is the limit", "n": "9", "seed": ""})
		if resp.StatusCode != 400 || !strings.Contains(page, "n: must be between 1 and 4") || !strings.Contains(page, "four is the limit") {
			t.Errorf("n=9: %d, shows the API's message and keeps the prompt: %v", resp.StatusCode, strings.Contains(page, "n: must be"))
		}
		if e.generations() != before {
			t.Error("a refused form generated an image")
		}
		resp, page = post(map[string]string{"prompt": "a form-only sunset", "size": "256x256", "seed": "42", "style": ""})
		if resp.StatusCode != 200 || !strings.Contains(page, `<img src="`+e.url+`/o/`) || !strings.Contains(page, "seed 42") {
			t.Errorf("generate: %d, image shown %v", resp.StatusCode, strings.Contains(page, "/o/"))
		}
		if e.generations() != before+1 {
			t.Errorf("generations %v, want %v", e.generations(), before+1)
		}
	})

	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		b := e.browser()
		b.header.Set("Accept", "text/html")
		resp := b.call("GET", "/no/such/page", "", nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 404 || !strings.Contains(string(body), "Page not found") {
			t.Errorf("browser 404: %d", resp.StatusCode)
		}
		var got errorBody
		if resp := e.browser().call("GET", "/v1/nope", "", &got); resp.StatusCode != 404 || got.Error.Code == "" {
			t.Errorf("API 404: %d %+v", resp.StatusCode, got)
		}
	})

	t.Run("assets", func(t *testing.T) {
		t.Parallel()
		a, _ := e.gw.site.Asset("app.js")
		resp := e.browser().call("GET", "/assets/app.js?v="+a.Version, "", nil)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
			t.Errorf("versioned asset: %d %q %q", resp.StatusCode, resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"))
		}
		if resp := e.browser().call("GET", "/assets/app.js?v=old", "", nil); resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("stale asset URL cached: %q", resp.Header.Get("Cache-Control"))
		}
		if resp := e.browser().call("GET", "/assets/nope.js", "", nil); resp.StatusCode != 404 {
			t.Errorf("missing asset: %d", resp.StatusCode)
		}
	})
}

// TestGoogleButtonOnlyWhenConfigured: the sign-in pages offer Google only
// when it is set up.
func TestGoogleButtonOnlyWhenConfigured(t *testing.T) {
	t.Parallel()
	fake := newGoogleFake(t)
	with := newEnv(t, envOptions{cfg: Config{Google: fake.config()}})
	without := newEnv(t, envOptions{})
	resp, page := with.get(with.url + "/signup")
	if !strings.Contains(string(page), `action="/v1/auth/google"`) || !strings.Contains(string(page), `name="over_18" type="checkbox" value="true" required`) {
		t.Error("Google sign-up does not ask for the 18+ attestation")
	}
	authOrigin := strings.TrimSuffix(fake.config().AuthURL, "/authorize")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' "+authOrigin+";") {
		t.Errorf("CSP %q does not let the Google form reach %s", csp, authOrigin)
	}
	for _, p := range []string{"/signin", "/signup"} {
		_, on := with.get(with.url + p)
		_, off := without.get(without.url + p)
		if !strings.Contains(string(on), `"/v1/auth/google"`) || strings.Contains(string(off), "/v1/auth/google") {
			t.Errorf("%s: Google button with config %v, without %v", p, strings.Contains(string(on), "/v1/auth/google"), strings.Contains(string(off), "/v1/auth/google"))
		}
	}
}

func FuzzLocalPath(f *testing.F) {
	for _, s := range []string{"/", "/gallery", "//evil.example", "https://evil.example", "/\\evil", "/a\r\nLocation: x", "", "gallery", "/%2F%2Fevil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got := localPath(p)
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n") {
			t.Errorf("localPath(%q) = %q: not a path on this site", p, got)
		}
		if u, err := url.Parse(got); err != nil || u.Host != "" || u.Scheme != "" {
			t.Errorf("localPath(%q) = %q parses with a host or scheme", p, got)
		}
	})
}

// TestPricingSendsToStripe: with billing on, the pricing page sells the
// catalogue and its forms lead to Checkout and the portal (stripe-mock);
// with billing off it says so.
func TestPricingSendsToStripe(t *testing.T) {
	t.Parallel()
	sm := testpeer.StripeMock(t)
	e := billingEnv(t, sm.URL)
	b, _ := e.signedIn("pricing@example.com")
	resp := b.call("GET", "/pricing", "", nil)
	page, _ := io.ReadAll(resp.Body)
	for _, s := range []string{`name="pack" value="small"`, `name="pack" value="big"`, `name="plan" value="pro-monthly"`, `action="/pricing/portal"`} {
		if !strings.Contains(string(page), s) {
			t.Errorf("pricing page lacks %s", s)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://checkout.stripe.com https://billing.stripe.com") {
		t.Errorf("pricing CSP %q does not let the forms reach Stripe", csp)
	}

	// No customer yet: the portal has nothing to manage, said on a page.
	resp2, msg := b.form("/pricing/portal", nil)
	if resp2.StatusCode != 409 || !strings.Contains(msg, "nothing to manage yet") {
		t.Errorf("portal before any checkout: %d", resp2.StatusCode)
	}
	resp2, _ = b.form("/pricing/checkout", url.Values{"pack": {"small"}})
	if loc := resp2.Header.Get("Location"); resp2.StatusCode != 303 || !strings.HasPrefix(loc, "https://checkout.stripe.com/") {
		t.Errorf("checkout form: %d to %q", resp2.StatusCode, loc)
	}
	if n := len(sm.RequestsTo("POST", "/v1/checkout/sessions")); n != 1 {
		t.Errorf("%d checkout sessions, want 1", n)
	}
	resp2, _ = b.form("/pricing/portal", nil)
	if loc := resp2.Header.Get("Location"); resp2.StatusCode != 303 || !strings.HasPrefix(loc, "https://") {
		t.Errorf("portal form: %d to %q", resp2.StatusCode, loc)
	}
	resp2, msg = b.form("/pricing/checkout", url.Values{"pack": {"nope"}})
	if resp2.StatusCode != 400 || !strings.Contains(msg, "Nothing was charged") {
		t.Errorf("unknown pack: %d", resp2.StatusCode)
	}

	off := newEnv(t, envOptions{})
	_, page = off.get(off.url + "/pricing")
	if !strings.Contains(string(page), `id="billing-off"`) || strings.Contains(string(page), "/pricing/checkout") {
		t.Error("without billing the pricing page does not say payments are off")
	}
}

// TestEveryPageHasAStrictCSP is promise K3 for the whole site: each page,
// signed in or not, may run only its own script by a fresh nonce and load
// nothing from another origin.
func TestEveryPageHasAStrictCSP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	signed, _ := e.signedIn("csp@example.com")
	nonceRE := regexp.MustCompile(`^'nonce-([A-Za-z0-9_-]{22})'$`)
	seen := map[string]bool{}
	for _, b := range []*browser{e.browser(), signed} {
		for _, p := range []string{"/", "/signup", "/signin", "/reset-password", "/verify-email?token=x", "/gallery", "/account",
			"/cookies", "/privacy", "/terms", "/pricing", "/nothing-here"} {
			b.header.Set("Accept", "text/html")
			resp := b.call("GET", p, "", nil)
			if resp.StatusCode == 303 {
				continue // signed out: sent to sign in
			}
			body, _ := io.ReadAll(resp.Body)
			csp := resp.Header.Get("Content-Security-Policy")
			dirs := map[string][]string{}
			for _, d := range strings.Split(csp, ";") {
				if f := strings.Fields(d); len(f) > 0 {
					dirs[f[0]] = f[1:]
				}
			}
			script := dirs["script-src"]
			if len(script) != 2 || !nonceRE.MatchString(script[0]) || script[1] != "'strict-dynamic'" {
				t.Errorf("%s: script-src %q", p, script)
				continue
			}
			nonce := nonceRE.FindStringSubmatch(script[0])[1]
			if seen[nonce] {
				t.Errorf("%s: nonce %s reused", p, nonce)
			}
			seen[nonce] = true
			if !strings.Contains(string(body), `nonce="`+nonce+`"`) || strings.Count(string(body), "<script") != 1 {
				t.Errorf("%s: the page's one script does not carry the response's nonce", p)
			}
			for name, srcs := range dirs {
				for _, s := range srcs {
					if name != "script-src" && s != "'self'" && s != "'none'" {
						t.Errorf("%s: %s allows %q", p, name, s)
					}
				}
			}
			if !slices.Equal(dirs["default-src"], []string{"'none'"}) || !slices.Equal(dirs["frame-ancestors"], []string{"'none'"}) {
				t.Errorf("%s: CSP %q", p, csp)
			}
		}
	}
	if len(seen) < 15 {
		t.Errorf("only %d pages checked", len(seen))
	}
}
