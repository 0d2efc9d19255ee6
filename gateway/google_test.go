package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// Google cannot run here, so googleFake plays its three endpoints and
// checks every request as strictly as Google does: the registered client
// and redirect URI, the scopes, PKCE S256 with the verifier matching the
// challenge the code was bound to, single-use codes, and Bearer access
// tokens. Whatever it refuses, it refuses in Google's JSON error shape and
// remembers, so tests can tell which check fired.
type googleFake struct {
	srv          *httptest.Server
	clientID     string
	clientSecret string
	redirectURI  string

	mu       sync.Mutex
	accounts map[string]googleFakeAccount // by subject: who can sign in
	codes    map[string]*googleFakeGrant  // authorization codes issued
	tokens   map[string]string            // access token → subject
	refused  []string                     // "endpoint: error: description"
}

// googleFakeAccount is a Google account; Name and Picture are what Google
// hands out besides the address, and what imagegate must not keep.
type googleFakeAccount struct {
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	Picture       string
}

type googleFakeGrant struct {
	subject     string
	challenge   string
	redirectURI string
	used        bool
}

// googleFakeRedirect is the callback registered with the fake. Only its
// path matters: the test carries the browser from the fake to the gateway.
const googleFakeRedirect = "https://imagegate.test/v1/auth/google/callback"

// googleFakeAccountHeader stands in for Google's account chooser: the
// browser (the test) names the subject signing in.
const googleFakeAccountHeader = "X-Test-Google-Account"

func newGoogleFake(t *testing.T) *googleFake {
	t.Helper()
	f := &googleFake{
		clientID:     "1234-imagegate.apps.googleusercontent.com",
		clientSecret: "GOCSPX-" + googleRandom(18),
		redirectURI:  googleFakeRedirect,
		accounts:     map[string]googleFakeAccount{},
		codes:        map[string]*googleFakeGrant{},
		tokens:       map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/authorize", f.authorize)
	mux.HandleFunc("/token", f.token)
	mux.HandleFunc("/userinfo", f.userinfo)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// config is the gateway's Google configuration for this fake.
func (f *googleFake) config() GoogleConfig {
	return GoogleConfig{
		ClientID: f.clientID, ClientSecret: f.clientSecret, RedirectURL: f.redirectURI,
		AuthURL: f.srv.URL + "/authorize", TokenURL: f.srv.URL + "/token", UserInfoURL: f.srv.URL + "/userinfo",
		DoneURL: "/welcome",
	}
}

func (f *googleFake) addAccount(a googleFakeAccount) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accounts[a.Subject] = a
}

// refusals returns what the fake refused so far.
func (f *googleFake) refusals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.refused)
}

func googleRandom(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (f *googleFake) refuse(w http.ResponseWriter, endpoint string, status int, code, desc string) {
	f.mu.Lock()
	f.refused = append(f.refused, endpoint+": "+code+": "+desc)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// authorize is accounts.google.com/o/oauth2/v2/auth after the user picked
// an account and agreed: it checks the request, then redirects back with a
// code bound to the PKCE challenge.
func (f *googleFake) authorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		f.refuse(w, "authorize", http.StatusMethodNotAllowed, "invalid_request", "GET only")
		return
	}
	q := r.URL.Query()
	for name, vs := range q {
		if len(vs) != 1 {
			f.refuse(w, "authorize", http.StatusBadRequest, "invalid_request", "Parameter given twice: "+name)
			return
		}
	}
	if q.Get("client_id") != f.clientID {
		f.refuse(w, "authorize", http.StatusUnauthorized, "invalid_client", "The OAuth client was not found.")
		return
	}
	if q.Get("redirect_uri") != f.redirectURI {
		f.refuse(w, "authorize", http.StatusBadRequest, "redirect_uri_mismatch", "redirect_uri does not match a registered URI")
		return
	}
	if q.Get("response_type") != "code" {
		f.refuse(w, "authorize", http.StatusBadRequest, "unsupported_response_type", "response_type must be code")
		return
	}
	scopes := strings.Fields(q.Get("scope"))
	if !slices.Contains(scopes, "openid") || !slices.Contains(scopes, "email") {
		f.refuse(w, "authorize", http.StatusBadRequest, "invalid_scope", "scope must include openid and email")
		return
	}
	for _, s := range scopes {
		if s != "openid" && s != "email" && s != "profile" {
			f.refuse(w, "authorize", http.StatusBadRequest, "invalid_scope", "Some requested scopes were invalid: "+s)
			return
		}
	}
	challenge := q.Get("code_challenge")
	if q.Get("code_challenge_method") != "S256" {
		f.refuse(w, "authorize", http.StatusBadRequest, "invalid_request", "code_challenge_method must be S256")
		return
	}
	if raw, err := base64.RawURLEncoding.DecodeString(challenge); err != nil || len(raw) != sha256.Size {
		f.refuse(w, "authorize", http.StatusBadRequest, "invalid_request", "code_challenge is not a base64url SHA-256")
		return
	}
	if q.Get("state") == "" {
		f.refuse(w, "authorize", http.StatusBadRequest, "invalid_request", "the fake requires state (the gateway must send it)")
		return
	}
	if p := q.Get("prompt"); p != "" && p != "select_account" && p != "consent" && p != "none" {
		f.refuse(w, "authorize", http.StatusBadRequest, "invalid_request", "invalid prompt")
		return
	}
	back, _ := url.Parse(f.redirectURI)
	reply := url.Values{"state": {q.Get("state")}}
	sub := r.Header.Get(googleFakeAccountHeader)
	f.mu.Lock()
	_, known := f.accounts[sub]
	code := "4/0A" + googleRandom(24)
	if known {
		f.codes[code] = &googleFakeGrant{subject: sub, challenge: challenge, redirectURI: q.Get("redirect_uri")}
	}
	f.mu.Unlock()
	if known {
		reply.Set("code", code)
		reply.Set("scope", "email openid https://www.googleapis.com/auth/userinfo.email")
	} else {
		reply.Set("error", "access_denied") // the user cancelled
	}
	back.RawQuery = reply.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// token is oauth2.googleapis.com/token for the authorization_code grant.
func (f *googleFake) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		f.refuse(w, "token", http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		f.refuse(w, "token", http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
		return
	}
	if err := r.ParseForm(); err != nil || len(r.URL.RawQuery) > 0 {
		f.refuse(w, "token", http.StatusBadRequest, "invalid_request", "parameters belong in the form body")
		return
	}
	form := r.PostForm
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	if id != f.clientID || secret != f.clientSecret {
		f.refuse(w, "token", http.StatusUnauthorized, "invalid_client", "Unauthorized")
		return
	}
	if form.Get("grant_type") != "authorization_code" {
		f.refuse(w, "token", http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+form.Get("grant_type"))
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.codes[form.Get("code")]
	if g == nil || g.used {
		f.refuseLocked(w, "invalid_grant", "Malformed auth code.")
		return
	}
	// Google spends a code on any redemption attempt.
	g.used = true
	if form.Get("redirect_uri") != g.redirectURI {
		f.refuseLocked(w, "redirect_uri_mismatch", "Bad Request")
		return
	}
	verifier := form.Get("code_verifier")
	if verifier == "" {
		f.refuseLocked(w, "invalid_request", "code_verifier or verifier is not needed.")
		return
	}
	sum := sha256.Sum256([]byte(verifier))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		f.refuseLocked(w, "invalid_grant", "Invalid code verifier.")
		return
	}
	access := "ya29." + googleRandom(32)
	f.tokens[access] = g.subject
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": access, "expires_in": 3599, "token_type": "Bearer",
		"scope": "openid https://www.googleapis.com/auth/userinfo.email",
	})
}

// refuseLocked answers a token error while f.mu is held.
func (f *googleFake) refuseLocked(w http.ResponseWriter, code, desc string) {
	f.refused = append(f.refused, "token: "+code+": "+desc)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// userinfo is openidconnect.googleapis.com/v1/userinfo.
func (f *googleFake) userinfo(w http.ResponseWriter, r *http.Request) {
	scheme, access, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	f.mu.Lock()
	sub, ok := f.tokens[access]
	acct := f.accounts[sub]
	f.mu.Unlock()
	if r.Method != http.MethodGet || scheme != "Bearer" || !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/", error="invalid_token"`)
		f.refuse(w, "userinfo", http.StatusUnauthorized, "invalid_request", "Invalid Credentials")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(map[string]any{
		"sub": acct.Subject, "email": acct.Email, "email_verified": acct.EmailVerified,
		"name": acct.Name, "given_name": strings.Fields(acct.Name)[0], "picture": acct.Picture,
	})
}

// googleFlow is one browser's trip through Sign in with Google.
type googleFlow struct {
	start    *http.Response // GET /v1/auth/google
	callback string         // the gateway callback URL Google sent the browser to
}

// googleBegin starts sign-in as b and passes Google's account chooser as
// subject; it returns the callback URL without visiting it.
func googleBegin(t *testing.T, b *consentBrowser, e *env, f *googleFake, subject, query string) googleFlow {
	t.Helper()
	start, body := b.do("GET", e.url+"/v1/auth/google"+query, "")
	if start.StatusCode != http.StatusFound {
		t.Fatalf("GET /v1/auth/google: status %d, want 302: %s", start.StatusCode, body)
	}
	loc := start.Header.Get("Location")
	if !strings.HasPrefix(loc, f.srv.URL+"/authorize?") {
		t.Fatalf("start redirects to %q, not the authorization endpoint", loc)
	}
	auth, body := b.do("GET", loc, "", googleFakeAccountHeader, subject)
	if auth.StatusCode != http.StatusFound {
		t.Fatalf("authorize refused: %d %s", auth.StatusCode, body)
	}
	back, err := url.Parse(auth.Header.Get("Location"))
	if err != nil || back.Path != "/v1/auth/google/callback" {
		t.Fatalf("Google redirects to %q, not the callback", auth.Header.Get("Location"))
	}
	return googleFlow{start: start, callback: e.url + back.Path + "?" + back.RawQuery}
}

// googleSignIn runs the whole flow and returns the callback's answer.
func googleSignIn(t *testing.T, b *consentBrowser, e *env, f *googleFake, subject, query string) (*http.Response, []byte) {
	t.Helper()
	flow := googleBegin(t, b, e, f, subject, query)
	return b.do("GET", flow.callback, "")
}

// googleErrorCode is the code of a gateway error body.
func googleErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("not an error body: %v: %s", err, body)
	}
	return eb.Error.Code
}

func TestGoogleSignIn(t *testing.T) {
	t.Parallel()
	fake := newGoogleFake(t)
	e := newEnv(t, envOptions{cfg: Config{Google: fake.config()}})

	account := func(sub, email string, verified bool) googleFakeAccount {
		a := googleFakeAccount{Subject: sub, Email: email, EmailVerified: verified,
			Name: "Ada Lovelace " + sub, Picture: "https://lh3.googleusercontent.com/a/" + sub + "=s96-c"}
		fake.addAccount(a)
		return a
	}
	// signedIn reports the account the browser's session acts for, or "".
	signedIn := func(t *testing.T, b *consentBrowser) string {
		t.Helper()
		resp, body := b.do("GET", e.url+"/v1/account", "")
		if resp.StatusCode == http.StatusUnauthorized {
			return ""
		}
		var a accountJSON
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &a) != nil {
			t.Fatalf("GET /v1/account: %d %s", resp.StatusCode, body)
		}
		return a.ID
	}
	noAccount := func(t *testing.T, a googleFakeAccount) {
		t.Helper()
		if _, err := e.db.AccountByGoogle(a.Subject); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("account for Google subject: err %v, want ErrNotFound", err)
		}
		if _, err := e.db.AccountByEmail(a.Email); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("account for %s: err %v, want ErrNotFound", a.Email, err)
		}
	}

	t.Run("new user with age attestation", func(t *testing.T) {
		t.Parallel()
		a := account("110169484474386276334", "ada@example.com", true)
		b := newConsentBrowser(t)
		before := time.Now()
		flow := googleBegin(t, b, e, fake, a.Subject, "?over_18=true")

		// The start sets only the necessary state cookie, short-lived and
		// unreadable by scripts, and is not cached.
		if got := flow.start.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("start Cache-Control %q", got)
		}
		oauth := consentSetCookies(t, flow.start)
		if len(oauth) != 1 || oauth[0].Name != cookieOAuth || !oauth[0].HttpOnly || !oauth[0].Secure ||
			oauth[0].MaxAge != 600 || oauth[0].SameSite != http.SameSiteLaxMode || oauth[0].Path != "/" {
			t.Errorf("start cookies %+v, want only %s (HttpOnly, Secure, Lax, Max-Age 600)", oauth, cookieOAuth)
		}

		resp, body := b.do("GET", flow.callback, "")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/welcome" {
			t.Fatalf("callback: %d Location %q: %s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
		set := map[string]bool{}
		for _, c := range consentSetCookies(t, resp) {
			set[c.Name+map[bool]string{true: " deleted"}[consentDeleted(c)]] = true
		}
		if diff := cmp.Diff(map[string]bool{cookieSession: true, cookieOAuth + " deleted": true}, set); diff != "" {
			t.Errorf("callback cookies (-want +got):\n%s", diff)
		}

		acct, err := e.db.AccountByGoogle(a.Subject)
		if err != nil {
			t.Fatalf("no account for the Google subject: %v", err)
		}
		want := store.Account{ID: acct.ID, Email: a.Email, EmailVerified: true, GoogleSubject: a.Subject,
			Plan: "free", Status: store.StatusActive}
		got := acct
		got.Created, got.AgeAttested, got.Credits, got.GrantPeriod = time.Time{}, time.Time{}, 0, ""
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("account (-want +got):\n%s", diff)
		}
		if acct.PasswordHash != "" {
			t.Errorf("a Google account has a password hash")
		}
		if acct.Created.Before(before.Add(-time.Second)) || acct.Created.After(time.Now()) || acct.AgeAttested.IsZero() {
			t.Errorf("created %v, age attested %v", acct.Created, acct.AgeAttested)
		}
		if id := signedIn(t, b); id != acct.ID {
			t.Errorf("session acts for %q, want %q", id, acct.ID)
		}

		// Nothing else from Google is kept: not the name, not the picture
		// (promise A2), in the store or the logs.
		db := readFile(t, filepath.Join(e.dir, "imagegate.db"))
		for _, s := range []string{a.Name, a.Picture, "Ada"} {
			if strings.Contains(string(db), s) {
				t.Errorf("the store file holds %q from Google", s)
			}
			if strings.Contains(e.logs.String(), s) {
				t.Errorf("the log holds %q from Google", s)
			}
		}

		// The callback spent the state: replaying it signs nobody in.
		resp, body = b.do("GET", flow.callback, "")
		if resp.StatusCode != http.StatusBadRequest || googleErrorCode(t, body) != "invalid_state" {
			t.Errorf("replayed callback: %d %s, want 400 invalid_state", resp.StatusCode, body)
		}

		// A later sign-in with the same Google account needs no attestation.
		again := newConsentBrowser(t)
		resp, body = googleSignIn(t, again, e, fake, a.Subject, "")
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("second sign-in: %d %s", resp.StatusCode, body)
		}
		if id := signedIn(t, again); id != acct.ID {
			t.Errorf("second sign-in acts for %q, want %q", id, acct.ID)
		}
	})

	t.Run("new user without age attestation", func(t *testing.T) {
		t.Parallel()
		for _, query := range []string{"", "?over_18=false", "?over_18=1"} {
			a := account("2000"+strings.TrimPrefix(query, "?over_18="), "minor"+strings.TrimPrefix(query, "?over_18=")+"@example.com", true)
			b := newConsentBrowser(t)
			resp, body := googleSignIn(t, b, e, fake, a.Subject, query)
			if resp.StatusCode != http.StatusForbidden || googleErrorCode(t, body) != "age_attestation_required" {
				t.Errorf("start%s: %d %s, want 403 age_attestation_required", query, resp.StatusCode, body)
			}
			noAccount(t, a)
			if b.cookie(cookieSession) != "" || signedIn(t, b) != "" {
				t.Errorf("start%s: a session was started", query)
			}
		}
	})

	t.Run("existing password account is linked", func(t *testing.T) {
		t.Parallel()
		existing := googleVerifiedAccount(t, e, "grace@example.com")
		a := account("3000", "Grace@Example.com", true)
		b := newConsentBrowser(t)
		resp, body := googleSignIn(t, b, e, fake, a.Subject, "")
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("callback: %d %s", resp.StatusCode, body)
		}
		acct, err := e.db.Account(existing.ID)
		if err != nil {
			t.Fatal(err)
		}
		if acct.GoogleSubject != a.Subject || acct.PasswordHash != existing.PasswordHash || acct.Email != existing.Email {
			t.Errorf("after linking: subject %q, password kept %v, email %q", acct.GoogleSubject, acct.PasswordHash == existing.PasswordHash, acct.Email)
		}
		if id := signedIn(t, b); id != existing.ID {
			t.Errorf("session acts for %q, want the existing account %q", id, existing.ID)
		}
	})

	// Account pre-hijacking: someone signs up with the victim's address
	// and a password of their own, and never verifies it. When the victim
	// later signs in with Google, whatever account they land in must not
	// still open with the squatter's password or session.
	t.Run("unverified password account is not handed to its squatter", func(t *testing.T) {
		t.Parallel()
		squatted := consentAccount(t, e, "victim@example.com")
		squatter := newConsentBrowser(t)
		consentSignIn(t, e, squatter, squatted)
		a := account("3500", "victim@example.com", true)
		victim := newConsentBrowser(t)
		resp, body := googleSignIn(t, victim, e, fake, a.Subject, "?over_18=true")
		if resp.StatusCode != http.StatusSeeOther {
			t.Logf("callback: %d %s", resp.StatusCode, body)
		}
		id := signedIn(t, victim)
		if id == "" {
			return // refusing to link is a safe answer too
		}
		if id == squatted.ID {
			if signedIn(t, squatter) == squatted.ID {
				t.Errorf("the squatter's session still opens the victim's account")
			}
			login := newConsentBrowser(t)
			resp, _ := login.do("POST", e.url+"/v1/auth/login", fmt.Sprintf(`{"email":"victim@example.com","password":%q}`, consentPassword))
			if resp.StatusCode == http.StatusOK {
				t.Errorf("the squatter's password still opens the victim's account")
			}
		}
	})

	t.Run("unverified Google address is neither linked nor created", func(t *testing.T) {
		t.Parallel()
		existing := consentAccount(t, e, "hopper@example.com")
		a := account("4000", "hopper@example.com", false)
		b := newConsentBrowser(t)
		resp, body := googleSignIn(t, b, e, fake, a.Subject, "?over_18=true")
		if resp.StatusCode != http.StatusForbidden || googleErrorCode(t, body) != "email_unverified" {
			t.Errorf("callback: %d %s, want 403 email_unverified", resp.StatusCode, body)
		}
		if acct, _ := e.db.Account(existing.ID); acct.GoogleSubject != "" {
			t.Errorf("an unverified Google address was linked to the account that has it")
		}
		if signedIn(t, b) != "" {
			t.Errorf("a session was started")
		}
	})

	t.Run("state mismatch or missing state cookie", func(t *testing.T) {
		t.Parallel()
		a := account("5000", "mallory@example.com", true)
		for name, tamper := range map[string]func(b *consentBrowser, callback string) (*consentBrowser, string){
			"other state": func(b *consentBrowser, cb string) (*consentBrowser, string) {
				u, _ := url.Parse(cb)
				q := u.Query()
				q.Set("state", googleRandom(18))
				u.RawQuery = q.Encode()
				return b, u.String()
			},
			"no state": func(b *consentBrowser, cb string) (*consentBrowser, string) {
				u, _ := url.Parse(cb)
				q := u.Query()
				q.Del("state")
				u.RawQuery = q.Encode()
				return b, u.String()
			},
			// Login CSRF: the attacker's callback URL opened in the
			// victim's browser, which never started a sign-in.
			"no cookie": func(_ *consentBrowser, cb string) (*consentBrowser, string) {
				return newConsentBrowser(t), cb
			},
		} {
			b := newConsentBrowser(t)
			flow := googleBegin(t, b, e, fake, a.Subject, "?over_18=true")
			victim, cb := tamper(b, flow.callback)
			resp, body := victim.do("GET", cb, "")
			if resp.StatusCode != http.StatusBadRequest || googleErrorCode(t, body) != "invalid_state" {
				t.Errorf("%s: %d %s, want 400 invalid_state", name, resp.StatusCode, body)
			}
			if victim.cookie(cookieSession) != "" || signedIn(t, victim) != "" {
				t.Errorf("%s: a session was started", name)
			}
		}
		noAccount(t, a)
	})

	t.Run("wrong PKCE verifier is refused by Google", func(t *testing.T) {
		t.Parallel()
		a := account("6000", "eve@example.com", true)
		b := newConsentBrowser(t)
		flow := googleBegin(t, b, e, fake, a.Subject, "?over_18=true")
		// Swap the verifier in the state cookie, keep the state: only the
		// PKCE check at the token endpoint can catch it.
		state, _, ok := strings.Cut(b.cookie(cookieOAuth), ".")
		if !ok {
			t.Fatalf("state cookie %q is not state.verifier.age", b.cookie(cookieOAuth))
		}
		b.setCookie(cookieOAuth, state+"."+googleRandom(32)+".1")
		resp, body := b.do("GET", flow.callback, "")
		if resp.StatusCode != http.StatusBadGateway || googleErrorCode(t, body) != "google_failed" {
			t.Errorf("callback: %d %s, want 502 google_failed", resp.StatusCode, body)
		}
		if !slices.Contains(fake.refusals(), "token: invalid_grant: Invalid code verifier.") {
			t.Errorf("the fake did not refuse the verifier; refusals: %q", fake.refusals())
		}
		noAccount(t, a)
		if signedIn(t, b) != "" {
			t.Errorf("a session was started")
		}
	})

	t.Run("user cancels at Google", func(t *testing.T) {
		t.Parallel()
		b := newConsentBrowser(t)
		resp, body := googleSignIn(t, b, e, fake, "no-such-google-account", "?over_18=true")
		if resp.StatusCode != http.StatusBadRequest || googleErrorCode(t, body) != "google_refused" {
			t.Errorf("callback: %d %s, want 400 google_refused", resp.StatusCode, body)
		}
	})
}

// googleVerifiedAccount creates a password account whose address was
// confirmed through the emailed link.
func googleVerifiedAccount(t *testing.T, e *env, email string) store.Account {
	t.Helper()
	acct := consentAccount(t, e, email)
	token, err := e.db.CreateEmailVerification(acct.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.ConfirmEmail(token); err != nil {
		t.Fatal(err)
	}
	acct.EmailVerified = true
	return acct
}

func TestGoogleDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, path := range []string{"/v1/auth/google?over_18=true", "/v1/auth/google/callback?state=x&code=y"} {
		resp, body := e.get(e.url + path)
		if resp.StatusCode != http.StatusNotFound || googleErrorCode(t, body) != "google_disabled" {
			t.Errorf("GET %s: %d %s, want 404 google_disabled", path, resp.StatusCode, body)
		}
		if len(resp.Header.Values("Set-Cookie")) != 0 {
			t.Errorf("GET %s set cookies: %q", path, resp.Header.Values("Set-Cookie"))
		}
	}
}
