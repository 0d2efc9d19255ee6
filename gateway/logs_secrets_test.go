package gateway

import (
	"bytes"
	"strings"
	"testing"
)

// TestLogsHoldNoAccountSecrets takes a marker email, passwords, an API
// key, a reset token and a session through the auth flows (a failed
// sign-in, a key made and used, a password change, a reset requested and
// used) and checks that none of them reaches the logs or the metrics.
func TestLogsHoldNoAccountSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const email = "zebracorn-marker@example.com"
	b, _ := e.signedIn(email)
	session := b.sessionCookie()
	var created apiKeyJSON
	want(t, b.call("POST", "/v1/account/api-keys", `{"name":"marker key"}`, &created), 201)
	api := e.apiClient(b)
	api.generate(`{"prompt":"a kite flown with a key","size":"256x256"}`)
	want(t, e.browser().call("POST", "/v1/auth/login", `{"email":"`+email+`","password":"zebracorn wrong password"}`, nil), 401)
	want(t, b.call("POST", "/v1/auth/password", `{"current_password":"`+testPassword+`","new_password":"zebracorn new password"}`, nil), 200)
	want(t, e.browser().call("POST", "/v1/auth/password-reset", `{"email":"`+email+`"}`, nil), 202)
	reset := linkToken(t, e.mailWithSubject(email, "Reset your password"))
	want(t, e.browser().call("POST", "/v1/auth/password-reset/confirm", `{"token":"`+reset+`","new_password":"zebracorn reset password"}`, nil), 204)

	if created.Key == "" || reset == "" || session == "" {
		t.Fatalf("the flows handed out no key (%q), reset token (%q) or session (%q)", created.Key, reset, session)
	}
	logs := e.logs.String()
	_, metrics := e.get(e.metricsURL)
	if !bytes.Contains(metrics, []byte("imagegate_http_requests_total")) {
		t.Fatalf("no metrics read from %s", e.metricsURL)
	}
	usedKey := strings.TrimPrefix(api.header.Get("Authorization"), "Bearer ")
	for _, secret := range []string{email, "zebracorn", testPassword, created.Key, usedKey, reset, session} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain %q", secret)
		}
		if bytes.Contains(metrics, []byte(secret)) {
			t.Errorf("the metrics contain %q", secret)
		}
	}
}
