package gateway

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWholeJourneyLeavesNoMarkerInLogsMetricsOrAnalytics runs a user's
// whole life through the gateway with marker strings in the prompt, the
// email and the password, and checks that none of them appears in any log
// line, metric or analytics record (promise C4).
func TestWholeJourneyLeavesNoMarkerInLogsMetricsOrAnalytics(t *testing.T) {
	t.Parallel()
	const (
		emailMarker    = "quokkamail"
		passMarker     = "quokkapass"
		promptMarker   = "quokkaprompt"
		email          = emailMarker + "@example.com"
		password       = passMarker + " long enough"
		newPassword    = passMarker + " even longer"
		markerUA       = "QuokkaAgent/1.0"
		markerIP       = "203.0.113.77"
		adminTokenText = "journey-admin-token-0001"
	)
	e := newEnv(t, envOptions{cfg: Config{AdminToken: adminTokenText, LifecycleInterval: time.Hour,
		ClientIP: ClientIPConfig{TrustedProxies: []string{"127.0.0.1/32"}, Header: "Fly-Client-IP"}}})
	b := e.browser()
	b.header.Set("User-Agent", markerUA)
	b.header.Set("Fly-Client-IP", markerIP)

	// Consent to analytics, then sign up, verify, sign in.
	want(t, b.call("PUT", "/v1/consent", `{"preferences":true,"analytics":true}`, nil), 200)
	want(t, b.call("POST", "/v1/analytics/pageview", `{"path":"/`+promptMarker+`?q=`+emailMarker+`"}`, nil), 204)
	want(t, b.call("POST", "/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, nil), 202)
	want(t, b.call("POST", "/v1/auth/verify-email", `{"token":"`+linkToken(t, e.mailWithSubject(email, "Confirm your email address"))+`"}`, nil), 204)
	want(t, b.call("POST", "/v1/auth/login", `{"email":"`+email+`","password":"wrong `+passMarker+`"}`, nil), 401)
	want(t, b.call("POST", "/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, nil), 200)
	want(t, b.call("POST", "/v1/analytics/pageview", `{"path":"/"}`, nil), 204)

	// Generate, edit, a refused request, history, settings, export.
	b.generate(`{"prompt":"` + promptMarker + ` skyline","negative_prompt":"` + promptMarker + `","size":"256x256"}`)
	b.call("POST", "/v1/images/generations", `{"prompt":"`+promptMarker+`","size":"300x300"}`, nil)
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("prompt", promptMarker+" gameboy")
	fw, _ := mw.CreateFormFile("image", promptMarker+".png")
	fw.Write(testPNG(t, 32, 32))
	mw.Close()
	req, _ := http.NewRequest("POST", e.url+"/v1/images/edits", &form)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Fly-Client-IP", markerIP)
	resp, err := b.client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("edit: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	want(t, b.call("GET", "/v1/account/generations", "", nil), 200)
	want(t, b.call("PUT", "/v1/account/settings", `{"product_email":true}`, nil), 200)
	want(t, b.call("POST", "/v1/auth/password", `{"current_password":"`+password+`","new_password":"`+newPassword+`"}`, nil), 200)
	want(t, b.call("GET", "/v1/account/export", "", nil), 200)
	want(t, e.browser().call("POST", "/v1/auth/password-reset", `{"email":"`+email+`"}`, nil), 202)

	// Leave.
	want(t, b.call("DELETE", "/v1/account", `{"password":"`+newPassword+`"}`, nil), 202)
	if err := e.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}

	admin := &browser{t: t, e: e, client: &http.Client{Timeout: time.Minute}, header: http.Header{"Authorization": {"Bearer " + adminTokenText}}}
	analytics := admin.call("GET", "/v1/admin/analytics", "", nil)
	want(t, analytics, 200)
	analyticsBody, _ := io.ReadAll(analytics.Body)
	if !bytes.Contains(analyticsBody, []byte(`"/"`)) {
		t.Fatalf("the journey's page views were not counted: %s", analyticsBody)
	}
	_, metrics := e.get(e.metricsURL)
	logs := e.logs.String()

	for _, marker := range []string{emailMarker, passMarker, promptMarker, markerUA, markerIP} {
		if strings.Contains(logs, marker) {
			t.Errorf("a log line holds %q", marker)
		}
		if bytes.Contains(metrics, []byte(marker)) {
			t.Errorf("a metric holds %q", marker)
		}
		if bytes.Contains(analyticsBody, []byte(marker)) {
			t.Errorf("the analytics hold %q", marker)
		}
	}
	// The store files may hold sealed data only: no marker in the clear.
	for _, name := range []string{"imagegate.db", "cache.db"} {
		data, err := os.ReadFile(filepath.Join(e.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, marker := range []string{emailMarker, passMarker, promptMarker, markerUA, markerIP} {
			if bytes.Contains(data, []byte(marker)) {
				t.Errorf("%s holds %q in the clear", name, marker)
			}
		}
	}
}
