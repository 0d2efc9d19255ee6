package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// keyClient creates an API key with scopes (a JSON array, or "" for the
// default) from b's browser session and returns a client that sends it.
func (e *env) keyClient(b *browser, scopes string) (*browser, apiKeyJSON) {
	e.t.Helper()
	body := `{"name":"scoped"}`
	if scopes != "" {
		body = `{"name":"scoped","scopes":` + scopes + `}`
	}
	var created apiKeyJSON
	want(e.t, b.call("POST", "/v1/account/api-keys", body, &created), http.StatusCreated)
	return &browser{t: e.t, e: e, client: &http.Client{Timeout: 60 * time.Second},
		header: http.Header{"Authorization": {"Bearer " + created.Key}}}, created
}

// wantError fails unless resp is status with the error code.
func wantError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	var body errorBody
	raw := readBody(t, resp)
	if resp.StatusCode != status || json.Unmarshal(raw, &body) != nil || body.Error.Code != code || body.Error.Message == "" {
		t.Errorf("%s %s: %d %s, want %d %s with a message", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, raw, status, code)
	}
}

func TestAPIKeyScopesChosenAtCreationAndListed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := e.signedIn("scopes@example.com")
	_, plain := e.keyClient(b, "")
	_, both := e.keyClient(b, `["account:read","images:write"]`)
	_, read := e.keyClient(b, `["account:read"]`)
	for _, tc := range []struct {
		key  apiKeyJSON
		want []string
	}{
		{plain, []string{"images:write"}},
		{both, []string{"images:write", "account:read"}},
		{read, []string{"account:read"}},
	} {
		if diff := cmp.Diff(tc.want, tc.key.Scopes); diff != "" {
			t.Errorf("created key scopes (-want +got):\n%s", diff)
		}
	}
	for _, bad := range []string{`[]`, `["admin"]`, `["images:write","account:write"]`, `"images:write"`, `[1]`} {
		resp := b.call("POST", "/v1/account/api-keys", `{"name":"bad","scopes":`+bad+`}`, nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("scopes %s: %d, want 400", bad, resp.StatusCode)
		}
	}
	var list struct{ Data []apiKeyJSON }
	want(t, b.call("GET", "/v1/account/api-keys", "", &list), 200)
	got := map[string][]string{}
	for _, k := range list.Data {
		got[k.ID] = k.Scopes
	}
	wantList := map[string][]string{plain.ID: {"images:write"}, both.ID: {"images:write", "account:read"}, read.ID: {"account:read"}}
	if diff := cmp.Diff(wantList, got); diff != "" {
		t.Errorf("key list scopes (-want +got); refused requests must create nothing:\n%s", diff)
	}
	if keys, _ := e.db.APIKeys(acct.ID); len(keys) != 3 {
		t.Errorf("%d keys stored, want 3", len(keys))
	}
}

// TestLeakedImagesKeyCannotExportOrSignOut is issue 16's finding: a key
// made for generating images must not download the account's data or
// sign its owner out of every browser; scopes do not open browser-only
// routes either.
func TestLeakedImagesKeyCannotExportOrSignOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := e.signedIn("leak@example.com")
	other := e.browser()
	want(t, other.call("POST", "/v1/auth/login", `{"email":"leak@example.com","password":"`+testPassword+`"}`, nil), 200)
	sessions := e.db.SessionCount(acct.ID)
	images, _ := e.keyClient(b, "")
	all, _ := e.keyClient(b, `["images:write","account:read"]`)

	want(t, images.call("POST", "/v1/images/generations", `{"prompt":"a key that may draw","size":"256x256"}`, nil), 200)
	for _, key := range []*browser{images, all} {
		wantError(t, key.call("GET", "/v1/account/export", "", nil), http.StatusForbidden, "session_required")
		wantError(t, key.call("POST", "/v1/auth/logout-all", "", nil), http.StatusForbidden, "session_required")
		wantError(t, key.call("POST", "/v1/auth/logout", "", nil), http.StatusForbidden, "session_required")
	}
	if n := e.db.SessionCount(acct.ID); n != sessions || n != 2 {
		t.Errorf("sessions %d → %d: a refused key request signed someone out", sessions, n)
	}
	want(t, b.call("GET", "/v1/account", "", nil), 200)
	want(t, other.call("GET", "/v1/account", "", nil), 200)
	events, err := e.db.SecurityEvents(acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.Kind == eventLogoutAll || ev.Kind == eventLogout {
			t.Errorf("a refused request logged %s", ev.Kind)
		}
	}

	// History needs account:read; a read-only key cannot generate.
	wantError(t, images.call("GET", "/v1/account/generations", "", nil), http.StatusForbidden, "insufficient_scope")
	want(t, all.call("GET", "/v1/account/generations", "", nil), 200)
	read, _ := e.keyClient(b, `["account:read"]`)
	before := e.generations()
	wantError(t, read.call("POST", "/v1/images/generations", `{"prompt":"a key that may only read","size":"256x256"}`, nil), http.StatusForbidden, "insufficient_scope")
	if e.generations() != before {
		t.Errorf("a refused key still reached the tier")
	}
	// The browser that owns the keys still does everything.
	want(t, b.call("GET", "/v1/account/export", "", nil), 200)
	want(t, b.call("POST", "/v1/auth/logout-all", "", nil), 200)
	if n := e.db.SessionCount(acct.ID); n != 0 {
		t.Errorf("logout-all from the browser left %d sessions", n)
	}
}

// accountRouteAccess is what every account route asks of an API key:
// "read" a key with account:read, "session" a browser session (the key is
// refused whatever its scopes). A new account route must be added here.
var accountRouteAccess = map[string]string{
	"GET /v1/account":                    "read",
	"GET /v1/account/api-keys":           "read",
	"GET /v1/account/generations":        "read",
	"GET /v1/account/settings":           "read",
	"GET /v1/account/profile":            "read",
	"GET /v1/billing":                    "read",
	"GET /v1/account/export":             "session",
	"DELETE /v1/account":                 "session",
	"DELETE /v1/account/generations/:id": "session",
	"POST /v1/account/api-keys":          "session",
	"DELETE /v1/account/api-keys/:id":    "session",
	"PUT /v1/account/settings":           "session",
	"POST /v1/account/email":             "session",
	"DELETE /v1/account/email":           "session",
	"PATCH /v1/account/profile":          "session",
	"POST /v1/auth/logout":               "session",
	"POST /v1/auth/logout-all":           "session",
	"POST /v1/auth/password":             "session",
	"POST /v1/billing/checkout":          "session",
	"POST /v1/billing/portal":            "session",
}

// isAccountRoute says which routes act on a signed-in account.
func isAccountRoute(route string) bool {
	_, path, _ := strings.Cut(route, " ")
	switch {
	case path == "/v1/billing/webhook":
		return false
	case path == "/v1/account", strings.HasPrefix(path, "/v1/account/"), strings.HasPrefix(path, "/v1/billing"),
		path == "/v1/auth/logout", path == "/v1/auth/logout-all", path == "/v1/auth/password":
		return true
	}
	return false
}

// TestEveryAccountRouteChecksTheKeysScope walks every account route the
// gateway registers with keys of each scope and checks the one answer
// authorize gives; what the refused requests would have changed did not
// change.
func TestEveryAccountRouteChecksTheKeysScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := e.signedIn("walk-keys@example.com")
	images, _ := e.keyClient(b, "")
	read, _ := e.keyClient(b, `["account:read"]`)
	both, _ := e.keyClient(b, `["images:write","account:read"]`)
	gen, _, err := e.db.RecordGeneration(acct.ID, store.Generation{Prompt: "kept", Object: strings.Repeat("8", 64), Ext: "png", ContentKey: "walk-keys"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keysBefore, _ := e.db.APIKeys(acct.ID)
	before, _ := e.db.Account(acct.ID)

	routes := walkRoutes(e.gw)
	for _, r := range routes {
		if isAccountRoute(r) && accountRouteAccess[r] == "" {
			t.Errorf("account route %q is not in accountRouteAccess: say what it asks of an API key", r)
		}
	}
	for r := range accountRouteAccess {
		if !slices.Contains(routes, r) {
			t.Errorf("accountRouteAccess names %q, which the gateway does not register", r)
		}
	}
	ids := map[string]string{"/v1/account/generations/:id": "/v1/account/generations/" + gen.ID, "/v1/account/api-keys/:id": "/v1/account/api-keys/" + keysBefore[0].ID}
	for route, need := range accountRouteAccess {
		method, path, _ := strings.Cut(route, " ")
		if p, ok := ids[path]; ok {
			path = p
		}
		body := ""
		if method != "GET" {
			body = fmt.Sprintf(`{"password":%q,"current_password":%q,"new_password":"a takeover passphrase","new_email":"thief@example.org","display_name":"thief","analytics":false,"name":"minted"}`, testPassword, testPassword)
		}
		for _, k := range []struct {
			name string
			c    *browser
			ok   bool
		}{
			{"images:write", images, false},
			{"account:read", read, need == "read"},
			{"both", both, need == "read"},
		} {
			resp := k.c.call(method, path, body, nil)
			code := ""
			if resp.StatusCode == http.StatusForbidden {
				code = apiErrorOf(t, readBody(t, resp)).Code
			}
			switch {
			case k.ok && (resp.StatusCode == http.StatusUnauthorized || code == "session_required" || code == "insufficient_scope"):
				t.Errorf("%s with a %s key: %d %s, want it let through", route, k.name, resp.StatusCode, code)
			case !k.ok && need == "read" && code != "insufficient_scope":
				t.Errorf("%s with a %s key: %d %q, want 403 insufficient_scope", route, k.name, resp.StatusCode, code)
			case !k.ok && need == "session" && code != "session_required":
				t.Errorf("%s with a %s key: %d %q, want 403 session_required", route, k.name, resp.StatusCode, code)
			}
		}
	}

	after, err := e.db.Account(acct.ID)
	if err != nil || after.Status != store.StatusActive || after.Email != before.Email || after.PasswordHash != before.PasswordHash || after.Settings != before.Settings {
		t.Errorf("refused key requests changed the account: %+v → %+v (%v)", before, after, err)
	}
	if keys, _ := e.db.APIKeys(acct.ID); len(keys) != len(keysBefore) {
		t.Errorf("keys %d → %d: a key minted or revoked keys", len(keysBefore), len(keys))
	}
	if n := e.db.GenerationCount(acct.ID); n != 1 {
		t.Errorf("%d generations left, want 1: a key deleted one", n)
	}
	want(t, b.call("GET", "/v1/account", "", nil), 200)
}

// Export and deletion need a sign-in within recentSignIn: a session left
// open on a shared computer does not hand out or erase the account.
func TestExportAndDeletionNeedARecentSignIn(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := newEnv(t, envOptions{now: clock.Now})
	b, acct := e.signedIn("recent@example.com")
	want(t, b.call("GET", "/v1/account/export", "", nil), 200)

	clock.Advance(recentSignIn + time.Minute)
	want(t, b.call("GET", "/v1/account", "", nil), 200) // the session itself lives on
	wantError(t, b.call("GET", "/v1/account/export", "", nil), http.StatusForbidden, "reauthentication_required")
	wantError(t, b.call("DELETE", "/v1/account", `{"password":"`+testPassword+`"}`, nil), http.StatusForbidden, "reauthentication_required")
	if got, _ := e.db.Account(acct.ID); got.Status != store.StatusActive {
		t.Fatalf("a stale session started the erasure: %s", got.Status)
	}

	want(t, b.call("POST", "/v1/auth/login", `{"email":"recent@example.com","password":"`+testPassword+`"}`, nil), 200)
	want(t, b.call("GET", "/v1/account/export", "", nil), 200)
	want(t, b.call("DELETE", "/v1/account", `{"password":"`+testPassword+`"}`, nil), http.StatusAccepted)
}

func readBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
