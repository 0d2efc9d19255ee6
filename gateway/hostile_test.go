package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// hostileBodies are field-agnostic attacks on a JSON parser: each must be
// refused by every JSON route before it touches anything.
var hostileBodies = map[string]string{
	"deep array nesting":  strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
	"deep object nesting": strings.Repeat(`{"a":`, 9000) + "1" + strings.Repeat("}", 9000),
	"too deep to decode":  strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
	"huge number":         strings.Repeat("9", 60000),
	"huge exponent":       `{"email":1e999999999}`,
	"invalid UTF-8 key":   "{\"\xff\xfe\":1}",
	"unknown then dup":    `{"zz":1,"zz":2}`,
	"not an object":       `"a string"`,
	"trailing garbage":    `{} {}`,
	"NUL bytes":           "{\"\x00\":\x00}",
	"over the size limit": `{"x":"` + strings.Repeat("x", 70<<10) + `"}`,
}

// TestHostileJSONOnEveryJSONRoute (billing checkout aside: it needs
// Stripe and is covered in billing_test.go) sends every hostile body to every route
// that decodes JSON, signed in (and with the admin token for admin
// routes), and expects a clean 4xx in the error shape that changed
// nothing: the account and its session are still there and nothing was
// generated or stored.
func TestHostileJSONOnEveryJSONRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	acct := consentAccount(t, e, "hostile@example.com")
	b := newConsentBrowser(t)
	token := consentSignIn(t, e, b, acct)
	// With analytics allowed, so the page-view route reads its body.
	consentPutChoice(t, b, e, `{"preferences":false,"analytics":true}`, "Sec-Fetch-Site", "same-origin")
	routes := []string{
		"POST /v1/images/generations", "POST /v1/auth/signup", "POST /v1/auth/login", "POST /v1/auth/password",
		"POST /v1/auth/password-reset", "POST /v1/auth/password-reset/confirm", "POST /v1/auth/verify-email",
		"DELETE /v1/account", "POST /v1/account/api-keys", "PUT /v1/consent",
		"POST /v1/analytics/pageview", "PUT /v1/account/settings", "POST /v1/account/email", "PATCH /v1/account/profile",
		"POST /v1/admin/purge", "POST /v1/admin/accounts/delete", "POST /v1/admin/dsar", "POST /v1/admin/notify",
		"POST /v1/admin/invalidate",
	}
	objects := e.objectCount()
	for _, route := range routes {
		method, path, _ := strings.Cut(route, " ")
		for name, body := range hostileBodies {
			headers := []string{"Sec-Fetch-Site", "same-origin", "Content-Type", "application/json"}
			if strings.HasPrefix(path, "/v1/admin/") {
				headers = append(headers, "Authorization", "Bearer "+testAdminToken)
			}
			resp, raw := b.do(method, e.url+path, body, headers...)
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Errorf("%s with %s: status %d, want a 4xx: %.200s", route, name, resp.StatusCode, raw)
				continue
			}
			var eb errorBody
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Message == "" || eb.Error.Code == "" {
				t.Errorf("%s with %s: body %.200s lacks the error shape", route, name, raw)
			}
		}
	}
	if _, err := e.db.ValidateSession(token); err != nil {
		t.Errorf("session gone after hostile bodies: %v", err)
	}
	if got, err := e.db.Account(acct.ID); err != nil || got.Email != acct.Email {
		t.Errorf("account changed after hostile bodies: %+v %v", got, err)
	}
	if e.generations() != 0 || e.objectCount() != objects {
		t.Errorf("hostile bodies generated %v images, objects %d→%d", e.generations(), objects, e.objectCount())
	}
}

// rawRequest writes req on a fresh connection and reads the response, or
// fails after a minute (a bound on a broken server, not a timing check).
func rawRequest(t *testing.T, url string, write func(io.Writer)) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	write(conn)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func checkErrorShape(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, raw)
	}
	var eb errorBody
	if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Message == "" || eb.Error.Code == "" {
		t.Fatalf("body %q lacks the error shape", raw)
	}
}

// TestHeaderFloodIsRefused sends thousands of headers: the server must
// answer 431 in the error shape rather than buffer them or drop the
// connection silently.
func TestHeaderFloodIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	resp := rawRequest(t, e.url, func(w io.Writer) {
		bw := bufio.NewWriter(w)
		fmt.Fprint(bw, "POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
		for i := range 5000 {
			fmt.Fprintf(bw, "X-Flood-%d: %s\r\n", i, strings.Repeat("f", 20))
		}
		fmt.Fprint(bw, "Content-Length: 15\r\n\r\n{\"prompt\":\"x\"}")
		bw.Flush()
	})
	checkErrorShape(t, resp, http.StatusRequestHeaderFieldsTooLarge)
	if e.generations() != 0 {
		t.Errorf("a flooded request generated")
	}
}

// TestSlowlorisBodyIsCutOff starts a request and never finishes its body:
// once ReadTimeout passes the server answers 408 and generates nothing.
// The test waits on the server's answer, not on a clock.
func TestSlowlorisBodyIsCutOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{ReadTimeout: 200 * time.Millisecond}})
	resp := rawRequest(t, e.url, func(w io.Writer) {
		fmt.Fprint(w, "POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"prompt\":\"a slow")
	})
	checkErrorShape(t, resp, http.StatusRequestTimeout)
	// Slow headers are cut off the same way.
	resp = rawRequest(t, e.url, func(w io.Writer) {
		fmt.Fprint(w, "POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	})
	checkErrorShape(t, resp, http.StatusRequestTimeout)
	if e.generations() != 0 {
		t.Errorf("a slowloris request generated")
	}
}
