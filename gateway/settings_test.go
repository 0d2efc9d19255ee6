package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// settingsBrowser is a signed-in browser of a fresh account.
func settingsBrowser(t *testing.T, e *env, email string) (*consentBrowser, store.Account) {
	t.Helper()
	b := newConsentBrowser(t)
	acct := consentAccount(t, e, email)
	consentSignIn(t, e, b, acct)
	return b, acct
}

// sameOrigin sends a request as the site's own pages do.
func (b *consentBrowser) sameOrigin(e *env, method, path, body string, headers ...string) (*http.Response, []byte) {
	b.t.Helper()
	return b.do(method, e.url+path, body, append([]string{"Sec-Fetch-Site", "same-origin"}, headers...)...)
}

func decodeSettings(t *testing.T, resp *http.Response, body []byte) settingsJSON {
	t.Helper()
	var s settingsJSON
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &s) != nil {
		t.Fatalf("%s %s: %d %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, body)
	}
	return s
}

// settingsCall sends a settings request and decodes the answer.
func settingsCall(t *testing.T, e *env, b *consentBrowser, method, body string, headers ...string) settingsJSON {
	t.Helper()
	resp, raw := b.sameOrigin(e, method, "/v1/account/settings", body, headers...)
	return decodeSettings(t, resp, raw)
}

func settingsEvents(t *testing.T, e *env, accountID string) []string {
	t.Helper()
	events, err := e.db.SecurityEvents(accountID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range events {
		if ev.Kind == eventSettingsChanged {
			out = append(out, ev.Detail)
		}
	}
	return out
}

// TestSettingsRoundTripAndGPC checks promise R4 (each opt-out switchable,
// the API's positive switches stored as the store's opt-outs) and K2 on
// accounts: a Sec-GPC: 1 request opts the account out of analytics and
// model improvement, written once, and an opt-in is refused while the
// browser sends the signal.
func TestSettingsRoundTripAndGPC(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := settingsBrowser(t, e, "settings@example.com")
	gpc := []string{"Sec-GPC", "1"}

	stored := func() store.Settings {
		t.Helper()
		a, err := e.db.Account(acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		return a.Settings
	}

	got := settingsCall(t, e, b, "GET", "")
	if diff := cmp.Diff(settingsJSON{Analytics: true, ModelImprovement: true}, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}

	got = settingsCall(t, e, b, "PUT", `{"product_email":true,"model_improvement":false}`)
	if diff := cmp.Diff(settingsJSON{ProductEmail: true, Analytics: true}, got); diff != "" {
		t.Errorf("after PUT (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(store.Settings{ProductEmail: true, NoModelImprovement: true}, stored()); diff != "" {
		t.Errorf("stored after PUT (-want +got):\n%s", diff)
	}
	got = settingsCall(t, e, b, "GET", "")
	if diff := cmp.Diff(settingsJSON{ProductEmail: true, Analytics: true}, got); diff != "" {
		t.Errorf("GET after PUT (-want +got):\n%s", diff)
	}

	for _, body := range []string{`{}`, `{"analytics":"yes"}`, `{"analytics":true,"marketing":true}`} {
		if resp, raw := b.sameOrigin(e, "PUT", "/v1/account/settings", body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT %s: %d %s, want 400", body, resp.StatusCode, raw)
		}
	}

	// GPC: both opt-outs set, once.
	got = settingsCall(t, e, b, "GET", "", gpc...)
	if diff := cmp.Diff(settingsJSON{ProductEmail: true, GPC: true}, got); diff != "" {
		t.Errorf("GET under GPC (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(store.Settings{ProductEmail: true, NoAnalytics: true, NoModelImprovement: true}, stored()); diff != "" {
		t.Errorf("stored after GPC (-want +got):\n%s", diff)
	}
	for range 3 {
		b.sameOrigin(e, "GET", "/v1/account/profile", "", gpc...)
	}
	wantEvents := []string{
		"product_email=on analytics=on model_improvement=off source=settings",
		"product_email=on analytics=off model_improvement=off source=gpc",
	}
	if diff := cmp.Diff(wantEvents, settingsEvents(t, e, acct.ID)); diff != "" {
		t.Errorf("settings events (-want +got); GPC must be written once:\n%s", diff)
	}

	// Opting in while the browser sends GPC is refused; without it, the
	// user's explicit choice stands.
	resp, raw := b.sameOrigin(e, "PUT", "/v1/account/settings", `{"analytics":true}`, gpc...)
	if resp.StatusCode != http.StatusConflict || googleErrorCode(t, raw) != "gpc_opt_out" {
		t.Errorf("opt-in under GPC: %d %s, want 409 gpc_opt_out", resp.StatusCode, raw)
	}
	got = settingsCall(t, e, b, "PUT", `{"analytics":true,"product_email":false}`)
	if diff := cmp.Diff(settingsJSON{Analytics: true}, got); diff != "" {
		t.Errorf("opt-in without GPC (-want +got):\n%s", diff)
	}

	// An API key with account:read reads the same settings; a visitor
	// without an account has none.
	secret, _, err := e.db.CreateAPIKey(acct.ID, "ci", []string{store.ScopeAccountRead})
	if err != nil {
		t.Fatal(err)
	}
	resp, raw = e.get(e.url+"/v1/account/settings", "Authorization", "Bearer "+secret)
	if got := decodeSettings(t, resp, raw); got.Analytics != true || got.ModelImprovement {
		t.Errorf("settings by API key: %+v", got)
	}
	if resp, _ := e.get(e.url + "/v1/account/settings"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous GET settings: %d, want 401", resp.StatusCode)
	}

	// GPC on the page-view route also reaches a signed-in account.
	b2, acct2 := settingsBrowser(t, e, "settings-pageview@example.com")
	b2.sameOrigin(e, "POST", "/v1/analytics/pageview", `{"path":"/"}`, gpc...)
	a2, err := e.db.Account(acct2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !a2.Settings.NoAnalytics || !a2.Settings.NoModelImprovement {
		t.Errorf("GPC on a page view left settings %+v", a2.Settings)
	}
}

// TestEmailChange checks promise R2's address correction: the password
// re-authenticates, the new address gets the link and the old one a
// notice, the address changes only when the link is used (the old one
// signs in until then), and a pending change can be cancelled.
func TestEmailChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const oldEmail, newEmail = "old-address@example.com", "new-address@example.org"
	b, acct := settingsBrowser(t, e, oldEmail)
	change := func(b *consentBrowser, body string, headers ...string) (*http.Response, []byte) {
		t.Helper()
		return b.sameOrigin(e, "POST", "/v1/account/email", body, headers...)
	}
	login := func(email string) int {
		t.Helper()
		resp := e.browser().call("POST", "/v1/auth/login", `{"email":"`+email+`","password":"`+consentPassword+`"}`, nil)
		return resp.StatusCode
	}
	drainMail := func() {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		e.gw.mail.wait(ctx)
	}

	// Refusals: none sends mail.
	secret, _, err := e.db.CreateAPIKey(acct.ID, "ci", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body string
		headers    []string
		status     int
		code       string
	}{
		{"wrong password", `{"new_email":"` + newEmail + `","password":"not the password"}`, nil, http.StatusForbidden, "invalid_credentials"},
		{"no password", `{"new_email":"` + newEmail + `"}`, nil, http.StatusForbidden, "invalid_credentials"},
		{"invalid address", `{"new_email":"not an address","password":"` + consentPassword + `"}`, nil, http.StatusBadRequest, "invalid_email"},
		{"same address", `{"new_email":" OLD-address@example.com ","password":"` + consentPassword + `"}`, nil, http.StatusBadRequest, "same_email"},
		{"API key", `{"new_email":"` + newEmail + `","password":"` + consentPassword + `"}`, []string{"Authorization", "Bearer " + secret}, http.StatusForbidden, "session_required"},
	} {
		resp, raw := change(b, tc.body, tc.headers...)
		if resp.StatusCode != tc.status || googleErrorCode(t, raw) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, resp.StatusCode, raw, tc.status, tc.code)
		}
	}
	drainMail()
	if got := e.mails(newEmail, 0); len(got) != 0 {
		t.Errorf("refused requests mailed the new address %d times", len(got))
	}

	resp, raw := change(b, `{"new_email":"New-Address@Example.org","password":"`+consentPassword+`"}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("change: %d %s", resp.StatusCode, raw)
	}
	link := e.mailWithSubject(newEmail, "Confirm your email address")
	token := linkToken(t, link)
	notice := e.mailWithSubject(oldEmail, "Your email address is being changed")
	noticeBody, _ := io.ReadAll(notice.Body)
	if !strings.Contains(string(noticeBody), "n***@example.org") || strings.Contains(string(noticeBody), newEmail) {
		t.Errorf("notice to the old address should name the new one masked:\n%s", noticeBody)
	}

	// Until the link is used, nothing changed.
	if login(oldEmail) != http.StatusOK || login(newEmail) != http.StatusUnauthorized {
		t.Errorf("before the link: old address must sign in, new must not")
	}
	if a, err := e.db.AccountByEmail(oldEmail); err != nil || a.ID != acct.ID {
		t.Errorf("before the link, the old address finds %v, %v", a.ID, err)
	}

	resp, raw = b.sameOrigin(e, "POST", "/v1/auth/verify-email", `{"token":"`+token+`"}`)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("verify: %d %s", resp.StatusCode, raw)
	}
	if login(newEmail) != http.StatusOK || login(oldEmail) != http.StatusUnauthorized {
		t.Errorf("after the link: new address must sign in, old must not")
	}
	if a, err := e.db.Account(acct.ID); err != nil || a.Email != newEmail || !a.EmailVerified {
		t.Errorf("after the link: %+v, %v", a, err)
	}
	if resp, _ := b.sameOrigin(e, "POST", "/v1/auth/verify-email", `{"token":"`+token+`"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a used link worked again: %d", resp.StatusCode)
	}

	// A pending change can be cancelled: its link then fails.
	const third = "third-address@example.net"
	if resp, raw := change(b, `{"new_email":"`+third+`","password":"`+consentPassword+`"}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("second change: %d %s", resp.StatusCode, raw)
	}
	thirdToken := linkToken(t, e.mailWithSubject(third, "Confirm your email address"))
	resp, raw = b.sameOrigin(e, "DELETE", "/v1/account/email", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"cancelled":true`) {
		t.Errorf("cancel: %d %s", resp.StatusCode, raw)
	}
	if resp, _ := b.sameOrigin(e, "POST", "/v1/auth/verify-email", `{"token":"`+thirdToken+`"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a cancelled change's link worked: %d", resp.StatusCode)
	}
	if a, _ := e.db.Account(acct.ID); a.Email != newEmail {
		t.Errorf("address after the cancelled change: %q", a.Email)
	}
	if resp, raw := b.sameOrigin(e, "DELETE", "/v1/account/email", ""); !strings.Contains(string(raw), `"cancelled":false`) {
		t.Errorf("cancel with nothing pending: %d %s", resp.StatusCode, raw)
	}
}

// TestEmailChangeToTakenAddress checks that asking for an address another
// account has answers exactly like any other request, and the link then
// says only that the address is no longer available.
func TestEmailChangeToTakenAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const taken = "taken@example.com"
	other := consentAccount(t, e, taken)
	b, acct := settingsBrowser(t, e, "mover@example.com")
	_, freeBody := b.sameOrigin(e, "POST", "/v1/account/email", `{"new_email":"free@example.com","password":"`+consentPassword+`"}`)
	resp, takenBody := b.sameOrigin(e, "POST", "/v1/account/email", `{"new_email":"`+taken+`","password":"`+consentPassword+`"}`)
	if resp.StatusCode != http.StatusAccepted || string(freeBody) != string(takenBody) {
		t.Errorf("a taken address answered %d %s; a free one %s", resp.StatusCode, takenBody, freeBody)
	}
	var token string
	for _, m := range e.mails(taken, 1) {
		if m.Header.Get("Subject") == "Confirm your email address" {
			token = linkToken(t, m)
		}
	}
	resp, raw := b.sameOrigin(e, "POST", "/v1/auth/verify-email", `{"token":"`+token+`"}`)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(raw), "no longer available") {
		t.Errorf("confirming a taken address: %d %s, want 409 no longer available", resp.StatusCode, raw)
	}
	if a, _ := e.db.Account(acct.ID); a.Email != "mover@example.com" {
		t.Errorf("mover's address became %q", a.Email)
	}
	if a, _ := e.db.AccountByEmail(taken); a.ID != other.ID {
		t.Errorf("the taken address moved to %q", a.ID)
	}
}

// TestEmailChangeGoogleOnly checks the documented refusal for accounts
// without a password.
func TestEmailChangeGoogleOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	acct, err := e.db.CreateAccount(store.NewAccount{Email: "google-only@example.com", EmailVerified: true, GoogleSubject: "g-123", Plan: "free", AgeAttested: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	b := newConsentBrowser(t)
	consentSignIn(t, e, b, acct)
	resp, raw := b.sameOrigin(e, "POST", "/v1/account/email", `{"new_email":"elsewhere@example.com","password":""}`)
	if resp.StatusCode != http.StatusForbidden || googleErrorCode(t, raw) != "password_required" {
		t.Errorf("Google-only change: %d %s, want 403 password_required", resp.StatusCode, raw)
	}
}

// TestProfileSealedAndValidated checks the profile half of promise R2:
// round trip, validation, and the display name sealed in the store file.
func TestProfileSealedAndValidated(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, _ := settingsBrowser(t, e, "profile@example.com")
	const marker = "Ada Marker-9912"
	get := func() profileJSON {
		t.Helper()
		resp, raw := b.sameOrigin(e, "GET", "/v1/account/profile", "")
		var p profileJSON
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &p) != nil {
			t.Fatalf("GET profile: %d %s", resp.StatusCode, raw)
		}
		return p
	}
	if p := get(); p != (profileJSON{}) {
		t.Errorf("initial profile %+v", p)
	}
	resp, raw := b.sameOrigin(e, "PATCH", "/v1/account/profile", `{"display_name":"  `+marker+` "}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, raw)
	}
	if p := get(); p.DisplayName != marker {
		t.Errorf("profile after PATCH %+v, want %q", p, marker)
	}
	data, err := os.ReadFile(filepath.Join(e.dir, "imagegate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "Marker-9912") {
		t.Errorf("the display name is readable in the store file")
	}
	for _, body := range []string{`{}`, `{"display_name":null}`, `{"display_name":"a\u202eb"}`, `{"display_name":"` + strings.Repeat("x", 65) + `"}`, `{"name":"x"}`} {
		if resp, raw := b.sameOrigin(e, "PATCH", "/v1/account/profile", body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PATCH %s: %d %s, want 400", body, resp.StatusCode, raw)
		}
	}
	if p := get(); p.DisplayName != marker {
		t.Errorf("refused PATCHes changed the profile to %+v", p)
	}
	if resp, _ := b.sameOrigin(e, "PATCH", "/v1/account/profile", `{"display_name":""}`); resp.StatusCode != http.StatusOK {
		t.Errorf("clearing: %d", resp.StatusCode)
	}
	if p := get(); p != (profileJSON{}) {
		t.Errorf("cleared profile %+v", p)
	}
	if resp, _ := e.get(e.url + "/v1/account/profile"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous GET profile: %d, want 401", resp.StatusCode)
	}
}

var displayNameCases = []struct {
	in, want string
	ok       bool
}{
	{"Ada", "Ada", true},
	{"  Ada Lovelace\t", "Ada Lovelace", true},
	{"", "", true},
	{"Zoë", "Zoë", true},
	{"Zoe\u0308", "Zoë", true}, // NFC
	{"李小龍", "李小龍", true},
	{"👩‍💻 dev", "👩‍💻 dev", true},
	{strings.Repeat("é", 64), strings.Repeat("é", 64), true},
	{strings.Repeat("é", 65), "", false},
	{"two\nlines", "", false},
	{"bell\a", "", false},
	{"evil\u202eman", "", false},
	{"iso\u2066late", "", false},
	{"line\u2028sep", "", false},
	{"\xff\xfe", "", false},
}

func TestCleanDisplayName(t *testing.T) {
	t.Parallel()
	for _, tc := range displayNameCases {
		got, err := cleanDisplayName(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("cleanDisplayName(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzDisplayName checks that an accepted name is valid, trimmed, short,
// on one line and stable.
func FuzzDisplayName(f *testing.F) {
	for _, tc := range displayNameCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := cleanDisplayName(in)
		if err != nil {
			return
		}
		if !utf8.ValidString(got) || utf8.RuneCountInString(got) > maxDisplayName || strings.ContainsAny(got, "\r\n\t\u202e") || strings.TrimSpace(got) != got {
			t.Fatalf("cleanDisplayName(%q) accepted %q", in, got)
		}
		if again, err := cleanDisplayName(got); err != nil || again != got {
			t.Fatalf("cleanDisplayName is not stable on %q: %q, %v", got, again, err)
		}
	})
}

func TestMaskEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"new-address@example.org": "n***@example.org",
		"é@example.com":           "é***@example.com",
	} {
		if got := maskEmail(in); got != want {
			t.Errorf("maskEmail(%q) = %q, want %q", in, got, want)
		}
	}
}
