package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/http/cookiejar"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// browser is a visitor with a cookie jar whose requests say what a
// browser on the site's own pages says (Sec-Fetch-Site: same-origin).
type browser struct {
	t      testing.TB
	e      *env
	client *http.Client
	header http.Header
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{t: e.t, e: e, header: http.Header{"Sec-Fetch-Site": {"same-origin"}},
		client: &http.Client{Jar: jar, Timeout: 60 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// call sends method path with an optional JSON body and decodes a JSON
// answer into out (if non-nil). It returns the response.
func (b *browser) call(method, path, body string, out any) *http.Response {
	b.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.e.url+path, r)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			b.t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	return resp
}

// want fails the test unless resp has status.
func want(t testing.TB, resp *http.Response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: status %d, want %d: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
}

func (b *browser) sessionCookie() string {
	u, _ := url.Parse(b.e.url)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == cookieSession {
			return c.Value
		}
	}
	return ""
}

const testPassword = "correct horse battery staple"

// signedIn signs up email (answering 202), then signs in; it returns the
// browser and the account.
func (e *env) signedIn(email string) (*browser, store.Account) {
	e.t.Helper()
	b := e.browser()
	want(e.t, b.call("POST", "/v1/auth/signup", `{"email":"`+email+`","password":"`+testPassword+`","over_18":true}`, nil), 202)
	want(e.t, b.call("POST", "/v1/auth/login", `{"email":"`+email+`","password":"`+testPassword+`"}`, nil), 200)
	acct, err := e.db.AccountByEmail(email)
	if err != nil {
		e.t.Fatal(err)
	}
	return b, acct
}

// mails waits for the outbox to hold at least n messages to addr and
// returns them, oldest first. Mail is sent off the request path, so the
// test polls the directory until a deadline.
func (e *env) mails(addr string, n int) []*mail.Message {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var out []*mail.Message
		entries, _ := os.ReadDir(filepath.Join(e.dir, "outbox"))
		for _, de := range entries {
			if !strings.HasSuffix(de.Name(), ".eml") {
				continue
			}
			f, err := os.Open(filepath.Join(e.dir, "outbox", de.Name()))
			if err != nil {
				continue
			}
			m, err := mail.ReadMessage(f)
			if err == nil && strings.Contains(m.Header.Get("To"), addr) {
				var r io.Reader = m.Body
				if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
					r = quotedprintable.NewReader(r)
				}
				body, _ := io.ReadAll(r)
				m.Body = bytes.NewReader(body)
				out = append(out, m)
			}
			f.Close()
		}
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) < n {
				e.t.Fatalf("outbox has %d messages to %s, want %d", len(out), addr, n)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond) // polling the file system for an async write
	}
}

// mailWithSubject waits for a message to addr with subject (mail goes out
// asynchronously, so order on disk is not the order of requests).
func (e *env) mailWithSubject(addr, subject string) *mail.Message {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, m := range e.mails(addr, 0) {
			if m.Header.Get("Subject") == subject {
				return m
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no mail %q to %s", subject, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var tokenInLink = regexp.MustCompile(`token=([A-Za-z0-9_%-]+)`)

func linkToken(t testing.TB, m *mail.Message) string {
	t.Helper()
	body, _ := io.ReadAll(m.Body)
	match := tokenInLink.FindSubmatch(body)
	if match == nil {
		t.Fatalf("no token link in %q", body)
	}
	tok, err := url.QueryUnescape(string(match[1]))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSignupVerifyLoginLogout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{realHashing: true})
	b := e.browser()
	want(t, b.call("POST", "/v1/auth/signup", `{"email":"Ada@Example.com","password":"`+testPassword+`","over_18":true}`, nil), 202)
	acct, err := e.db.AccountByEmail("ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	// Promise A1: an argon2id PHC string at OWASP's parameters.
	if !strings.HasPrefix(acct.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("stored hash %q is not argon2id at m=19456,t=2,p=1", acct.PasswordHash)
	}
	if acct.EmailVerified {
		t.Errorf("address verified before the link was used")
	}
	verify := e.mailWithSubject("ada@example.com", "Confirm your email address")
	want(t, b.call("POST", "/v1/auth/verify-email", `{"token":"`+linkToken(t, verify)+`"}`, nil), 204)
	if got, _ := e.db.Account(acct.ID); !got.EmailVerified {
		t.Errorf("address not verified after the link")
	}

	// Wrong password and unknown email answer alike.
	var wrong, unknown errorBody
	want(t, b.call("POST", "/v1/auth/login", `{"email":"ada@example.com","password":"not the password"}`, &wrong), 401)
	want(t, b.call("POST", "/v1/auth/login", `{"email":"nobody@example.com","password":"not the password"}`, &unknown), 401)
	if wrong != unknown {
		t.Errorf("wrong password %+v differs from unknown email %+v", wrong, unknown)
	}
	want(t, b.call("GET", "/v1/account", "", nil), 401)

	var view map[string]any
	resp := b.call("POST", "/v1/auth/login", `{"email":"ada@example.com","password":"`+testPassword+`"}`, &view)
	want(t, resp, 200)
	checkSessionCookie(t, resp)
	first := b.sessionCookie()
	var got accountJSON
	want(t, b.call("GET", "/v1/account", "", &got), 200)
	if got.ID != acct.ID || got.Email != "ada@example.com" || got.Plan != "free" || got.Credits != 50 {
		t.Errorf("GET /v1/account = %+v", got)
	}
	raw, _ := io.ReadAll(b.call("GET", "/v1/account", "", nil).Body)
	if bytes.Contains(raw, []byte("argon2")) || bytes.Contains(raw, []byte("password")) {
		t.Errorf("account view exposes the password hash: %s", raw)
	}

	// Signing in again rotates the session: the old token is dead.
	want(t, b.call("POST", "/v1/auth/login", `{"email":"ada@example.com","password":"`+testPassword+`"}`, nil), 200)
	if b.sessionCookie() == first {
		t.Errorf("session token not rotated at sign-in")
	}
	if _, err := e.db.ValidateSession(first); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the replaced session still validates: %v", err)
	}

	want(t, b.call("POST", "/v1/auth/logout", "", nil), 204)
	want(t, b.call("GET", "/v1/account", "", nil), 401)
	if b.sessionCookie() != "" {
		t.Errorf("session cookie survives sign-out")
	}

	var kinds []string
	e.db.AllSecurityEvents(func(ev store.SecurityEvent) error {
		kinds = append(kinds, ev.Kind)
		if ev.IP != "127.0.0.1" || ev.UserAgent == "" {
			t.Errorf("security event %s without IP or user agent: %+v", ev.Kind, ev)
		}
		return nil
	})
	for _, k := range []string{eventSignup, eventEmailVerified, eventLoginFailed, eventLogin, eventLogout} {
		if !slices.Contains(kinds, k) {
			t.Errorf("security log lacks %q: %v", k, kinds)
		}
	}
}

// checkSessionCookie asserts the session cookie's attributes.
func checkSessionCookie(t *testing.T, resp *http.Response) {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name != cookieSession {
			continue
		}
		if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
			t.Errorf("session cookie attributes: %+v", c)
		}
		if len(c.Value) < 22 { // 128 bits in base64
			t.Errorf("session token %q shorter than 128 bits", c.Value)
		}
		return
	}
	t.Errorf("no %s cookie in %v", cookieSession, resp.Header["Set-Cookie"])
}

func TestSignupNeverRevealsAnAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b := e.browser()
	body := `{"email":"taken@example.com","password":"` + testPassword + `","over_18":true}`
	first := b.call("POST", "/v1/auth/signup", body, nil)
	second := b.call("POST", "/v1/auth/signup", `{"email":"TAKEN@example.com","password":"another password 1","over_18":true}`, nil)
	a, _ := io.ReadAll(first.Body)
	c, _ := io.ReadAll(second.Body)
	if first.StatusCode != 202 || second.StatusCode != 202 || !bytes.Equal(a, c) {
		t.Errorf("signups differ: %d %s / %d %s", first.StatusCode, a, second.StatusCode, c)
	}
	e.mailWithSubject("taken@example.com", "Someone tried to sign up with your address")
	// The original password still works; the second one never applied.
	want(t, b.call("POST", "/v1/auth/login", `{"email":"taken@example.com","password":"`+testPassword+`"}`, nil), 200)

	// A reset request for an unknown address answers exactly as for a
	// known one, and sends nothing.
	known := b.call("POST", "/v1/auth/password-reset", `{"email":"taken@example.com"}`, nil)
	unknown := b.call("POST", "/v1/auth/password-reset", `{"email":"ghost@example.com"}`, nil)
	k, _ := io.ReadAll(known.Body)
	u, _ := io.ReadAll(unknown.Body)
	if known.StatusCode != 202 || unknown.StatusCode != 202 || !bytes.Equal(k, u) {
		t.Errorf("reset answers differ: %d %s / %d %s", known.StatusCode, k, unknown.StatusCode, u)
	}
}

func TestSignupValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b := e.browser()
	for _, tc := range []struct {
		name, body, code, field string
	}{
		{"no attestation", `{"email":"kid@example.com","password":"` + testPassword + `"}`, "age_attestation_required", "over_18"},
		{"attestation false", `{"email":"kid@example.com","password":"` + testPassword + `","over_18":false}`, "age_attestation_required", "over_18"},
		{"bad email", `{"email":"not-an-address","password":"` + testPassword + `","over_18":true}`, "invalid_email", "email"},
		{"header injection", `{"email":"a@example.com\r\nBcc: x@example.com","password":"` + testPassword + `","over_18":true}`, "invalid_email", "email"},
		{"short password", `{"email":"kid@example.com","password":"short","over_18":true}`, "weak_password", "password"},
		{"huge password", `{"email":"kid@example.com","password":"` + strings.Repeat("x", 300) + `","over_18":true}`, "invalid_password", "password"},
		{"unknown field", `{"email":"kid@example.com","password":"` + testPassword + `","over_18":true,"admin":true}`, "unknown_field", "admin"},
	} {
		var got errorBody
		resp := b.call("POST", "/v1/auth/signup", tc.body, &got)
		if resp.StatusCode != 400 || got.Error.Code != tc.code || !strings.HasPrefix(got.Error.Message, tc.field) {
			t.Errorf("%s: %d %+v; want 400 %s naming %s", tc.name, resp.StatusCode, got.Error, tc.code, tc.field)
		}
	}
	if _, err := e.db.AccountByEmail("kid@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused signup created an account: %v", err)
	}
}

func TestPasswordResetThroughTheOutbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := e.signedIn("reset@example.com")
	other, _ := e.browser(), 0
	want(t, other.call("POST", "/v1/auth/login", `{"email":"reset@example.com","password":"`+testPassword+`"}`, nil), 200)

	want(t, e.browser().call("POST", "/v1/auth/password-reset", `{"email":"reset@example.com"}`, nil), 202)
	token := linkToken(t, e.mailWithSubject("reset@example.com", "Reset your password"))
	// The page the link opens changes nothing; the form posts the token.
	page := e.browser().call("GET", "/reset-password?token="+url.QueryEscape(token), "", nil)
	want(t, page, 200)
	if html, _ := io.ReadAll(page.Body); !bytes.Contains(html, []byte(`action="/reset-password/confirm"`)) {
		t.Errorf("reset page has no form posting to confirm: %s", html)
	}
	const newPassword = "a brand new passphrase"
	want(t, e.browser().call("POST", "/v1/auth/password-reset/confirm", `{"token":"`+token+`","new_password":"`+newPassword+`"}`, nil), 204)

	// Every session ended; the old password is dead, the new one works.
	want(t, b.call("GET", "/v1/account", "", nil), 401)
	want(t, other.call("GET", "/v1/account", "", nil), 401)
	want(t, e.browser().call("POST", "/v1/auth/login", `{"email":"reset@example.com","password":"`+testPassword+`"}`, nil), 401)
	want(t, e.browser().call("POST", "/v1/auth/login", `{"email":"reset@example.com","password":"`+newPassword+`"}`, nil), 200)
	// Single use.
	var got errorBody
	want(t, e.browser().call("POST", "/v1/auth/password-reset/confirm", `{"token":"`+token+`","new_password":"yet another passphrase"}`, &got), 400)
	if got.Error.Code != "invalid_token" {
		t.Errorf("reused token: %+v", got.Error)
	}
	if h, _ := e.db.Account(acct.ID); h.PasswordHash == "" || strings.Contains(h.PasswordHash, newPassword) {
		t.Errorf("password stored badly: %q", h.PasswordHash)
	}
}

func TestPasswordChangeEndsOtherSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, _ := e.signedIn("change@example.com")
	other := e.browser()
	want(t, other.call("POST", "/v1/auth/login", `{"email":"change@example.com","password":"`+testPassword+`"}`, nil), 200)

	var errBody errorBody
	want(t, a.call("POST", "/v1/auth/password", `{"current_password":"wrong guess","new_password":"a new passphrase 9"}`, &errBody), 403)
	want(t, other.call("GET", "/v1/account", "", nil), 200)

	var ended struct {
		SessionsEnded int `json:"sessions_ended"`
	}
	want(t, a.call("POST", "/v1/auth/password", `{"current_password":"`+testPassword+`","new_password":"a new passphrase 9"}`, &ended), 200)
	if ended.SessionsEnded != 1 {
		t.Errorf("sessions ended = %d, want 1", ended.SessionsEnded)
	}
	want(t, a.call("GET", "/v1/account", "", nil), 200)
	want(t, other.call("GET", "/v1/account", "", nil), 401)
	e.mailWithSubject("change@example.com", "Your password was changed")

	// Sign out everywhere ends this one too.
	want(t, a.call("POST", "/v1/auth/logout-all", "", nil), 200)
	want(t, a.call("GET", "/v1/account", "", nil), 401)
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := e.signedIn("keys@example.com")
	var created apiKeyJSON
	want(t, b.call("POST", "/v1/account/api-keys", `{"name":"ci"}`, &created), 201)
	if !strings.HasPrefix(created.Key, "sk_") || created.Name != "ci" {
		t.Fatalf("created key %+v", created)
	}
	api := &browser{t: t, e: e, client: &http.Client{Timeout: 60 * time.Second}, header: http.Header{"Authorization": {"Bearer " + created.Key}}}
	// A key gets images:write only unless account:read is asked for.
	if !slices.Equal(created.Scopes, []string{"images:write"}) {
		t.Errorf("default scopes %q", created.Scopes)
	}
	want(t, api.call("GET", "/v1/account", "", nil), 403)
	reader, _ := e.keyClient(b, `["account:read"]`)
	var view accountJSON
	want(t, reader.call("GET", "/v1/account", "", &view), 200)
	if view.ID != acct.ID {
		t.Errorf("API key acts for %s, want %s", view.ID, acct.ID)
	}
	resp := api.call("POST", "/v1/images/generations", `{"prompt":"api key picture","size":"256x256"}`, nil)
	want(t, resp, 200)
	// A key cannot mint keys.
	want(t, api.call("POST", "/v1/account/api-keys", `{"name":"more"}`, nil), 403)

	var list struct{ Data []apiKeyJSON }
	want(t, b.call("GET", "/v1/account/api-keys", "", &list), 200)
	if len(list.Data) != 2 || list.Data[0].Key != "" || list.Data[0].ID != created.ID {
		t.Errorf("listing %+v (the secret must not be listed)", list.Data)
	}
	want(t, b.call("DELETE", "/v1/account/api-keys/"+created.ID, "", nil), 204)
	want(t, api.call("POST", "/v1/images/generations", `{"prompt":"api key picture","size":"256x256"}`, nil), 401)

	bad := &browser{t: t, e: e, client: &http.Client{}, header: http.Header{"Authorization": {"Bearer sk_forged"}}}
	var got errorBody
	want(t, bad.call("POST", "/v1/images/generations", `{"prompt":"x","size":"256x256"}`, &got), 401)
	if got.Error.Code != "invalid_api_key" {
		t.Errorf("forged key: %+v", got.Error)
	}
}

func TestLoginThrottleCannotLockOutTheOwner(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := newEnv(t, envOptions{limits: true, now: clock.Now, cfg: Config{
		ClientIP: ClientIPConfig{TrustedProxies: []string{"127.0.0.1/32"}, Header: "Fly-Client-IP"},
	}})
	_, _ = e.signedIn("victim@example.com")
	attacker := e.browser()
	attacker.header.Set("Fly-Client-IP", "203.0.113.66")
	refused := 0
	for range 40 {
		resp := attacker.call("POST", "/v1/auth/login", `{"email":"victim@example.com","password":"guess guess guess"}`, nil)
		switch resp.StatusCode {
		case 401:
		case 429:
			refused++
			if resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 without Retry-After")
			}
		default:
			t.Fatalf("attacker got %d", resp.StatusCode)
		}
	}
	if refused < 30 {
		t.Errorf("attacker refused only %d of 40 guesses", refused)
	}
	victim := e.browser()
	victim.header.Set("Fly-Client-IP", "198.51.100.7")
	want(t, victim.call("POST", "/v1/auth/login", `{"email":"victim@example.com","password":"`+testPassword+`"}`, nil), 200)
}

// Emailed links never take their address from the request's Host, which
// anyone can set: without --public-url only a loopback Host (development on
// one machine) is trusted, and any other refuses before anything is sent.
func TestAccountLinksUseAKnownSiteAddress(t *testing.T) {
	t.Parallel()
	reset := func(e *env, host, email string) (*http.Response, []byte) {
		req, _ := http.NewRequest("POST", e.url+"/v1/auth/password-reset", strings.NewReader(`{"email":"`+email+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Host = host
		return e.do(req)
	}
	linkOf := func(e *env, email string) string {
		body, _ := io.ReadAll(e.mailWithSubject(email, "Reset your password").Body)
		i := bytes.Index(body, []byte("/reset-password?token="))
		if i < 0 {
			t.Fatalf("no reset link in %q", body)
		}
		start := bytes.LastIndex(body[:i], []byte("http"))
		return string(body[start:i])
	}

	e := newEnv(t, envOptions{})
	e.signedIn("host-a@example.com")
	e.signedIn("host-b@example.com")
	resp, body := reset(e, "evil.example", "host-a@example.com")
	if resp.StatusCode != http.StatusServiceUnavailable || apiErrorOf(t, body).Code != "public_url_required" {
		t.Errorf("reset with a foreign Host and no --public-url: %d %s, want 503 public_url_required", resp.StatusCode, body)
	}
	host := strings.TrimPrefix(e.url, "http://")
	if resp, body := reset(e, host, "host-b@example.com"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("reset on loopback: %d %s", resp.StatusCode, body)
	}
	if got := linkOf(e, "host-b@example.com"); got != "http://"+host {
		t.Errorf("loopback link base %q, want http://%s", got, host)
	}
	if msgs := e.mails("host-a@example.com", 1); len(msgs) != 1 { // the verification mail only
		t.Errorf("the refused reset still mailed host-a: %d messages", len(msgs))
	}

	pub := newEnv(t, envOptions{cfg: Config{PublicURL: "https://img.example.com/"}})
	pub.signedIn("host-c@example.com")
	if resp, body := reset(pub, "evil.example", "host-c@example.com"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("reset with --public-url: %d %s", resp.StatusCode, body)
	}
	if got := linkOf(pub, "host-c@example.com"); got != "https://img.example.com" {
		t.Errorf("link base %q, want the configured https://img.example.com", got)
	}
}
