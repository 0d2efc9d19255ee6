package gateway

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// verified signs email up, proves the address with the emailed link and
// signs in.
func (e *env) verified(email string) *browser {
	e.t.Helper()
	b, _ := e.signedIn(email)
	tok := linkToken(e.t, e.mailWithSubject(email, "Confirm your email address"))
	want(e.t, b.call("POST", "/v1/auth/verify-email", `{"token":"`+tok+`"}`, nil), http.StatusNoContent)
	return b
}

// keyWorks reports whether the key still generates.
func keyWorks(t *testing.T, key *browser) bool {
	t.Helper()
	resp := key.call("POST", "/v1/images/generations", `{"prompt":"is this key alive","size":"256x256"}`, nil)
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusUnauthorized:
		return false
	}
	t.Fatalf("key check: %d", resp.StatusCode)
	return false
}

func mailText(t *testing.T, e *env, to, subject string) string {
	t.Helper()
	body, err := io.ReadAll(e.mailWithSubject(to, subject).Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(body)), " ")
}

// A password change revokes the API keys, or keeps them flagged, as the
// user chose; the response and the notice mail say which.
func TestPasswordChangeRevokesOrFlagsAPIKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, field string
		revoked     bool
		inMail      string
	}{
		{"default revokes", "", true, "Your API key was revoked"},
		{"revoke", `,"api_keys":"revoke"`, true, "Your API key was revoked"},
		{"flag", `,"api_keys":"flag"`, false, "Your API key was kept working, as you chose, and flagged in your key list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			const email = "pw-keys@example.com"
			b, _ := e.signedIn(email)
			key, created := e.keyClient(b, "")
			var got struct {
				Sessions int `json:"sessions_ended"`
				Revoked  int `json:"api_keys_revoked"`
				Flagged  int `json:"api_keys_flagged"`
			}
			want(t, b.call("POST", "/v1/auth/password", `{"current_password":"`+testPassword+`","new_password":"a new passphrase 42"`+tc.field+`}`, &got), 200)
			if (got.Revoked == 1) != tc.revoked || (got.Flagged == 1) == tc.revoked {
				t.Errorf("answer %+v, revoked=%v wanted", got, tc.revoked)
			}
			if keyWorks(t, key) == tc.revoked {
				t.Errorf("key works = %v after the change, want %v", !tc.revoked, !tc.revoked)
			}
			var list struct{ Data []apiKeyJSON }
			want(t, b.call("GET", "/v1/account/api-keys", "", &list), 200)
			if tc.revoked && len(list.Data) != 0 {
				t.Errorf("revoked keys still listed: %+v", list.Data)
			}
			if !tc.revoked && (len(list.Data) != 1 || list.Data[0].ID != created.ID || list.Data[0].Flagged == 0 || list.Data[0].FlaggedBy != "password_change") {
				t.Errorf("kept key listed as %+v, want it flagged by password_change", list.Data)
			}
			if text := mailText(t, e, email, "Your password was changed"); !strings.Contains(text, tc.inMail) {
				t.Errorf("notice mail %q does not say %q", text, tc.inMail)
			}
		})
	}

	t.Run("an unknown choice changes nothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envOptions{})
		b, _ := e.signedIn("pw-keys-bad@example.com")
		key, _ := e.keyClient(b, "")
		wantError(t, b.call("POST", "/v1/auth/password", `{"current_password":"`+testPassword+`","new_password":"a new passphrase 42","api_keys":"keep"}`, nil), http.StatusBadRequest, "invalid_api_keys")
		if !keyWorks(t, key) {
			t.Error("a refused change revoked the key")
		}
		want(t, e.browser().call("POST", "/v1/auth/login", `{"email":"pw-keys-bad@example.com","password":"`+testPassword+`"}`, nil), 200)
	})
}

// A reset by emailed link offers the same choice on its page; an account
// that never proved its address loses its keys whatever is chosen (the
// signer-up may not own the address).
func TestPasswordResetRevokesOrFlagsAPIKeys(t *testing.T) {
	t.Parallel()
	resetWith := func(t *testing.T, e *env, email, choice string) string {
		t.Helper()
		want(t, e.browser().call("POST", "/v1/auth/password-reset", `{"email":"`+email+`"}`, nil), http.StatusAccepted)
		token := linkToken(t, e.mailWithSubject(email, "Reset your password"))
		page := e.browser().call("GET", "/reset-password?token="+url.QueryEscape(token), "", nil)
		html := string(readBody(t, page))
		for _, input := range []string{`name="api_keys" value="revoke" checked`, `name="api_keys" value="flag"`} {
			if !strings.Contains(html, input) {
				t.Errorf("reset page lacks %s", input)
			}
		}
		form := url.Values{"token": {token}, "new_password": {"a reset passphrase 7"}}
		if choice != "" {
			form.Set("api_keys", choice)
		}
		req, _ := http.NewRequest("POST", e.url+"/v1/auth/password-reset/confirm", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, body := e.do(req)
		if resp.StatusCode != 200 {
			t.Fatalf("confirm: %d %s", resp.StatusCode, body)
		}
		return strings.Join(strings.Fields(string(body)), " ")
	}

	for _, tc := range []struct {
		name, choice string
		verified     bool
		revoked      bool
	}{
		{"default revokes", "", true, true},
		{"flag", "flag", true, false},
		{"unproven address revokes even when flag is asked", "flag", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			const email = "reset-keys@example.com"
			var b *browser
			if tc.verified {
				b = e.verified(email)
			} else {
				b, _ = e.signedIn(email)
			}
			key, _ := e.keyClient(b, "")
			page := resetWith(t, e, email, tc.choice)
			sentence := "Your API key was revoked"
			if !tc.revoked {
				sentence = "Your API key was kept working, as you chose, and flagged"
			}
			if !strings.Contains(page, sentence) {
				t.Errorf("confirmation page %q does not say %q", page, sentence)
			}
			if text := mailText(t, e, email, "Your password was changed"); !strings.Contains(text, sentence) || !strings.Contains(text, "reset with an emailed link") {
				t.Errorf("notice mail %q does not say %q", text, sentence)
			}
			if keyWorks(t, key) == tc.revoked {
				t.Errorf("key works = %v, want %v", !tc.revoked, !tc.revoked)
			}
		})
	}
}
