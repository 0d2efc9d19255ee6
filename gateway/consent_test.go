package gateway

import (
	"context"
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/imagegate/imagegate/gateway/consent"
	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// consentBrowser acts like a browser as far as cookies go: a jar (which,
// like browsers, treats 127.0.0.1 as a secure origin, so __Host- cookies
// round-trip), redirects not followed, and a record of every Set-Cookie
// line received.
type consentBrowser struct {
	t      *testing.T
	jar    *cookiejar.Jar
	client *http.Client

	mu       sync.Mutex
	received []consentReceived
}

// consentReceived is the Set-Cookie lines of one response.
type consentReceived struct {
	request string // "METHOD path"
	status  int
	lines   []string
}

func newConsentBrowser(t *testing.T) *consentBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &consentBrowser{t: t, jar: jar, client: &http.Client{
		Jar: jar, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// do sends a request; a body starting with "{" is sent as JSON. headers are
// name, value pairs.
func (b *consentBrowser) do(method, u, body string, headers ...string) (*http.Response, []byte) {
	b.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.received = append(b.received, consentReceived{request: method + " " + req.URL.Path, status: resp.StatusCode, lines: resp.Header.Values("Set-Cookie")})
	b.mu.Unlock()
	return resp, data
}

// consentJarURL names the gateway's host to the jar, which ignores ports.
var consentJarURL = &url.URL{Scheme: "http", Host: "127.0.0.1", Path: "/"}

// cookie returns the value the browser holds for name, or "".
func (b *consentBrowser) cookie(name string) string {
	for _, c := range b.jar.Cookies(consentJarURL) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// setCookie replaces a cookie in the jar, as a user (or an attacker with
// the browser in hand) could.
func (b *consentBrowser) setCookie(name, value string) {
	b.jar.SetCookies(consentJarURL, []*http.Cookie{{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true}})
}

// consentSetCookies parses a response's Set-Cookie lines.
func consentSetCookies(t *testing.T, resp *http.Response) []*http.Cookie {
	t.Helper()
	var out []*http.Cookie
	for _, line := range resp.Header.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(line)
		if err != nil {
			t.Fatalf("Set-Cookie %q: %v", line, err)
		}
		out = append(out, c)
	}
	return out
}

// consentDeleted reports whether a Set-Cookie tells the browser to delete.
func consentDeleted(c *http.Cookie) bool {
	return c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now()))
}

// consentCookieNames lists a response's Set-Cookie names, sorted, with
// deletions marked "name (deleted)".
func consentCookieNames(t *testing.T, resp *http.Response) []string {
	t.Helper()
	var names []string
	for _, c := range consentSetCookies(t, resp) {
		if consentDeleted(c) {
			names = append(names, c.Name+" (deleted)")
		} else {
			names = append(names, c.Name)
		}
	}
	slices.Sort(names)
	return names
}

// consentUnordered compares cookie-name lists as sets.
var consentUnordered = cmpopts.SortSlices(func(a, b string) bool { return a < b })

const consentPassword = "correct horse battery staple"

// consentPasswordHash is consentPassword hashed once by the gateway's own
// hasher (argon2id at the production parameters).
var consentPasswordHash = sync.OnceValues(func() (string, error) {
	return newPasswordHasher(nil, 1, time.Minute).hash(context.Background(), consentPassword)
})

// consentAccount creates an active account with consentPassword.
func consentAccount(t *testing.T, e *env, email string) store.Account {
	t.Helper()
	hash, err := consentPasswordHash()
	if err != nil {
		t.Fatal(err)
	}
	acct, err := e.db.CreateAccount(store.NewAccount{Email: email, PasswordHash: hash, Plan: "free", AgeAttested: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return acct
}

// consentSignIn gives the browser a live session of acct, as a sign-in
// would, and returns its token.
func consentSignIn(t *testing.T, e *env, b *consentBrowser, acct store.Account) string {
	t.Helper()
	token, _, err := e.db.CreateSession(acct.ID, store.SessionPolicy{Idle: time.Hour, Absolute: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b.setCookie(cookieSession, token)
	return token
}

// consentGetChoice reads GET /v1/consent.
func consentGetChoice(t *testing.T, b *consentBrowser, e *env, headers ...string) (consent.View, *http.Response) {
	t.Helper()
	resp, body := b.do("GET", e.url+"/v1/consent", "", headers...)
	return consentDecode(t, resp, body), resp
}

// consentPutChoice sends PUT /v1/consent.
func consentPutChoice(t *testing.T, b *consentBrowser, e *env, body string, headers ...string) (consent.View, *http.Response) {
	t.Helper()
	resp, raw := b.do("PUT", e.url+"/v1/consent", body, headers...)
	return consentDecode(t, resp, raw), resp
}

func consentDecode(t *testing.T, resp *http.Response, body []byte) consent.View {
	t.Helper()
	var v consent.View
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &v) != nil {
		t.Fatalf("%s %s: %d %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s /v1/consent: Cache-Control %q, want no-store", resp.Request.Method, cc)
	}
	return v
}

// consentVisitor is the visitor id in the browser's consent cookie.
func consentVisitor(t *testing.T, b *consentBrowser) string {
	t.Helper()
	v, _, _ := strings.Cut(b.cookie(cookieConsent), ".")
	if !consent.ValidVisitor(v) {
		t.Fatalf("consent cookie %q holds no visitor id", b.cookie(cookieConsent))
	}
	return v
}

// consentFilterApp mounts a gateway's consent middleware, in the order
// the gateway uses, in front of routes that try to set every kind of
// cookie.
func consentFilterApp(g *Gateway) *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(recover.New(), g.filterCookies)
	app.Get("/set", func(c *fiber.Ctx) error {
		c.Cookie(&fiber.Cookie{Name: "tracker", Value: "1", Path: "/", MaxAge: 3600}) // not in the registry
		setCookie(c, cookiePrefs, "size=512x512")
		setCookie(c, cookieAnalytics, "1764000000.1764000300")
		setCookie(c, cookieSession, "token")
		return c.SendStatus(fiber.StatusNoContent)
	})
	app.Get("/clear", func(c *fiber.Ctx) error {
		clearCookie(c, cookiePrefs)
		clearCookie(c, cookieAnalytics)
		return c.SendStatus(fiber.StatusNoContent)
	})
	app.Get("/clear-undeclared", func(c *fiber.Ctx) error {
		c.Cookie(&fiber.Cookie{Name: "tracker", Path: "/", MaxAge: -1, Expires: time.Unix(0, 0)})
		return c.SendStatus(fiber.StatusNoContent)
	})
	app.Get("/set-then-fail", func(c *fiber.Ctx) error {
		setCookie(c, cookiePrefs, "size=512x512")
		return fiber.ErrTeapot
	})
	app.Get("/set-then-panic", func(c *fiber.Ctx) error {
		setCookie(c, cookiePrefs, "size=512x512")
		panic("handler bug")
	})
	return app
}

// consentFilterRun requests path from a consentFilterApp with the given
// consent cookie (if any) and Sec-GPC, and lists the cookies that survive.
func consentFilterRun(t *testing.T, app *fiber.App, path, consent string, gpc bool) []string {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	if consent != "" {
		req.AddCookie(&http.Cookie{Name: cookieConsent, Value: consent})
	}
	if gpc {
		req.Header.Set("Sec-GPC", "1")
	}
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp.Request = req
	return consentCookieNames(t, resp)
}

func TestConsentLifecycle(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	e := newEnv(t, envOptions{now: clock.Now})
	b := newConsentBrowser(t)

	// A fresh visitor has not decided, and reading the choice sets nothing.
	got, resp := consentGetChoice(t, b, e)
	want := consent.View{Revision: 1, Updated: cookiePolicyDate}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fresh GET /v1/consent (-want +got):\n%s", diff)
	}
	if lines := resp.Header.Values("Set-Cookie"); len(lines) != 0 {
		t.Errorf("reading consent set cookies: %q", lines)
	}

	// Accept preferences and analytics from the banner.
	got, resp = consentPutChoice(t, b, e, `{"preferences":true,"analytics":true}`)
	want = consent.View{Revision: 1, Decided: true, Preferences: true, Analytics: true, Updated: cookiePolicyDate}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("accept (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{cookieConsent}, consentCookieNames(t, resp), consentUnordered); diff != "" {
		t.Errorf("accept cookies (-want +got):\n%s", diff)
	}
	ck := consentSetCookies(t, resp)[0]
	if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.MaxAge != 365*24*3600 {
		t.Errorf("consent cookie attributes: %+v", ck)
	}
	visitor := consentVisitor(t, b)
	records, err := e.db.Consents(visitor)
	if err != nil {
		t.Fatal(err)
	}
	accepted := store.Consent{Subject: visitor, Visitor: visitor, Revision: 1, Preferences: true, Analytics: true,
		Source: store.ConsentBanner, Time: clock.Now()}
	if diff := cmp.Diff([]store.Consent{accepted}, records); diff != "" {
		t.Errorf("records after accepting (-want +got):\n%s", diff)
	}
	if got, _ := consentGetChoice(t, b, e); !got.Decided || !got.Analytics || !got.Preferences {
		t.Errorf("GET after accepting: %+v", got)
	}

	// No route sets the preferences or analytics cookie yet, so the filter
	// itself shows that, with this browser's consent, they may be set.
	app := consentFilterApp(e.gw)
	if diff := cmp.Diff([]string{cookieAnalytics, cookiePrefs, cookieSession}, consentFilterRun(t, app, "/set", b.cookie(cookieConsent), false), consentUnordered); diff != "" {
		t.Errorf("cookies allowed after accepting (-want +got):\n%s", diff)
	}

	// Withdraw from the settings page: the same call with false.
	clock.Advance(time.Hour)
	got, resp = consentPutChoice(t, b, e, `{"preferences":false,"analytics":false,"source":"settings"}`)
	want = consent.View{Revision: 1, Decided: true, Updated: cookiePolicyDate}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("withdraw (-want +got):\n%s", diff)
	}
	wantNames := []string{cookieConsent, cookieAnalytics + " (deleted)", cookiePrefs + " (deleted)"}
	if diff := cmp.Diff(wantNames, consentCookieNames(t, resp), consentUnordered); diff != "" {
		t.Errorf("withdrawal must clear the optional cookies (-want +got):\n%s", diff)
	}
	if consentVisitor(t, b) != visitor {
		t.Errorf("withdrawing changed the visitor id")
	}
	withdrawn := store.Consent{Subject: visitor, Visitor: visitor, Revision: 1, Source: store.ConsentSettings, Time: clock.Now()}
	records, err = e.db.Consents(visitor)
	if err != nil {
		t.Fatal(err)
	}
	// Append-only: the first record is untouched, the new one follows it.
	if diff := cmp.Diff([]store.Consent{accepted, withdrawn}, records); diff != "" {
		t.Errorf("records after withdrawing (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{cookieSession}, consentFilterRun(t, app, "/set", b.cookie(cookieConsent), false), consentUnordered); diff != "" {
		t.Errorf("cookies allowed after withdrawing (-want +got):\n%s", diff)
	}

	t.Run("reject all is the same call", func(t *testing.T) {
		t.Parallel()
		b := newConsentBrowser(t)
		got, _ := consentPutChoice(t, b, e, `{"preferences":false,"analytics":false}`)
		if !got.Decided || got.Preferences || got.Analytics {
			t.Errorf("reject all: %+v", got)
		}
		records, err := e.db.Consents(consentVisitor(t, b))
		if err != nil || len(records) != 1 || records[0].Preferences || records[0].Analytics || records[0].Source != store.ConsentBanner {
			t.Errorf("reject all recorded %+v, %v", records, err)
		}
	})

	t.Run("signed-in choice is the account's", func(t *testing.T) {
		t.Parallel()
		b := newConsentBrowser(t)
		acct := consentAccount(t, e, "consent@example.com")
		consentSignIn(t, e, b, acct)
		consentPutChoice(t, b, e, `{"preferences":true,"analytics":false}`)
		records, err := e.db.Consents(acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.Consent{{Subject: acct.ID, Visitor: consentVisitor(t, b), Revision: 1, Preferences: true, Source: store.ConsentBanner, Time: clock.Now()}}
		if diff := cmp.Diff(want, records); diff != "" {
			t.Errorf("records (-want +got):\n%s", diff)
		}
	})

	t.Run("invalid choices record nothing", func(t *testing.T) {
		t.Parallel()
		for body, code := range map[string]string{
			`{"preferences":true}`: "missing_field",
			`{"analytics":true}`:   "missing_field",
			`{}`:                   "missing_field",
			`{"preferences":true,"analytics":true,"source":"gpc"}`: "invalid_source",
			`{"preferences":true,"analytics":true,"source":"api"}`: "invalid_source",
			`{"preferences":"yes","analytics":true}`:               "invalid_json",
			`{"preferences":true,"analytics":true,"extra":1}`:      "unknown_field",
		} {
			b := newConsentBrowser(t)
			resp, raw := b.do("PUT", e.url+"/v1/consent", body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("PUT %s: %d %s, want 400", body, resp.StatusCode, raw)
				continue
			}
			if got := googleErrorCode(t, raw); got != code {
				t.Errorf("PUT %s: code %q, want %q", body, got, code)
			}
			if lines := resp.Header.Values("Set-Cookie"); len(lines) != 0 {
				t.Errorf("PUT %s: refused choice set cookies %q", body, lines)
			}
		}
	})
}

func TestGPCIsRecordedAsOptOut(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	e := newEnv(t, envOptions{now: clock.Now})
	gpc := []string{"Sec-GPC", "1"}

	t.Run("fresh visitor", func(t *testing.T) {
		t.Parallel()
		b := newConsentBrowser(t)
		got, resp := consentGetChoice(t, b, e, gpc...)
		want := consent.View{Revision: 1, GPC: true, Updated: cookiePolicyDate}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GET under GPC (-want +got):\n%s", diff)
		}
		wantNames := []string{cookieAnalytics + " (deleted)", cookieConsent}
		if diff := cmp.Diff(wantNames, consentCookieNames(t, resp), consentUnordered); diff != "" {
			t.Errorf("GET under GPC cookies (-want +got):\n%s", diff)
		}
		visitor := consentVisitor(t, b)
		optOut := store.Consent{Subject: visitor, Visitor: visitor, Revision: 1, Source: store.ConsentGPC, Time: clock.Now()}
		records, err := e.db.Consents(visitor)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]store.Consent{optOut}, records); diff != "" {
			t.Errorf("GPC record (-want +got):\n%s", diff)
		}

		// Recorded once per browser, not on every request.
		_, resp = consentGetChoice(t, b, e, gpc...)
		if lines := resp.Header.Values("Set-Cookie"); len(lines) != 0 {
			t.Errorf("second GET under GPC set cookies %q", lines)
		}
		if records, _ := e.db.Consents(visitor); len(records) != 1 {
			t.Errorf("second GET under GPC recorded again: %+v", records)
		}

		// Accepting analytics under GPC answers and records no analytics.
		got, _ = consentPutChoice(t, b, e, `{"preferences":true,"analytics":true}`, gpc...)
		want = consent.View{Revision: 1, Decided: true, Preferences: true, GPC: true, Updated: cookiePolicyDate}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("PUT analytics under GPC (-want +got):\n%s", diff)
		}
		records, err = e.db.Consents(visitor)
		if err != nil {
			t.Fatal(err)
		}
		put := store.Consent{Subject: visitor, Visitor: visitor, Revision: 1, Preferences: true, Source: store.ConsentBanner, Time: clock.Now()}
		if diff := cmp.Diff([]store.Consent{optOut, put}, records); diff != "" {
			t.Errorf("records (-want +got):\n%s", diff)
		}
		// Without the header later, the stored choice still has no analytics.
		if got, _ := consentGetChoice(t, b, e); got.Analytics || !got.Preferences {
			t.Errorf("GET without GPC after the opt-out: %+v", got)
		}
	})

	t.Run("GPC withdraws an earlier yes", func(t *testing.T) {
		t.Parallel()
		b := newConsentBrowser(t)
		consentPutChoice(t, b, e, `{"preferences":true,"analytics":true}`)
		got, resp := consentGetChoice(t, b, e, gpc...)
		want := consent.View{Revision: 1, Decided: true, Preferences: true, GPC: true, Updated: cookiePolicyDate}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GET under GPC (-want +got):\n%s", diff)
		}
		if !slices.Contains(consentCookieNames(t, resp), cookieAnalytics+" (deleted)") {
			t.Errorf("the analytics cookie was not cleared: %q", resp.Header.Values("Set-Cookie"))
		}
		visitor := consentVisitor(t, b)
		records, err := e.db.Consents(visitor)
		if err != nil || len(records) != 2 {
			t.Fatalf("records %+v, %v; want the yes and the GPC opt-out", records, err)
		}
		wantGPC := store.Consent{Subject: visitor, Visitor: visitor, Revision: 1, Preferences: true, Source: store.ConsentGPC, Time: clock.Now()}
		if diff := cmp.Diff(wantGPC, records[1]); diff != "" {
			t.Errorf("GPC record (-want +got):\n%s", diff)
		}
		if got, _ := consentGetChoice(t, b, e); got.Analytics {
			t.Errorf("analytics still on after the GPC opt-out: %+v", got)
		}
	})
}

func TestPolicyRevisionBumpAsksAgain(t *testing.T) {
	t.Parallel()
	e1 := newEnv(t, envOptions{})
	b := newConsentBrowser(t)
	consentPutChoice(t, b, e1, `{"preferences":true,"analytics":true}`)
	visitor := consentVisitor(t, b)
	old := b.cookie(cookieConsent)
	all := []string{cookieAnalytics, cookiePrefs, cookieSession}
	if diff := cmp.Diff(all, consentFilterRun(t, consentFilterApp(e1.gw), "/set", old, false), consentUnordered); diff != "" {
		t.Errorf("revision 1 allows (-want +got):\n%s", diff)
	}
	e1.close()

	// The operator changes the policy: revision 2, same data.
	e2 := newEnv(t, envOptions{dir: e1.dir, cfg: Config{CookiePolicyRevision: 2, CookiePolicyUpdated: "2027-01-15"}})
	got, _ := consentGetChoice(t, b, e2)
	want := consent.View{Revision: 2, Stale: true, Updated: "2027-01-15"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET with a revision-1 choice under revision 2 (-want +got):\n%s", diff)
	}
	app := consentFilterApp(e2.gw)
	if diff := cmp.Diff([]string{cookieSession}, consentFilterRun(t, app, "/set", old, false), consentUnordered); diff != "" {
		t.Errorf("a stale choice must allow only necessary cookies (-want +got):\n%s", diff)
	}

	// Answering again records revision 2 after the kept revision-1 record.
	got, _ = consentPutChoice(t, b, e2, `{"preferences":true,"analytics":false}`)
	if !got.Decided || got.Stale || got.Revision != 2 {
		t.Errorf("answer under revision 2: %+v", got)
	}
	records, err := e2.db.Consents(visitor)
	if err != nil {
		t.Fatal(err)
	}
	var revisions []int
	for _, r := range records {
		revisions = append(revisions, r.Revision)
	}
	if diff := cmp.Diff([]int{1, 2}, revisions); diff != "" {
		t.Errorf("record revisions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{cookiePrefs, cookieSession}, consentFilterRun(t, app, "/set", b.cookie(cookieConsent), false), consentUnordered); diff != "" {
		t.Errorf("revision 2 choice allows (-want +got):\n%s", diff)
	}
}

// consentRegistryEntry is a registry declaration as the JSON shows it.
type consentRegistryEntry struct {
	Name     string `json:"name"`
	Category string `json:"category"`
	Purpose  string `json:"purpose"`
	Lifetime string `json:"lifetime"`
}

func TestCookiePolicyComesFromRegistry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var want []consentRegistryEntry
	for _, s := range consent.Cookies() {
		want = append(want, consentRegistryEntry{s.Name, string(s.Category), s.Purpose, s.Lifetime})
	}

	t.Run("json", func(t *testing.T) {
		t.Parallel()
		resp, body := e.get(e.url + "/v1/cookies")
		var got []consentRegistryEntry
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("GET /v1/cookies: %d %s", resp.StatusCode, body)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("/v1/cookies differs from the registry (-want +got):\n%s", diff)
		}
		var raw []map[string]any
		json.Unmarshal(body, &raw)
		for _, m := range raw {
			if len(m) != 4 {
				t.Errorf("entry %v has fields beyond name, category, purpose, lifetime", m)
			}
		}
	})

	t.Run("page", func(t *testing.T) {
		t.Parallel()
		resp, body := e.get(e.url + "/cookies")
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET /cookies: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		page := string(body)
		esc := template.Must(template.New("").Parse(`{{.}}`))
		escaped := func(s string) string {
			var b strings.Builder
			esc.Execute(&b, s)
			return b.String()
		}
		for _, c := range want {
			for _, s := range []string{c.Name, c.Category, c.Purpose, c.Lifetime} {
				if !strings.Contains(page, escaped(s)) {
					t.Errorf("the page lacks %q", escaped(s))
				}
			}
		}
		if !strings.Contains(page, cookiePolicyDate) {
			t.Errorf("the page does not show its last-updated date %s", cookiePolicyDate)
		}
		if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
			t.Errorf("the page embeds another site")
		}

		// Promise K3: the page may run only the site's own script, by this
		// response's nonce, and load nothing from another origin.
		csp := resp.Header.Get("Content-Security-Policy")
		directives := map[string][]string{}
		for _, d := range strings.Split(csp, ";") {
			f := strings.Fields(d)
			if len(f) > 0 {
				directives[strings.ToLower(f[0])] = f[1:]
			}
		}
		if diff := cmp.Diff([]string{"'none'"}, directives["default-src"]); diff != "" {
			t.Errorf("CSP %q: default-src (-want +got):\n%s", csp, diff)
		}
		if s := directives["script-src"]; len(s) != 2 || !strings.HasPrefix(s[0], "'nonce-") || s[1] != "'strict-dynamic'" {
			t.Errorf("CSP %q: script-src %q, want only a nonce", csp, s)
		}
		if !strings.Contains(page, `nonce="`+strings.TrimSuffix(strings.TrimPrefix(directives["script-src"][0], "'nonce-"), "'")+`"`) {
			t.Errorf("the page's script does not carry the response's nonce")
		}
		for _, name := range []string{"connect-src", "img-src", "style-src", "form-action"} {
			if src := directives[name]; !slices.Equal(src, []string{"'self'"}) {
				t.Errorf("CSP %q: %s allows %q, want only 'self'", csp, name, src)
			}
		}
		for name, srcs := range directives {
			for _, s := range srcs {
				if strings.Contains(s, ":") || strings.Contains(s, "*") || strings.Contains(s, ".") {
					t.Errorf("CSP %q: %s allows the source %q", csp, name, s)
				}
			}
		}
	})

	t.Run("gpc.json", func(t *testing.T) {
		t.Parallel()
		resp, body := e.get(e.url + "/.well-known/gpc.json")
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET /.well-known/gpc.json: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string]any{"gpc": true, "lastUpdate": cookiePolicyDate}, got); diff != "" {
			t.Errorf("gpc.json (-want +got):\n%s", diff)
		}
		if !regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`).MatchString(cookiePolicyDate) {
			t.Errorf("lastUpdate %q is not YYYY-MM-DD", cookiePolicyDate)
		}
	})
}

func TestFilterDropsOptionalAndUndeclaredCookies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	app := consentFilterApp(e.gw)
	visitor := consent.NewVisitorID()
	cookie := func(s consent.State) string { s.Visitor = visitor; return s.CookieValue() }
	both := consent.State{Revision: 1, Decided: true, Preferences: true, Analytics: true}
	stale := both
	stale.Revision = 2 // a choice from another revision than the one in force
	undecidedGPC := consent.State{GPCRecorded: true}
	deleted := func(n string) string { return n + " (deleted)" }

	before := walkMetric(t, e.gwReg, "imagegate_undeclared_cookies_total")
	cases := []struct {
		name    string
		path    string
		consent string
		gpc     bool
		want    []string
		// bug, when set, names a known defect the case exposes (see the
		// report); the case is skipped until it is fixed.
	}{
		{name: "no consent", path: "/set", want: []string{cookieSession}},
		{name: "malformed consent", path: "/set", consent: visitor + ".1.dpaX", want: []string{cookieSession}},
		{name: "undecided", path: "/set", consent: cookie(consent.State{Revision: 1}), want: []string{cookieSession}},
		{name: "undecided after GPC", path: "/set", consent: cookie(undecidedGPC), gpc: true, want: []string{cookieSession}},
		{name: "preferences only", path: "/set", consent: cookie(consent.State{Revision: 1, Decided: true, Preferences: true}), want: []string{cookiePrefs, cookieSession}},
		{name: "analytics only", path: "/set", consent: cookie(consent.State{Revision: 1, Decided: true, Analytics: true}), want: []string{cookieAnalytics, cookieSession}},
		{name: "all", path: "/set", consent: cookie(both), want: []string{cookieAnalytics, cookiePrefs, cookieSession}},
		{name: "all under GPC", path: "/set", consent: cookie(both), gpc: true, want: []string{cookiePrefs, cookieSession}},
		{name: "stale revision", path: "/set", consent: cookie(stale), want: []string{cookieSession}},
		{name: "deletions pass without consent", path: "/clear", want: []string{deleted(cookieAnalytics), deleted(cookiePrefs)}},
		{name: "deletions pass under GPC", path: "/clear", consent: cookie(both), gpc: true, want: []string{deleted(cookieAnalytics), deleted(cookiePrefs)}},
		{name: "undeclared deletion dropped", path: "/clear-undeclared", consent: cookie(both), want: nil},
		{name: "handler error", path: "/set-then-fail", want: nil},
		{name: "handler panic", path: "/set-then-panic", want: nil},
	}
	undeclared := 0
	for _, tc := range cases {
		if tc.path == "/set" || tc.path == "/clear-undeclared" {
			undeclared++
		}
	}
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				got := consentFilterRun(t, app, tc.path, tc.consent, tc.gpc)
				if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty(), consentUnordered); diff != "" {
					t.Errorf("surviving cookies (-want +got):\n%s", diff)
				}
			})
		}
	})
	if got := walkMetric(t, e.gwReg, "imagegate_undeclared_cookies_total") - before; got != float64(undeclared) {
		t.Errorf("undeclared cookie counter rose by %v, want %d", got, undeclared)
	}
	if !strings.Contains(e.logs.String(), "undeclared cookie dropped") {
		t.Errorf("dropping an undeclared cookie was not logged")
	}
}

func TestCSRFOnStateChangingRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{TrustedOrigins: []string{"https://App.Example.com/"}}})
	host := strings.TrimPrefix(e.url, "http://")

	// browserSession is a signed-in browser with its own account.
	n := 0
	var mu sync.Mutex
	browserSession := func(t *testing.T) (*consentBrowser, store.Account) {
		mu.Lock()
		n++
		email := "csrf" + strings.Repeat("x", n) + "@example.com"
		mu.Unlock()
		b := newConsentBrowser(t)
		acct := consentAccount(t, e, email)
		consentSignIn(t, e, b, acct)
		return b, acct
	}
	alive := func(t *testing.T, b *consentBrowser) bool {
		t.Helper()
		resp, _ := b.do("GET", e.url+"/v1/account", "")
		return resp.StatusCode == http.StatusOK
	}

	cases := []struct {
		name    string
		headers []string
		apiKey  bool
		blocked bool
	}{
		{name: "cross-site", headers: []string{"Sec-Fetch-Site", "cross-site"}, blocked: true},
		{name: "same-site sibling", headers: []string{"Sec-Fetch-Site", "same-site"}, blocked: true},
		{name: "cross-site with a matching Origin", headers: []string{"Sec-Fetch-Site", "cross-site", "Origin", e.url}, blocked: true},
		{name: "foreign Origin, no Sec-Fetch-Site", headers: []string{"Origin", "https://evil.example"}, blocked: true},
		{name: "Origin on another port", headers: []string{"Origin", "http://127.0.0.1:1"}, blocked: true},
		{name: "opaque Origin", headers: []string{"Origin", "null"}, blocked: true},
		{name: "same-origin", headers: []string{"Sec-Fetch-Site", "same-origin", "Origin", "https://evil.example"}},
		{name: "typed by the user", headers: []string{"Sec-Fetch-Site", "none"}},
		{name: "own Origin, no Sec-Fetch-Site", headers: []string{"Origin", "http://" + host}},
		{name: "not a browser", headers: nil},
		{name: "trusted origin, cross-site", headers: []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://app.example.com"}},
		{name: "trusted origin, no Sec-Fetch-Site", headers: []string{"Origin", "https://app.example.com"}},
		{name: "API key, cross-site", headers: []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, apiKey: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, acct := browserSession(t)
			headers := tc.headers
			if tc.apiKey {
				secret, _, err := e.db.CreateAPIKey(acct.ID, "ci", nil)
				if err != nil {
					t.Fatal(err)
				}
				headers = append(slices.Clone(headers), "Authorization", "Bearer "+secret)
			}
			resp, body := b.do("POST", e.url+"/v1/auth/logout", "", headers...)
			switch {
			case tc.blocked:
				if resp.StatusCode != http.StatusForbidden || googleErrorCode(t, body) != "cross_origin" {
					t.Errorf("%d %s, want 403 cross_origin", resp.StatusCode, body)
				}
				if !alive(t, b) {
					t.Errorf("a refused request ended the session")
				}
			case tc.apiKey:
				// Authenticated by the key, not the cookie: CSRF does
				// not apply, but signing out needs a browser session,
				// and the cookie's session is not what the key acts on.
				if resp.StatusCode != http.StatusForbidden || googleErrorCode(t, body) != "session_required" {
					t.Errorf("%d %s, want 403 session_required", resp.StatusCode, body)
				}
				if !alive(t, b) {
					t.Errorf("a request with an API key ended the browser's session")
				}
			default:
				if resp.StatusCode != http.StatusNoContent {
					t.Errorf("%d %s, want 204", resp.StatusCode, body)
				}
				if alive(t, b) {
					t.Errorf("the allowed sign-out left the session alive")
				}
			}
		})
	}

	t.Run("a bad Authorization header is not a CSRF pass", func(t *testing.T) {
		t.Parallel()
		b, _ := browserSession(t)
		resp, body := b.do("POST", e.url+"/v1/auth/logout", "", "Sec-Fetch-Site", "cross-site", "Authorization", "Basic Zm9vOmJhcg==")
		if resp.StatusCode != http.StatusUnauthorized || googleErrorCode(t, body) != "invalid_api_key" {
			t.Errorf("%d %s, want 401 invalid_api_key", resp.StatusCode, body)
		}
		if !alive(t, b) {
			t.Errorf("the session ended")
		}
	})

	t.Run("safe methods pass cross-site", func(t *testing.T) {
		t.Parallel()
		b, _ := browserSession(t)
		if resp, body := b.do("GET", e.url+"/v1/account", "", "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /v1/account cross-site: %d %s", resp.StatusCode, body)
		}
	})

	// Every state-changing route refuses a cross-site browser request
	// before its handler runs.
	t.Run("every state-changing route", func(t *testing.T) {
		t.Parallel()
		b, acct := browserSession(t)
		for _, r := range walkRoutes(e.gw) {
			method, path, _ := strings.Cut(r, " ")
			if method == "GET" {
				continue
			}
			u := e.url + regexp.MustCompile(`:[a-z]+`).ReplaceAllString(path, "x")
			resp, body := b.do(method, u, `{"email":"`+acct.Email+`","password":"`+consentPassword+`","preferences":true,"analytics":true}`,
				"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")
			if resp.StatusCode != http.StatusForbidden || googleErrorCode(t, body) != "cross_origin" {
				t.Errorf("%s cross-site: %d %s, want 403 cross_origin", r, resp.StatusCode, body)
			}
		}
		if !alive(t, b) {
			t.Errorf("the session ended")
		}
		if records, _ := e.db.Consents(acct.ID); len(records) != 0 {
			t.Errorf("a refused consent change was recorded: %+v", records)
		}
	})
}

// A client that sends Sec-GPC but never keeps the cookie cannot make every
// request write a consent row; its opt-out is honoured all the same.
func TestCookielessGPCWritesAreBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var visitors []string
	for i := 0; i < gpcRecordPolicy.Quota+10; i++ {
		resp, body := e.get(e.url+"/v1/consent", "Sec-GPC", "1")
		var view struct {
			Analytics bool `json:"analytics"`
			GPC       bool `json:"gpc"`
		}
		if err := json.Unmarshal(body, &view); err != nil || resp.StatusCode != 200 || view.Analytics || !view.GPC {
			t.Fatalf("request %d: %d %s, want GPC honoured", i, resp.StatusCode, body)
		}
		for _, ck := range resp.Cookies() {
			if ck.Name == cookieConsent && ck.Value != "" {
				visitors = append(visitors, ck.Value)
			}
		}
	}
	if len(visitors) != gpcRecordPolicy.Quota {
		t.Errorf("%d cookie-less GPC requests recorded %d times, want %d", gpcRecordPolicy.Quota+10, len(visitors), gpcRecordPolicy.Quota)
	}
	// A signed-in account's GPC is always recorded, throttle or not.
	b, acct := e.signedIn("gpc-account@example.com")
	b.header.Set("Sec-GPC", "1")
	want(t, b.call("GET", "/v1/consent", "", nil), 200)
	if got, err := e.db.LatestConsent(acct.ID); err != nil || got.Source != store.ConsentGPC {
		t.Errorf("the account's GPC opt-out: %+v, %v; want a gpc record", got, err)
	}
}
