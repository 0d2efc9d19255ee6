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
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

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
	if want := visitCookie(start, start); ck.Value != want || !regexp.MustCompile(`^\d+\.\d+$`).MatchString(ck.Value) {
		t.Errorf("analytics cookie %q, want %q (two Unix times, no identifier)", ck.Value, want)
	}
	if ck.MaxAge != int(visitIdle/time.Second) || !ck.HttpOnly || !ck.Secure {
		t.Errorf("analytics cookie attributes: Max-Age=%d HttpOnly=%v Secure=%v", ck.MaxAge, ck.HttpOnly, ck.Secure)
	}

	// Two minutes later, the same visit: its length grows.
	clock.Advance(2 * time.Minute)
	resp = view(b, "/generate?prompt="+promptMark+"&email="+emailMarker)
	if ck := analyticsCookieLine(t, resp); ck == nil || ck.Value != visitCookie(start, clock.Now()) {
		t.Errorf("continued visit cookie %v, want %q", ck, visitCookie(start, clock.Now()))
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

func TestParseDayRange(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 15, 4, 5, 0, time.UTC)
	day := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }
	for _, tc := range []struct {
		from, to         string
		wantFrom, wantTo string
		ok               bool
	}{
		{"", "", "2026-11-02", "2026-12-01", true},
		{"2026-11-30", "", "2026-11-30", "2026-12-01", true},
		{"", "2026-06-30", "2026-06-01", "2026-06-30", true},
		{"2025-12-01", "2026-12-01", "2025-12-01", "2026-12-01", true},
		{"2025-11-30", "2026-12-01", "", "", false},
		{"2026-12-02", "2026-12-01", "", "", false},
		{"2026-2-01", "", "", "", false},
		{"2026-12-01T00:00:00Z", "", "", "", false},
	} {
		from, to, err := parseDayRange(tc.from, tc.to, now)
		if (err == nil) != tc.ok {
			t.Errorf("parseDayRange(%q, %q): err %v, want ok=%v", tc.from, tc.to, err, tc.ok)
			continue
		}
		if tc.ok && (!from.Equal(day(tc.wantFrom)) || !to.Equal(day(tc.wantTo))) {
			t.Errorf("parseDayRange(%q, %q) = %s..%s, want %s..%s", tc.from, tc.to, from, to, tc.wantFrom, tc.wantTo)
		}
	}
}

var normalizePathCases = []struct{ in, want string }{
	{"/", "/"},
	{"", "other"},
	{"pricing", "other"},
	{"/pricing", "/pricing"},
	{"/pricing/", "/pricing"},
	{"/PRICING", "/pricing"},
	{"/pricing?utm_source=newsletter&email=a@b.c", "/pricing"},
	{"/pricing#plans", "/pricing"},
	{"/images/abc123", "/images/*"},
	{"/images/abc123/", "/images/*"},
	{"/images", "other"},
	{"/images/", "other"},
	{"/images/..", "other"},
	{"/images/a/b", "other"},
	{"/docs", "/docs"},
	{"/docs/getting-started", "/docs/*"},
	{"/account/settings", "/account/*"},
	{"//pricing", "other"},
	{"/pricing//", "other"},
	{"/a%20b", "other"},
	{"/search/my secret prompt", "other"},
	{"/gallery/ünïcode", "other"},
	{"/users/ada@example.com", "other"},
	{"https://example.com/pricing", "other"},
	{"/" + strings.Repeat("a", 300), "other"},
	{"/pricing\x00", "other"},
}

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	for _, tc := range normalizePathCases {
		if got := normalizePath(tc.in); got != tc.want {
			t.Errorf("normalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Every allow-listed page is reachable as itself.
	for _, p := range analyticsPaths {
		in := strings.ReplaceAll(p, "*", "x1")
		if got := normalizePath(in); got != p {
			t.Errorf("normalizePath(%q) = %q, want the allow-list entry %q", in, got, p)
		}
	}
}

// storedPath is the shape store.RecordPageView accepts for a path.
var storedPath = regexp.MustCompile(`^(other|/[a-z0-9/*._-]{0,63})$`)

// FuzzNormalizePath checks that whatever a browser (or anyone) sends, the
// counted path is an allow-list entry or "other": never free text.
func FuzzNormalizePath(f *testing.F) {
	for _, tc := range normalizePathCases {
		f.Add(tc.in)
	}
	allowed := map[string]bool{store.AnalyticsOtherPath: true}
	for _, p := range analyticsPaths {
		allowed[p] = true
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := normalizePath(in)
		if !allowed[got] || !storedPath.MatchString(got) {
			t.Fatalf("normalizePath(%q) = %q: not an allow-list entry", in, got)
		}
		if got != store.AnalyticsOtherPath && normalizePath(got) != got && !strings.Contains(got, "*") {
			t.Fatalf("normalizePath is not idempotent on %q", got)
		}
	})
}

var deviceClassCases = []struct{ ua, chMobile, want string }{
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36", "?0", store.DeviceDesktop},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15", "", store.DeviceDesktop},
	{"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "", store.DeviceDesktop},
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "", store.DeviceMobile},
	{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36", "?1", store.DeviceMobile},
	{"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", "?1", store.DeviceMobile},
	{"Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", "?0", store.DeviceTablet},
	{"Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "", store.DeviceTablet},
	{"Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1) Mobile", "", store.DeviceMobile},
	{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "", store.DeviceBot},
	{"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Mobile Safari/537.36 (compatible; Googlebot/2.1)", "?1", store.DeviceBot},
	{"Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/131.0 Safari/537.36", "", store.DeviceBot},
	{"curl/8.5.0", "", store.DeviceBot},
	{"Go-http-client/1.1", "", store.DeviceBot},
	{"", "", store.DeviceBot},
	{"   ", "?1", store.DeviceBot},
}

func TestDeviceClass(t *testing.T) {
	t.Parallel()
	for _, tc := range deviceClassCases {
		if got := deviceClass(tc.ua, tc.chMobile); got != tc.want {
			t.Errorf("deviceClass(%q, %q) = %q, want %q", tc.ua, tc.chMobile, got, tc.want)
		}
	}
}

var parseCountryCases = []struct{ in, want string }{
	{"IS", "IS"}, {"de", "DE"}, {"Fr", "FR"}, {"XX", "unknown"}, {"T1", "unknown"}, {"", "unknown"},
	{"USA", "unknown"}, {"1A", "unknown"}, {"é", "unknown"}, {"203.0.113.9", "unknown"},
}

func TestParseCountry(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCountryCases {
		if got := parseCountry(tc.in); got != tc.want {
			t.Errorf("parseCountry(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzDeviceAndCountry checks that the User-Agent and the country header
// only ever become one of the fixed classes or a two-letter code.
func FuzzDeviceAndCountry(f *testing.F) {
	for _, tc := range deviceClassCases {
		f.Add(tc.ua, tc.chMobile)
	}
	for _, tc := range parseCountryCases {
		f.Add(tc.in, "")
	}
	country := regexp.MustCompile(`^([A-Z]{2}|unknown)$`)
	f.Fuzz(func(t *testing.T, ua, hint string) {
		switch d := deviceClass(ua, hint); d {
		case store.DeviceDesktop, store.DeviceMobile, store.DeviceTablet, store.DeviceBot:
		default:
			t.Fatalf("deviceClass(%q) = %q", ua, d)
		}
		if c := parseCountry(ua); !country.MatchString(c) || c == "XX" {
			t.Fatalf("parseCountry(%q) = %q", ua, c)
		}
	})
}

var visitCookieCases = []struct {
	name, value string
	ok          bool
	start, last int64 // offsets from now in seconds, when ok
}{
	{"fresh", "", false, 0, 0},
	{"continuing", "1764583200.1764583800", true, -900, -300},
	{"just now", "1764583800.1764584100", true, -300, 0},
	{"skew clamps to now", "1764584100.1764584130", true, 0, 0},
	{"too far ahead", "1764584100.1764584200", false, 0, 0},
	{"idle too long", "1764580000.1764582300", false, 0, 0},
	{"longer than a day", "1764490000.1764584000", false, 0, 0},
	{"reversed", "1764584000.1764583000", false, 0, 0},
	{"negative", "-1.1764584000", false, 0, 0},
	{"extra part", "1764583200.1764583800.1", false, 0, 0},
	{"spaces", " 1764583200.1764583800", false, 0, 0},
	{"too many digits", "0000000000001764583200.1764583800", false, 0, 0},
	{"letters", "abc.def", false, 0, 0},
	{"identifier smuggled", "1764583200.1764583800-vabcdef", false, 0, 0},
}

func TestParseVisitCookie(t *testing.T) {
	t.Parallel()
	now := time.Unix(1764584100, 0)
	for _, tc := range visitCookieCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start, last, ok := parseVisitCookie(tc.value, now)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (start.Unix()-now.Unix() != tc.start || last.Unix()-now.Unix() != tc.last) {
				t.Errorf("start %+d s, last %+d s; want %+d, %+d", start.Unix()-now.Unix(), last.Unix()-now.Unix(), tc.start, tc.last)
			}
		})
	}
}

// FuzzVisitCookie checks that any cookie value either starts a new visit
// or yields an ordered visit no longer than visitMax, last seen within
// visitIdle, never in the future — so the store is never handed times it
// would misattribute.
func FuzzVisitCookie(f *testing.F) {
	for _, tc := range visitCookieCases {
		f.Add(tc.value)
	}
	now := time.Unix(1764584100, 0)
	f.Fuzz(func(t *testing.T, v string) {
		start, last, ok := parseVisitCookie(v, now)
		if !ok {
			return
		}
		if start.After(last) || last.After(now) || now.Sub(last) >= visitIdle || last.Sub(start) > visitMax {
			t.Fatalf("parseVisitCookie(%q) = %v, %v: out of bounds", v, start, last)
		}
		if !utf8.ValidString(v) || strings.Count(v, ".") != 1 {
			t.Fatalf("accepted a malformed cookie %q", v)
		}
		s2, l2, ok2 := parseVisitCookie(visitCookie(start, last), now)
		if !ok2 || !s2.Equal(start) || !l2.Equal(last) {
			t.Fatalf("the cookie written for %q does not read back: %v %v %v", v, s2, l2, ok2)
		}
	})
}

// TestVisitIdleIsTheCookieLifetime keeps the visit timeout and the
// analytics cookie's declared lifetime the same number.
func TestVisitIdleIsTheCookieLifetime(t *testing.T) {
	t.Parallel()
	spec, ok := cookieSpecFor(cookieAnalytics)
	if !ok || spec.maxAge != visitIdle || spec.Category != categoryAnalytics {
		t.Errorf("analytics cookie %+v; want category analytics, lifetime %v", spec, visitIdle)
	}
}

func BenchmarkPageViewDimensions(b *testing.B) {
	ua := deviceClassCases[4].ua
	b.ReportAllocs()
	for b.Loop() {
		normalizePath("/images/abc123?ref=home")
		deviceClass(ua, "")
		parseCountry("de")
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
