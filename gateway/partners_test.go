package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

const partnerAdminToken = "partner-admin-token-0001"

// partnerEnv is a gateway with the admin API on.
func partnerEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{cfg: Config{AdminToken: partnerAdminToken}})
}

func (e *env) partnerAdmin(method, path, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+partnerAdminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, raw := e.do(req)
	return resp.StatusCode, raw
}

type createdPartner struct {
	Partner   partnerJSON `json:"partner"`
	SecretKey string      `json:"secret_key"`
}

func (e *env) addPartner(body string) createdPartner {
	e.t.Helper()
	status, raw := e.partnerAdmin("POST", "/v1/admin/partners", body)
	if status != http.StatusCreated {
		e.t.Fatalf("create partner: %d %s", status, raw)
	}
	var cp createdPartner
	if err := json.Unmarshal(raw, &cp); err != nil {
		e.t.Fatal(err)
	}
	return cp
}

func (e *env) partnerView(id string) partnerJSON {
	e.t.Helper()
	status, raw := e.partnerAdmin("GET", "/v1/admin/partners/"+id, "")
	if status != http.StatusOK {
		e.t.Fatalf("get partner: %d %s", status, raw)
	}
	var v partnerJSON
	if err := json.Unmarshal(raw, &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func errorCode(t *testing.T, raw []byte) string {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("not an error body: %s", raw)
	}
	return b.Error.Code
}

const shopOrigin = "https://shop.example"

func TestAdminPartners(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)

	for name, body := range map[string]string{
		"bad origin":    `{"name":"Shop","origins":["https://shop.example/page"],"monthly_quota":10,"rate_limit":60}`,
		"wildcard":      `{"name":"Shop","origins":["https://*.example"],"monthly_quota":10,"rate_limit":60}`,
		"no origins":    `{"name":"Shop","origins":[],"monthly_quota":10,"rate_limit":60}`,
		"unknown plan":  `{"name":"Shop","origins":["https://a.example"],"monthly_quota":10,"rate_limit":60,"plan":"gold"}`,
		"zero quota":    `{"name":"Shop","origins":["https://a.example"],"rate_limit":60}`,
		"unknown field": `{"name":"Shop","origins":["https://a.example"],"monthly_quota":10,"rate_limit":60,"colour":"red"}`,
	} {
		status, raw := e.partnerAdmin("POST", "/v1/admin/partners", body)
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, status, raw)
		}
	}
	if ps, _ := e.db.Partners(); len(ps) != 0 {
		t.Fatalf("refused requests stored partners: %v", ps)
	}

	cp := e.addPartner(`{"name":"Shop","origins":["https://Shop.example:443"],"monthly_quota":10,"rate_limit":60}`)
	if !strings.HasPrefix(cp.SecretKey, "psk_") || !strings.HasPrefix(cp.Partner.PublishableKey, "pk_") || cp.Partner.Plan != "free" {
		t.Fatalf("created %+v", cp)
	}
	if diff := cmp.Diff([]string{shopOrigin}, cp.Partner.Origins); diff != "" {
		t.Errorf("origins (-want +got):\n%s", diff)
	}
	if !strings.Contains(cp.Partner.Snippet, `data-key="`+cp.Partner.PublishableKey+`"`) || !strings.Contains(cp.Partner.Snippet, e.url+"/embed.js") {
		t.Errorf("snippet %q", cp.Partner.Snippet)
	}

	status, raw := e.partnerAdmin("GET", "/v1/admin/partners", "")
	if status != http.StatusOK || strings.Contains(string(raw), cp.SecretKey) {
		t.Fatalf("list: %d %s (the secret key must never be listed)", status, raw)
	}
	var list struct{ Partners []partnerJSON }
	json.Unmarshal(raw, &list)
	if len(list.Partners) != 1 || list.Partners[0].ID != cp.Partner.ID {
		t.Errorf("list %s", raw)
	}

	status, raw = e.partnerAdmin("PATCH", "/v1/admin/partners/"+cp.Partner.ID, `{"monthly_quota":20,"origins":["https://shop.example","http://127.0.0.2:8080"]}`)
	if status != http.StatusOK {
		t.Fatalf("patch: %d %s", status, raw)
	}
	if v := e.partnerView(cp.Partner.ID); v.MonthlyQuota != 20 || len(v.Origins) != 2 {
		t.Errorf("after patch %+v", v)
	}
	status, raw = e.partnerAdmin("PATCH", "/v1/admin/partners/"+cp.Partner.ID, `{"origins":["nope"]}`)
	if status != http.StatusBadRequest || errorCode(t, raw) != "invalid_partner" {
		t.Errorf("bad patch: %d %s", status, raw)
	}
	if v := e.partnerView(cp.Partner.ID); len(v.Origins) != 2 {
		t.Errorf("a refused patch changed the origins: %v", v.Origins)
	}
	status, _ = e.partnerAdmin("POST", "/v1/admin/partners/"+cp.Partner.ID+"/disable", "")
	if v := e.partnerView(cp.Partner.ID); status != http.StatusOK || !v.Disabled {
		t.Errorf("disable: %d, disabled=%v", status, v.Disabled)
	}
	if status, _ := e.partnerAdmin("GET", "/v1/admin/partners/ptr_nope", ""); status != http.StatusNotFound {
		t.Errorf("missing partner: %d", status)
	}

	// The admin token is required.
	resp, _ := e.get(e.url + "/v1/admin/partners")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d", resp.StatusCode)
	}
}

func TestPublishableKeyOrigins(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	cp := e.addPartner(`{"name":"Shop","origins":["` + shopOrigin + `"],"monthly_quota":10,"rate_limit":60}`)
	pk := cp.Partner.PublishableKey
	gen := `{"prompt":"a synthwave sunset","size":"256x256"}`

	resp, raw := e.postJSON(gen, "Imagegate-Key", pk, "Origin", shopOrigin, "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("from the partner's origin: %d %s", resp.StatusCode, raw)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != shopOrigin {
		t.Errorf("Access-Control-Allow-Origin %q, want %q", got, shopOrigin)
	}
	if resp.Header.Get("Access-Control-Allow-Credentials") != "" || len(resp.Cookies()) != 0 {
		t.Errorf("a partner request got credentials or cookies: %v", resp.Header)
	}

	for _, tc := range []struct {
		name    string
		headers []string
		code    string
	}{
		{"other origin", []string{"Imagegate-Key", pk, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, "origin_not_allowed"},
		{"other port", []string{"Imagegate-Key", pk, "Origin", shopOrigin + ":8443"}, "origin_not_allowed"},
		{"no origin", []string{"Imagegate-Key", pk}, "origin_not_allowed"},
		{"own origin without embed token", []string{"Imagegate-Key", pk, "Origin", e.url}, "origin_not_allowed"},
		{"unknown key", []string{"Imagegate-Key", "pk_unknown", "Origin", shopOrigin}, "invalid_partner_key"},
		{"secret key as publishable", []string{"Imagegate-Key", cp.SecretKey, "Origin", shopOrigin}, "invalid_partner_key"},
	} {
		resp, raw := e.postJSON(gen, tc.headers...)
		if resp.StatusCode != http.StatusForbidden || errorCode(t, raw) != tc.code {
			t.Errorf("%s: %d %s, want 403 %s", tc.name, resp.StatusCode, raw, tc.code)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: refused request carries CORS headers", tc.name)
		}
	}

	// Only the one accepted image is counted to the partner today.
	v := e.partnerView(cp.Partner.ID)
	today := time.Now().UTC().Format(time.DateOnly)
	if diff := cmp.Diff([]store.PartnerUsage{{Day: today, Images: 1}}, v.Usage); diff != "" || v.MonthImages != 1 {
		t.Errorf("usage (-want +got):\n%s month=%d", diff, v.MonthImages)
	}

	// A disabled partner's key stops working at once.
	e.partnerAdmin("POST", "/v1/admin/partners/"+cp.Partner.ID+"/disable", "")
	resp, raw = e.postJSON(gen, "Imagegate-Key", pk, "Origin", shopOrigin)
	if resp.StatusCode != http.StatusForbidden || errorCode(t, raw) != "partner_disabled" {
		t.Errorf("disabled: %d %s", resp.StatusCode, raw)
	}
}

func TestPartnerPreflight(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	req, _ := http.NewRequest("OPTIONS", e.url+"/v1/images/generations", nil)
	req.Header.Set("Origin", shopOrigin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type,imagegate-key")
	resp, _ := e.do(req)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != shopOrigin ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Imagegate-Key") || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestSecretKeyServerSide(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	cp := e.addPartner(`{"name":"Shop","origins":["` + shopOrigin + `"],"monthly_quota":10,"rate_limit":60}`)
	resp, raw := e.postJSON(`{"prompt":"pixel skyline","size":"256x256","n":2}`, "Authorization", "Bearer "+cp.SecretKey)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("secret key: %d %s", resp.StatusCode, raw)
	}
	if v := e.partnerView(cp.Partner.ID); v.MonthImages != 2 {
		t.Errorf("month images %d, want 2", v.MonthImages)
	}
	resp, raw = e.postJSON(`{"prompt":"pixel skyline","size":"256x256"}`, "Authorization", "Bearer psk_wrong")
	if resp.StatusCode != http.StatusForbidden || errorCode(t, raw) != "invalid_partner_key" {
		t.Errorf("wrong secret: %d %s", resp.StatusCode, raw)
	}
}

func TestPartnerQuotaAndRate(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	cp := e.addPartner(`{"name":"Shop","origins":["` + shopOrigin + `"],"monthly_quota":3,"rate_limit":60}`)
	auth := []string{"Authorization", "Bearer " + cp.SecretKey}
	if resp, raw := e.postJSON(`{"prompt":"grid","size":"256x256","n":2}`, auth...); resp.StatusCode != http.StatusOK {
		t.Fatalf("within quota: %d %s", resp.StatusCode, raw)
	}
	resp, raw := e.postJSON(`{"prompt":"grid","size":"256x256","n":2}`, auth...)
	if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, raw) != "partner_quota_exceeded" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("over quota: %d %s %v", resp.StatusCode, raw, resp.Header)
	}
	// A request refused after its image was counted (a size above the
	// partner's plan) gives it back.
	if resp, raw := e.postJSON(`{"prompt":"grid","size":"1024x1024"}`, auth...); resp.StatusCode != http.StatusForbidden || errorCode(t, raw) != "plan_limit" {
		t.Errorf("size above the plan: %d %s", resp.StatusCode, raw)
	}
	if v := e.partnerView(cp.Partner.ID); v.MonthImages != 2 {
		t.Errorf("month images %d, want 2", v.MonthImages)
	}

	slow := e.addPartner(`{"name":"Slow","origins":["` + shopOrigin + `"],"monthly_quota":100,"rate_limit":1}`)
	auth = []string{"Authorization", "Bearer " + slow.SecretKey}
	if resp, raw := e.postJSON(`{"prompt":"grid","size":"256x256"}`, auth...); resp.StatusCode != http.StatusOK {
		t.Fatalf("first: %d %s", resp.StatusCode, raw)
	}
	resp, raw = e.postJSON(`{"prompt":"grid","size":"256x256"}`, auth...)
	if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, raw) != "partner_rate_limited" {
		t.Errorf("second within the minute: %d %s", resp.StatusCode, raw)
	}
	if n, _ := strconv.Atoi(resp.Header.Get("Retry-After")); n < 1 || n > 60 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
}

var nonceAttr = regexp.MustCompile(`<script nonce="([^"]+)" src="/embed/frame.js">`)

func TestEmbedFrame(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	cp := e.addPartner(`{"name":"Shop","origins":["` + shopOrigin + `","http://127.0.0.2:9000"],"monthly_quota":10,"rate_limit":60}`)
	pk := cp.Partner.PublishableKey
	frameURL := e.url + "/embed/frame?key=" + pk + "&origin=" + shopOrigin

	resp, body := e.get(frameURL, "Sec-Fetch-Dest", "iframe")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("frame: %d %s", resp.StatusCode, body)
	}
	m := nonceAttr.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no nonce'd script in %s", body)
	}
	nonce := string(m[1])
	want := "default-src 'none'; script-src 'nonce-" + nonce + "'; style-src 'nonce-" + nonce + "'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors https://shop.example http://127.0.0.2:9000"
	if got := resp.Header.Get("Content-Security-Policy"); got != want {
		t.Errorf("CSP\n got %q\nwant %q", got, want)
	}
	if resp.Header.Get("X-Frame-Options") != "" || len(resp.Header.Values("Set-Cookie")) != 0 {
		t.Errorf("frame headers: %v", resp.Header)
	}
	if strings.Contains(string(body), " on") && regexp.MustCompile(`\son[a-z]+=`).Match(body) {
		t.Error("the frame has inline event handlers")
	}
	resp2, body2 := e.get(frameURL, "Sec-Fetch-Dest", "iframe")
	if m2 := nonceAttr.FindSubmatch(body2); resp2.StatusCode != 200 || m2 == nil || string(m2[1]) == nonce {
		t.Error("the nonce is not fresh per response")
	}

	for name, tc := range map[string]struct {
		url, dest, code string
	}{
		"origin not listed": {e.url + "/embed/frame?key=" + pk + "&origin=https://evil.example", "iframe", "origin_not_allowed"},
		"unknown key":       {e.url + "/embed/frame?key=pk_nope&origin=" + shopOrigin, "iframe", "invalid_partner_key"},
		"opened as a tab":   {frameURL, "document", "embed_frame_only"},
	} {
		resp, raw := e.get(tc.url, "Sec-Fetch-Dest", tc.dest)
		if resp.StatusCode != http.StatusForbidden || errorCode(t, raw) != tc.code {
			t.Errorf("%s: %d %s, want 403 %s", name, resp.StatusCode, raw, tc.code)
		}
	}

	// The frame's own requests: this site's origin plus the embed token.
	token := regexp.MustCompile(`data-token="([^"]+)"`).FindSubmatch(body)
	if token == nil {
		t.Fatal("no embed token in the frame")
	}
	gen := `{"prompt":"vaporwave","size":"256x256"}`
	resp, raw := e.postJSON(gen, "Imagegate-Key", pk, "Imagegate-Embed", string(token[1]), "Origin", e.url, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("frame generation: %d %s", resp.StatusCode, raw)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("a same-origin frame request got CORS headers")
	}
	resp, raw = e.postJSON(gen, "Imagegate-Key", pk, "Imagegate-Embed", string(token[1])+"x", "Origin", e.url)
	if resp.StatusCode != http.StatusForbidden || errorCode(t, raw) != "invalid_embed_token" {
		t.Errorf("forged token: %d %s", resp.StatusCode, raw)
	}
}

func TestEmbedScriptCacheable(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	resp, body := e.get(e.url + "/embed.js")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "/embed/frame?") {
		t.Fatalf("embed.js: %d", resp.StatusCode)
	}
	if resp.Header.Get("Cache-Control") != "public, max-age=3600" || resp.Header.Get("Cross-Origin-Resource-Policy") != "cross-origin" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("headers %v", resp.Header)
	}
	etag := resp.Header.Get("ETag")
	resp, _ = e.get(e.url+"/embed.js", "If-None-Match", etag)
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d (etag %q)", resp.StatusCode, etag)
	}
	if len(body) > 4096 {
		t.Errorf("embed.js is %d bytes; it should stay small", len(body))
	}
}

// TestPartnerWebhook checks that a generation made for a partner reaches
// the partner's server as a Standard Webhooks callback the receiver can
// verify, and that the request did not wait for it.
func TestPartnerWebhook(t *testing.T) {
	t.Parallel()
	type hook struct {
		id, ts, sig string
		body        []byte
	}
	got := make(chan hook, 4)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- hook{r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), body}
		<-release // the receiver is slow: the generation must not wait for it
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	e := partnerEnv(t)
	cp := e.addPartner(`{"name":"Shop","origins":["` + shopOrigin + `"],"monthly_quota":10,"rate_limit":60,"webhook_url":"` + srv.URL + `/hook"}`)
	secret := cp.Partner.WebhookSecret
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("webhook secret %q", secret)
	}
	resp, raw := e.postJSON(`{"prompt":"a secret prompt","size":"256x256"}`, "Authorization", "Bearer "+cp.SecretKey)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("generation: %d %s", resp.StatusCode, raw)
	}
	var out imagesResponse
	json.Unmarshal(raw, &out)
	h := <-got
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.id + "." + h.ts + "."))
	mac.Write(h.body)
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); h.sig != want {
		t.Errorf("signature %q, want %q", h.sig, want)
	}
	if ts, _ := strconv.ParseInt(h.ts, 10, 64); time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("timestamp %q", h.ts)
	}
	var ev struct {
		Type string
		Data struct {
			Partner string
			Images  []struct {
				URL  string
				Seed uint32
			}
		}
	}
	if err := json.Unmarshal(h.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "image.generated" || ev.Data.Partner != cp.Partner.ID || len(ev.Data.Images) != 1 ||
		ev.Data.Images[0].URL != out.Data[0].URL || ev.Data.Images[0].Seed != out.Data[0].Seed {
		t.Errorf("callback %s for response %s", h.body, raw)
	}
	if strings.Contains(string(h.body), "secret prompt") {
		t.Error("the callback carries the prompt")
	}
	// The slow receiver has not answered: the callback is still in flight.
	if n := walkMetric(t, e.gwReg, "imagegate_partner_webhooks_total"); n != 0 {
		t.Errorf("webhooks counted %v before the receiver answered", n)
	}
	release <- struct{}{}
	for walkMetric(t, e.gwReg, "imagegate_partner_webhooks_total") != 1 {
		select {
		case <-t.Context().Done():
			t.Fatal("the delivery was never counted")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// partnerWalkRecipes are the partner routes' requests for the cookie walk
// (routes_walk_test.go).
func partnerWalkRecipes() map[string]walkRecipe {
	const ok = http.StatusOK
	partnerFor := func(t *testing.T, v *walkVisitor) store.Partner {
		p, _, err := v.f.e.db.CreatePartner(store.NewPartner{Name: "Walk", Origins: []string{shopOrigin}, MonthlyQuota: 10, RateLimit: 60, Plan: "free"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	admin := func(method, path func(t *testing.T, v *walkVisitor) string, body string, status int) walkRecipe {
		return walkRecipe{fresh: status, signedIn: status, run: func(t *testing.T, v *walkVisitor) *http.Response {
			resp, _ := v.do(method(t, v), v.f.e.url+path(t, v), body, "Authorization", "Bearer "+walkAdminToken, "Content-Type", "application/json")
			return resp
		}}
	}
	is := func(s string) func(*testing.T, *walkVisitor) string {
		return func(*testing.T, *walkVisitor) string { return s }
	}
	one := func(suffix string) func(*testing.T, *walkVisitor) string {
		return func(t *testing.T, v *walkVisitor) string { return "/v1/admin/partners/" + partnerFor(t, v).ID + suffix }
	}
	return map[string]walkRecipe{
		"GET /embed.js":       walkSimple("GET", "/embed.js", "", ok, ok),
		"GET /embed/frame.js": walkSimple("GET", "/embed/frame.js", "", ok, ok),
		"GET /embed/frame": {fresh: ok, signedIn: ok, run: func(t *testing.T, v *walkVisitor) *http.Response {
			resp, _ := v.req("GET", "/embed/frame?key="+partnerFor(t, v).PublishableKey+"&origin="+shopOrigin, "", "Sec-Fetch-Dest", "iframe")
			return resp
		}},
		"GET /v1/admin/partners":              admin(is("GET"), is("/v1/admin/partners"), "", ok),
		"POST /v1/admin/partners":             admin(is("POST"), is("/v1/admin/partners"), `{"name":"Walk","origins":["https://walk.example"],"monthly_quota":5,"rate_limit":5}`, http.StatusCreated),
		"GET /v1/admin/partners/:id":          admin(is("GET"), one(""), "", ok),
		"PATCH /v1/admin/partners/:id":        admin(is("PATCH"), one(""), `{"monthly_quota":7}`, ok),
		"POST /v1/admin/partners/:id/disable": admin(is("POST"), one("/disable"), "", ok),
	}
}
