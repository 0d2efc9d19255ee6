package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/analytics"
	"github.com/imagegate/imagegate/gateway/consent"
	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

const analyticsAdminToken = "analytics-admin-token-0123456789"

// analyticsReportOf fetches the operator's report for one day.
func analyticsReportOf(t *testing.T, e *env, day time.Time) analyticsReport {
	t.Helper()
	d := day.UTC().Format(time.DateOnly)
	resp, body := e.get(e.url+"/v1/admin/analytics?from="+d+"&to="+d, "Authorization", "Bearer "+analyticsAdminToken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/admin/analytics: %d %s", resp.StatusCode, body)
	}
	var rep analyticsReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// analyticsCookieLine returns the analytics Set-Cookie of a response.
func analyticsCookieLine(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range consentSetCookies(t, resp) {
		if c.Name == cookieAnalytics {
			return c
		}
	}
	return nil
}

// TestAnalyticsCountOnlyWithConsent walks one visitor, then a signed-in
// account, through promise K4 and K1/K2: nothing is counted and no cookie
// set before consent; with consent a view is counted by path, device and
// country and the cookie holds only two times; GPC and the account's
// opt-out each stop the counting; and neither the visitor's IP address,
// user agent nor anything typed into the path ever reaches the store's
// files, the report or the logs.
func TestAnalyticsCountOnlyWithConsent(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	e := newEnv(t, envOptions{now: clock.Now, cfg: Config{
		AdminToken: analyticsAdminToken,
		// The test's requests come from 127.0.0.1, as from a proxy in
		// front of the gateway: its headers are believed.
		ClientIP: ClientIPConfig{TrustedProxies: []string{"127.0.0.1"}, Header: HeaderXForwardedFor},
	}})
	const (
		ipMarker    = "203.0.113.77"
		uaMarker    = "MarkerUA-5517"
		pathMarker  = "path-marker-3390"
		promptMark  = "prompt-marker-8841"
		emailMarker = "counted-marker@example.com"
	)
	ua := "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 " + uaMarker + " Mobile/15E148"
	view := func(b *consentBrowser, path string, extra ...string) *http.Response {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"path": path})
		headers := append([]string{"Sec-Fetch-Site", "same-origin", "User-Agent", ua, "X-Forwarded-For", ipMarker, "CF-IPCountry", "is"}, extra...)
		resp, raw := b.do("POST", e.url+"/v1/analytics/pageview", string(body), headers...)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("pageview %s: %d %s", path, resp.StatusCode, raw)
		}
		return resp
	}
	total := func() store.AnalyticsDay {
		t.Helper()
		return analyticsReportOf(t, e, clock.Now()).Total
	}
	emptyDay := func() store.AnalyticsDay {
		var d store.AnalyticsDay
		d.Add(store.AnalyticsDay{})
		return d
	}

	b := newConsentBrowser(t)

	// No consent: nothing counted, no cookie.
	resp := view(b, "/pricing")
	if lines := resp.Header.Values("Set-Cookie"); len(lines) != 0 {
		t.Errorf("a view without consent set cookies %q", lines)
	}
	if diff := cmp.Diff(emptyDay(), total()); diff != "" {
		t.Errorf("counted without consent (-want +got):\n%s", diff)
	}

	// Consent: counted, and the cookie holds the visit's start and last
	// view, nothing else.
	consentPutChoice(t, b, e, `{"preferences":false,"analytics":true}`, "Sec-Fetch-Site", "same-origin")
	start := clock.Now()
	resp = view(b, "/Pricing/?ref="+pathMarker+"#top")
	ck := analyticsCookieLine(t, resp)
	if ck == nil || consentDeleted(ck) {
		t.Fatalf("a counted view set no analytics cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	if want := analytics.VisitCookie(start, start); ck.Value != want || !regexp.MustCompile(`^\d+\.\d+$`).MatchString(ck.Value) {
		t.Errorf("analytics cookie %q, want %q (two Unix times, no identifier)", ck.Value, want)
	}
	if ck.MaxAge != int(analytics.VisitIdle/time.Second) || !ck.HttpOnly || !ck.Secure {
		t.Errorf("analytics cookie attributes: Max-Age=%d HttpOnly=%v Secure=%v", ck.MaxAge, ck.HttpOnly, ck.Secure)
	}

	// Two minutes later, the same visit: its length grows.
	clock.Advance(2 * time.Minute)
	resp = view(b, "/generate?prompt="+promptMark+"&email="+emailMarker)
	if ck := analyticsCookieLine(t, resp); ck == nil || ck.Value != analytics.VisitCookie(start, clock.Now()) {
		t.Errorf("continued visit cookie %v, want %q", ck, analytics.VisitCookie(start, clock.Now()))
	}
	want := emptyDay()
	want.Add(store.AnalyticsDay{
		PageViews: map[string]int64{"/pricing": 1, "/generate": 1}, Visits: 1, VisitSeconds: 120,
		VisitLengths: map[string]int64{"0s": 0, "<3m": 1}, Devices: map[string]int64{store.DeviceMobile: 1},
		Countries: map[string]int64{"IS": 1},
	})
	if diff := cmp.Diff(want, total()); diff != "" {
		t.Errorf("after two views (-want +got):\n%s", diff)
	}

	// GPC vetoes analytics: nothing counted, the cookie is deleted.
	resp = view(b, "/pricing", "Sec-GPC", "1")
	if ck := analyticsCookieLine(t, resp); ck == nil || !consentDeleted(ck) {
		t.Errorf("a view under GPC did not delete the analytics cookie: %q", resp.Header.Values("Set-Cookie"))
	}
	if diff := cmp.Diff(want, total()); diff != "" {
		t.Errorf("counted under GPC (-want +got):\n%s", diff)
	}
	// So does Do Not Track, for browsers that send only that.
	view(b, "/pricing", "DNT", "1")
	if diff := cmp.Diff(want, total()); diff != "" {
		t.Errorf("counted under DNT (-want +got):\n%s", diff)
	}

	// A signed-in account is counted until it switches analytics off.
	b2 := newConsentBrowser(t)
	acct := consentAccount(t, e, "analytics-walk@example.com")
	consentSignIn(t, e, b2, acct)
	consentPutChoice(t, b2, e, `{"preferences":false,"analytics":true}`, "Sec-Fetch-Site", "same-origin")
	view(b2, "/")
	want.Add(store.AnalyticsDay{PageViews: map[string]int64{"/": 1}, Visits: 1, VisitLengths: map[string]int64{"0s": 1},
		Devices: map[string]int64{store.DeviceMobile: 1}, Countries: map[string]int64{"IS": 1}})
	if diff := cmp.Diff(want, total()); diff != "" {
		t.Errorf("signed-in view (-want +got):\n%s", diff)
	}
	if r, _ := b2.do("PUT", e.url+"/v1/account/settings", `{"analytics":false}`, "Sec-Fetch-Site", "same-origin"); r.StatusCode != http.StatusOK {
		t.Fatalf("PUT settings: %d", r.StatusCode)
	}
	resp = view(b2, "/")
	if ck := analyticsCookieLine(t, resp); ck != nil && !consentDeleted(ck) {
		t.Errorf("an opted-out account got an analytics cookie")
	}
	if diff := cmp.Diff(want, total()); diff != "" {
		t.Errorf("counted after the account opted out (-want +got):\n%s", diff)
	}

	// Nothing identifying reached the store's files or the logs; the
	// report holds only aggregate dimensions.
	_, repBody := e.get(e.url+"/v1/admin/analytics", "Authorization", "Bearer "+analyticsAdminToken)
	dbPath := filepath.Join(e.dir, "imagegate.db")
	files := map[string][]byte{"report": repBody, "logs": []byte(e.logs.String())}
	for _, p := range []string{dbPath, dbPath + ".keys", dbPath + ".daykeys"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = data
	}
	for name, data := range files {
		for _, marker := range []string{ipMarker, uaMarker, "iPhone", pathMarker, promptMark, emailMarker} {
			if bytes.Contains(data, []byte(marker)) {
				t.Errorf("%s contains %q", name, marker)
			}
		}
	}
}

// TestAnalyticsCountryNeedsTrustedProxy checks that a country header from
// a peer that is not a trusted proxy is ignored.
func TestAnalyticsCountryNeedsTrustedProxy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: analyticsAdminToken}})
	b := newConsentBrowser(t)
	consentPutChoice(t, b, e, `{"preferences":false,"analytics":true}`, "Sec-Fetch-Site", "same-origin")
	resp, body := b.do("POST", e.url+"/v1/analytics/pageview", `{"path":"/"}`, "Sec-Fetch-Site", "same-origin", "CF-IPCountry", "IS",
		"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("pageview: %d %s", resp.StatusCode, body)
	}
	got := analyticsReportOf(t, e, time.Now()).Total
	if diff := cmp.Diff(map[string]int64{store.AnalyticsUnknownCountry: 1}, got.Countries); diff != "" {
		t.Errorf("countries (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int64{store.DeviceDesktop: 1}, got.Devices); diff != "" {
		t.Errorf("devices (-want +got):\n%s", diff)
	}
}

// TestPageViewRequests checks the route's refusals, with consent given.
func TestPageViewRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: analyticsAdminToken}})
	b := newConsentBrowser(t)
	consentPutChoice(t, b, e, `{"preferences":false,"analytics":true}`, "Sec-Fetch-Site", "same-origin")
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"no path", `{}`, http.StatusBadRequest},
		{"not JSON", `path=/`, http.StatusBadRequest},
		{"unknown field", `{"path":"/","referrer":"https://example.com"}`, http.StatusBadRequest},
		{"too large", `{"path":"/` + strings.Repeat("a", maxPageViewBody) + `"}`, http.StatusRequestEntityTooLarge},
		{"counted as other", `{"path":"/` + strings.Repeat("a", 300) + `"}`, http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.do("POST", e.url+"/v1/analytics/pageview", tc.body, "Sec-Fetch-Site", "same-origin", "Content-Type", "application/json")
			if resp.StatusCode != tc.status {
				t.Errorf("%d %s, want %d", resp.StatusCode, body, tc.status)
			}
		})
	}
	if got := analyticsReportOf(t, e, time.Now()).Total.PageViews; !cmp.Equal(got, map[string]int64{store.AnalyticsOtherPath: 1}) {
		t.Errorf("page views %v, want only the one counted as other", got)
	}
	// A cross-site page cannot count views on the visitor's behalf.
	resp, _ := b.do("POST", e.url+"/v1/analytics/pageview", `{"path":"/"}`, "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site pageview: %d, want 403", resp.StatusCode)
	}
}

func TestAdminAnalyticsRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: analyticsAdminToken}})
	auth := []string{"Authorization", "Bearer " + analyticsAdminToken}
	for _, tc := range []struct {
		name, query string
		headers     []string
		status      int
	}{
		{"no token", "", nil, http.StatusUnauthorized},
		{"user-like token", "", []string{"Authorization", "Bearer sk_not_an_admin"}, http.StatusUnauthorized},
		{"default range", "", auth, http.StatusOK},
		{"one day", "?from=2026-12-01&to=2026-12-01", auth, http.StatusOK},
		{"bad date", "?from=yesterday", auth, http.StatusBadRequest},
		{"reversed", "?from=2026-12-02&to=2026-12-01", auth, http.StatusBadRequest},
		{"too long", "?from=2024-01-01&to=2026-12-01", auth, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, body := e.get(e.url+"/v1/admin/analytics"+tc.query, tc.headers...)
			if resp.StatusCode != tc.status {
				t.Errorf("%d %s, want %d", resp.StatusCode, body, tc.status)
			}
		})
	}
}

// TestVisitIdleIsTheCookieLifetime keeps the visit timeout and the
// analytics cookie's declared lifetime the same number.
func TestVisitIdleIsTheCookieLifetime(t *testing.T) {
	t.Parallel()
	spec, ok := consent.Lookup(cookieAnalytics)
	if !ok || spec.MaxAge() != analytics.VisitIdle || spec.Category != consent.Analytics {
		t.Errorf("analytics cookie %+v; want category analytics, lifetime %v", spec, analytics.VisitIdle)
	}
}

// analyticsWalkRecipes are the cookie walk's recipes for the routes
// analyticsRoutes registers (see walkRecipes in routes_walk_test.go).
func analyticsWalkRecipes() map[string]walkRecipe {
	const ok, unauth = http.StatusOK, http.StatusUnauthorized
	return map[string]walkRecipe{
		// Without consent the view is not counted and no cookie is set.
		"POST /v1/analytics/pageview": walkSimple("POST", "/v1/analytics/pageview", `{"path":"/pricing"}`, http.StatusNoContent, http.StatusNoContent),
		"GET /v1/admin/analytics": {fresh: ok, signedIn: ok, run: func(t *testing.T, v *walkVisitor) *http.Response {
			resp, _ := v.do("GET", v.f.e.url+"/v1/admin/analytics", "", "Authorization", "Bearer "+walkAdminToken)
			return resp
		}},
		"GET /privacy":              walkSimple("GET", "/privacy", "", ok, ok),
		"GET /v1/privacy":           walkSimple("GET", "/v1/privacy", "", ok, ok),
		"GET /v1/account/settings":  walkSimple("GET", "/v1/account/settings", "", unauth, ok),
		"PUT /v1/account/settings":  walkSimple("PUT", "/v1/account/settings", `{"analytics":false}`, unauth, ok),
		"GET /v1/account/profile":   walkSimple("GET", "/v1/account/profile", "", unauth, ok),
		"PATCH /v1/account/profile": walkSimple("PATCH", "/v1/account/profile", `{"display_name":"Walk"}`, unauth, ok),
		"POST /v1/account/email": {fresh: unauth, signedIn: http.StatusAccepted, run: func(t *testing.T, v *walkVisitor) *http.Response {
			resp, _ := v.req("POST", "/v1/account/email", fmt.Sprintf(`{"new_email":"moved%d@example.com","password":%q}`, v.f.unique(), consentPassword))
			return resp
		}},
		"DELETE /v1/account/email": walkSimple("DELETE", "/v1/account/email", "", unauth, ok),
	}
}
