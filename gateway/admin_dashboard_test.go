package gateway

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// dashLogin posts the sign-in form as the dashboard's own page would.
func (e *env) dashLogin(token string, headers ...string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/admin/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	client := *e.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func adminCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == cookieAdmin {
			return c
		}
	}
	return nil
}

var scriptNonce = regexp.MustCompile(`<script nonce="([^"]+)"`)

func TestDashboardSignIn(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: partnerAdminToken}, now: clock.Now})

	resp, body := e.get(e.url + "/admin")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `name="token"`) || len(resp.Cookies()) != 0 {
		t.Fatalf("signed out: %d cookies=%v\n%s", resp.StatusCode, resp.Cookies(), body)
	}
	m := scriptNonce.FindSubmatch(body)
	if m == nil || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'nonce-"+string(m[1])+"'") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("CSP %q does not match the page's nonce", resp.Header.Get("Content-Security-Policy"))
	}
	for _, ref := range regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllSubmatch(body, -1) {
		if strings.Contains(string(ref[1]), "//") {
			t.Errorf("the dashboard loads %s from elsewhere", ref[1])
		}
	}

	if resp := e.dashLogin("wrong-token"); resp.StatusCode != http.StatusUnauthorized || adminCookie(resp) != nil {
		t.Errorf("wrong token: %d %v", resp.StatusCode, resp.Cookies())
	}
	// Another site's form cannot sign the operator in (login CSRF).
	if resp := e.dashLogin(partnerAdminToken, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden || adminCookie(resp) != nil {
		t.Errorf("cross-site sign-in: %d", resp.StatusCode)
	}
	resp = e.dashLogin(partnerAdminToken)
	ck := adminCookie(resp)
	if resp.StatusCode != http.StatusSeeOther || ck == nil {
		t.Fatalf("sign-in: %d %v", resp.StatusCode, resp.Cookies())
	}
	if !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.MaxAge != 1800 || ck.Path != "/" {
		t.Errorf("session cookie attributes %+v", ck)
	}
	signedIn := func() bool {
		resp, body := e.get(e.url+"/admin", "Cookie", cookieAdmin+"="+ck.Value)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `id="h-traffic"`)
	}
	if !signedIn() {
		t.Fatal("the session does not open the dashboard")
	}
	if resp, body := e.get(e.url+"/admin", "Cookie", cookieAdmin+"="+ck.Value[:len(ck.Value)-2]+"xx"); strings.Contains(string(body), `id="h-traffic"`) {
		t.Errorf("a forged session opened the dashboard: %d", resp.StatusCode)
	}
	clock.Advance(31 * time.Minute)
	if signedIn() {
		t.Error("the session outlived its 30 minutes")
	}

	clock.Advance(-31 * time.Minute)
	req, _ := http.NewRequest("POST", e.url+"/admin/logout", nil)
	req.Header.Set("Cookie", cookieAdmin+"="+ck.Value)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	client := *e.client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	out, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	if c := adminCookie(out); out.StatusCode != http.StatusSeeOther || c == nil || c.Value != "" || !c.Expires.Before(time.Now()) {
		t.Errorf("sign-out: %d %v", out.StatusCode, out.Cookies())
	}
	if signedIn() {
		t.Error("the session still works after sign-out")
	}
}

func TestDashboardDisabledWithoutAdminToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	if resp, _ := e.get(e.url + "/admin"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("/admin without --admin-token: %d", resp.StatusCode)
	}
}

// TestDashboardFigures checks the pages show the counts the test caused.
func TestDashboardFigures(t *testing.T) {
	t.Parallel()
	e := partnerEnv(t)
	cp := e.addPartner(`{"name":"Figures Shop","origins":["` + shopOrigin + `"],"monthly_quota":40,"rate_limit":60}`)
	gen := `{"prompt":"dashboard figures","size":"256x256"}`
	for range 3 { // one miss, then two L1 hits
		if resp, raw := e.postJSON(gen, "Authorization", "Bearer "+cp.SecretKey); resp.StatusCode != http.StatusOK {
			t.Fatalf("generation: %d %s", resp.StatusCode, raw)
		}
	}
	if _, err := e.db.AddDSAR(store.NewDSAR{Email: "late@example.com", Kind: store.DSARAccess, Received: time.Now().AddDate(0, 0, -40)}); err != nil {
		t.Fatal(err)
	}
	ck := adminCookie(e.dashLogin(partnerAdminToken))
	if ck == nil {
		t.Fatal("no session")
	}
	_, body := e.get(e.url+"/admin", "Cookie", cookieAdmin+"="+ck.Value)
	page := string(body)
	for id, want := range map[string]string{
		"fig-generation-requests": "3", "fig-loads": "1", "fig-hit-ratio": "66.7 %", "fig-dsars": "1", "fig-erasures": "0",
	} {
		if got := figure(page, id); got != want {
			t.Errorf("%s = %q, want %q", id, got, want)
		}
	}
	for _, bar := range []string{`L1 memory</text><rect class="bar" x="190" y="4" width="190.0" height="22" data-value="2">`, `Figures Shop</text><rect class="bar"`} {
		if !strings.Contains(page, bar) {
			t.Errorf("no chart bar %s in\n%s", bar, page)
		}
	}
	_, body = e.get(e.url+"/admin/partners", "Cookie", cookieAdmin+"="+ck.Value)
	page = html.UnescapeString(string(body))
	if !strings.Contains(page, `data-key="`+cp.Partner.PublishableKey+`"`) || !strings.Contains(page, `<span class="partner-month">3</span> of 40 images`) {
		t.Errorf("partners page lacks the snippet or usage:\n%s", page)
	}
}

func figure(page, id string) string {
	m := regexp.MustCompile(`id="` + id + `"[^>]*>([^<]*)<`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return m[1]
}

// dashboardWalkRecipes are the dashboard's requests for the cookie walk
// (routes_walk_test.go); signing in sets the necessary admin cookie.
func dashboardWalkRecipes() map[string]walkRecipe {
	const ok = http.StatusOK
	form := func(path, body string, status int) walkRecipe {
		return walkRecipe{fresh: status, signedIn: status, run: func(t *testing.T, v *walkVisitor) *http.Response {
			resp, _ := v.req("POST", path, body, "Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "same-origin")
			return resp
		}}
	}
	return map[string]walkRecipe{
		"GET /admin":              walkSimple("GET", "/admin", "", ok, ok),
		"GET /admin/partners":     walkSimple("GET", "/admin/partners", "", ok, ok),
		"GET /admin/assets/:name": walkSimple("GET", "/admin/assets/dashboard.css", "", ok, ok),
		"POST /admin/login":       form("/admin/login", "token="+url.QueryEscape(walkAdminToken), http.StatusSeeOther),
		"POST /admin/logout":      form("/admin/logout", "", http.StatusSeeOther),
	}
}

// FuzzAdminSession feeds arbitrary cookie values to the session check:
// only a token carrying the gateway's MAC over exactly its expiry and id
// may pass, and only before it expires.
func FuzzAdminSession(f *testing.F) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	s := newAdminSessions("fuzz-admin-token-0001", func() time.Time { return now })
	good := s.issue()
	for _, seed := range []string{good, "", ".", "..", "1.a.b", good + "x", strings.Replace(good, "1", "2", 1), "99999999999.x." + good[strings.LastIndex(good, ".")+1:]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if !s.valid(tok) {
			return
		}
		parts := strings.Split(tok, ".")
		if len(parts) != 3 || parts[2] != s.mac(parts[0]+"."+parts[1]) {
			t.Fatalf("accepted a session the gateway did not issue: %q", tok)
		}
		if exp, err := strconv.ParseInt(parts[0], 10, 64); err != nil || !now.Before(time.Unix(exp, 0)) {
			t.Fatalf("accepted an expired or malformed expiry: %q", tok)
		}
	})
}
