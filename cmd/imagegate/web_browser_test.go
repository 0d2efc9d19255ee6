package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/imagegate/imagegate/internal/browsertest"
)

// The website in a real browser (issue 11): headless Chromium through
// chromedp against the real binary on loopback.

const webAdminToken = "web-admin-token-0123456789"

// site is an imagegate process serving the website for a browser test.
type site struct {
	*proc
	dir string
}

// startSite runs imagegate on its embedded defaults in dir, with the admin
// API on so tests can read the analytics and erasures it recorded.
func startSite(t *testing.T, dir string, args ...string) *site {
	t.Helper()
	p := start(t, append([]string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--admin-token", webAdminToken}, args...)...)
	waitReady(t, p.url)
	return &site{proc: p, dir: dir}
}

// admin GETs an admin API path and decodes its JSON.
func (s *site) admin(t *testing.T, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+webAdminToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// pageViews is the analytics' total page views, from the admin API.
func (s *site) pageViews(t *testing.T) int64 {
	t.Helper()
	var rep struct {
		Total struct {
			PageViews map[string]int64 `json:"page_views"`
		} `json:"total"`
	}
	s.admin(t, "/v1/admin/analytics", &rep)
	var n int64
	for _, v := range rep.Total.PageViews {
		n += v
	}
	return n
}

// necessaryCookies are the registry's necessary cookies (GET /v1/cookies).
func (s *site) necessaryCookies(t *testing.T) []string {
	t.Helper()
	resp, err := client.Get(s.url + "/v1/cookies")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reg []struct{ Name, Category string }
	if err := json.NewDecoder(resp.Body).Decode(&reg); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range reg {
		if c.Category == "necessary" {
			out = append(out, c.Name)
		}
	}
	if len(out) == 0 {
		t.Fatal("the registry declares no necessary cookie")
	}
	return out
}

func act(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// onlyNecessary fails t if the tab holds a cookie the registry does not
// call necessary.
func onlyNecessary(t *testing.T, ctx context.Context, s *site, when string) {
	t.Helper()
	allowed := s.necessaryCookies(t)
	for _, name := range browsertest.CookieNames(t, ctx, s.url) {
		if !slices.Contains(allowed, name) {
			t.Errorf("%s: the jar holds %s, which is not a necessary cookie", when, name)
		}
	}
}

// noCSPViolation fails t if the current document met a CSP violation:
// the pages must need nothing their own policy forbids.
func noCSPViolation(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	if v := browsertest.CSPViolations(t, ctx); len(v) > 0 {
		t.Errorf("%s: CSP violations: %v", page, v)
	}
}

// waitCondition polls a page expression until it is true: the page's own
// script works asynchronously, so the test waits on the state it reaches.
func waitCondition(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js, chromedp.EvalAwaitPromise)); err == nil && ok {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// waitPageViews waits for the analytics to reach want: the count is
// written when the page's beacon arrives.
func waitPageViews(t *testing.T, s *site, want int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if s.pageViews(t) >= want {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("page views never reached %d (at %d)", want, s.pageViews(t))
}

func TestBrowserCookieBanner(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	s := startSite(t, t.TempDir())

	// First visit: the banner asks, accept and reject look alike, and the
	// jar holds nothing optional; no analytics call is made.
	tab := b.Tab(t, browsertest.WatchCSP())
	reqs := browsertest.RecordRequests(t, tab)
	act(t, tab, "first visit", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#cookie-banner"))
	accept, err := chromedp.Run(tab, chromedp.Dimensions("#cookie-accept"))
	if err != nil {
		t.Fatal(err)
	}
	reject, err := chromedp.Run(tab, chromedp.Dimensions("#cookie-reject"))
	if err != nil {
		t.Fatal(err)
	}
	if accept.Height != reject.Height || eval[string](t, tab, `document.getElementById("cookie-accept").className`) != eval[string](t, tab, `document.getElementById("cookie-reject").className`) {
		t.Errorf("accept and reject differ in weight: %v vs %v", accept, reject)
	}
	if viewport := eval[float64](t, tab, `window.innerHeight`); reject.Content[1] > viewport || accept.Content[1] > viewport {
		t.Errorf("accept/reject not on the first screen (y %v/%v, viewport %v)", accept.Content[1], reject.Content[1], viewport)
	}
	onlyNecessary(t, tab, s, "first visit")
	browsertest.CheckAxe(t, tab, "home with banner")
	browsertest.Screenshot(t, tab, "home")
	noCSPViolation(t, tab, "home")

	// Reject: the banner goes, still only necessary cookies, no count.
	act(t, tab, "reject", chromedp.Click("#cookie-reject"), chromedp.WaitNotPresent("#cookie-banner"))
	onlyNecessary(t, tab, s, "after reject")
	act(t, tab, "reload", chromedp.Navigate(s.url+"/pricing"), chromedp.WaitVisible("main h1"))
	if n, _ := chromedp.Run(tab, chromedp.Evaluate[bool](`!!document.getElementById("cookie-banner")`)); n {
		t.Error("the banner asks again after a choice")
	}
	if got := reqs.Matching("/v1/analytics/"); len(got) != 0 {
		t.Errorf("analytics called without consent: %v", got)
	}
	if n := s.pageViews(t); n != 0 {
		t.Errorf("page views after reject = %d, want 0", n)
	}

	// Accept analytics in a fresh browser: the page view is counted.
	tab2 := b.Tab(t)
	reqs2 := browsertest.RecordRequests(t, tab2)
	act(t, tab2, "accept", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#cookie-accept"), chromedp.Click("#cookie-accept"), chromedp.WaitNotPresent("#cookie-banner"))
	waitPageViews(t, s, 1)
	if got := reqs2.Matching("/v1/analytics/pageview"); len(got) != 1 {
		t.Errorf("analytics calls after accept = %v, want one", got)
	}
	if !slices.Contains(browsertest.CookieNames(t, tab2, s.url), "__Host-imagegate_visit") {
		t.Error("no analytics cookie after accepting analytics")
	}
	act(t, tab2, "next page", chromedp.Navigate(s.url+"/pricing"), chromedp.WaitVisible("main h1"))
	waitPageViews(t, s, 2)

	// GPC: the banner says so, and accepting all still leaves analytics off.
	gpc := b.Tab(t, browsertest.GPC())
	reqs3 := browsertest.RecordRequests(t, gpc)
	act(t, gpc, "GPC visit", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#gpc-note"))
	if note := text(t, gpc, "#gpc-note"); !strings.Contains(note, "Global Privacy Control") || !strings.Contains(note, "analytics stay off") {
		t.Errorf("GPC note = %q", note)
	}
	act(t, gpc, "GPC accept", chromedp.Click("#cookie-accept"), chromedp.WaitNotPresent("#cookie-banner"),
		chromedp.Navigate(s.url+"/cookies"), chromedp.WaitVisible("#consent-state"))
	if st := text(t, gpc, "#consent-state"); !strings.Contains(st, "analytics off") {
		t.Errorf("after accepting under GPC the preferences page says %q", st)
	}
	browsertest.CheckAxe(t, gpc, "cookies")
	if got := reqs3.Matching("/v1/analytics/"); len(got) != 0 {
		t.Errorf("analytics called under GPC: %v", got)
	}
	onlyNecessaryOrPrefs := s.necessaryCookies(t)
	onlyNecessaryOrPrefs = append(onlyNecessaryOrPrefs, "__Host-imagegate_prefs")
	for _, name := range browsertest.CookieNames(t, gpc, s.url) {
		if !slices.Contains(onlyNecessaryOrPrefs, name) {
			t.Errorf("under GPC the jar holds %s", name)
		}
	}
	if n := s.pageViews(t); n != 2 {
		t.Errorf("page views = %d after the GPC visit, want still 2", n)
	}

	// A new cookie-policy revision asks the first visitor again (cookies
	// are per host, not per port, so the restarted site sees them).
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s2 := startSite(t, s.dir, "--cookie-policy-revision", "2")
	act(t, tab, "new revision", chromedp.Navigate(s2.url+"/"), chromedp.WaitVisible("#cookie-banner"))
	if txt := text(t, tab, "#cookie-banner"); !strings.Contains(txt, "policy changed") {
		t.Errorf("re-asked banner = %q, want it to say the policy changed", txt)
	}
}

// TestBrowserCookieBannerWithoutScript rejects with script disabled: the
// banner is a plain form that works alone.
func TestBrowserCookieBannerWithoutScript(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	s := startSite(t, t.TempDir())
	tab := b.Tab(t, browsertest.NoScript())
	act(t, tab, "reject without script", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#cookie-reject"),
		chromedp.Click("#cookie-reject"), chromedp.WaitNotPresent("#cookie-banner"), chromedp.WaitVisible("#gen"))
	if ok := eval[bool](t, tab, `!document.getElementById("cookie-banner")`); !ok {
		t.Error("the banner is still shown after rejecting without script")
	}
	names := browsertest.CookieNames(t, tab, s.url)
	if !slices.Contains(names, "__Host-imagegate_consent") {
		t.Errorf("no consent cookie after the form post: %v", names)
	}
	onlyNecessary(t, tab, s, "after reject without script")

	// The generator is a plain multipart form: it works without script.
	act(t, tab, "generate without script", chromedp.SendKeys("#prompt", "a pixel skyline at night"),
		chromedp.Click("#generate"), chromedp.WaitVisible("#results img"))
	waitCondition(t, tab, "the image to load", `document.querySelector("#results img").naturalWidth > 0`)
	if got := eval[string](t, tab, `document.querySelector("#prompt").value`); got != "a pixel skyline at night" {
		t.Errorf("the result page lost the prompt: %q", got)
	}
}

// TestBrowserNarrowScreen opens every public page 360 px wide: nothing
// may overflow sideways, and the banner's choices fit the first screen.
func TestBrowserNarrowScreen(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	s := startSite(t, t.TempDir())
	tab := b.Tab(t, browsertest.Viewport(360, 740))
	for _, p := range []string{"/", "/signup", "/signin", "/cookies", "/privacy", "/terms", "/pricing", "/reset-password", "/no-such-page"} {
		act(t, tab, p, chromedp.Navigate(s.url+p), chromedp.WaitVisible("main h1"))
		// clientWidth excludes the scrollbar: what the page can use.
		if wide := eval[[]string](t, tab, `(() => { const w = document.documentElement.clientWidth;
  return Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > w + 0.5)
    .map(e => e.tagName + "#" + e.id + "." + e.className + " right=" + e.getBoundingClientRect().right + " of " + w); })()`); len(wide) > 0 {
			t.Errorf("%s overflows a 360 px screen: %v", p, wide)
		}
		if p == "/" {
			reject, err := chromedp.Run(tab, chromedp.Dimensions("#cookie-reject"))
			if err != nil {
				t.Fatal(err)
			}
			if y := reject.Content[5]; y > 740 {
				t.Errorf("reject button ends at y=%v, below the first 360×740 screen", y)
			}
			browsertest.Screenshot(t, tab, "home-360")
		}
	}
}

// TestBrowserPreferencesCookie: with preference cookies allowed the
// generator remembers its settings; rejected, it writes no cookie.
func TestBrowserPreferencesCookie(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	s := startSite(t, t.TempDir())
	for _, choice := range []string{"accept", "reject"} {
		tab := b.Tab(t)
		act(t, tab, choice, chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#cookie-"+choice),
			chromedp.Click("#cookie-"+choice), chromedp.WaitNotPresent("#cookie-banner"))
		size := eval[string](t, tab, `document.querySelector("#size").options[0].value`)
		if size == eval[string](t, tab, `document.querySelector("#size").value`) {
			t.Fatalf("the smallest size %s is the default: nothing to remember", size)
		}
		act(t, tab, "generate", chromedp.SetValue("#size", size), chromedp.SendKeys("#prompt", "remember me"),
			chromedp.Click("#generate"), chromedp.WaitVisible("#results img"))
		has := slices.Contains(browsertest.CookieNames(t, tab, s.url), "__Host-imagegate_prefs")
		if has != (choice == "accept") {
			t.Errorf("%s: preferences cookie set = %v", choice, has)
		}
		act(t, tab, "reload", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#size"))
		remembered := eval[string](t, tab, `document.querySelector("#size").value`) == size
		if choice == "accept" && !remembered {
			t.Errorf("accepted preferences, but the generator forgot size %s", size)
		}
	}
}

// verifyLink finds the verification link in the outbox mail to addr.
func verifyLink(t *testing.T, dir, addr string) string {
	t.Helper()
	re := regexp.MustCompile(`https?://\S+/verify-email\?token=[A-Za-z0-9%_-]+`)
	entries, err := os.ReadDir(filepath.Join(dir, "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, "outbox", e.Name()))
		if err != nil || !strings.Contains(string(raw), "To: <"+addr+">") {
			continue
		}
		// The body is quoted-printable (the link's = is =3D).
		decoded, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(raw)))
		if m := re.FindString(string(decoded)); m != "" {
			return m
		}
	}
	t.Fatalf("no verification link to %s in the outbox", addr)
	return ""
}

func TestBrowserAccountJourney(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	s := startSite(t, t.TempDir())
	tab := b.Tab(t, browsertest.WatchCSP())
	const email, password = "journey@example.com", "a long journey passphrase"

	act(t, tab, "open", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#cookie-reject"), chromedp.Click("#cookie-reject"),
		chromedp.WaitNotPresent("#cookie-banner"))

	// Sign up (with the 18+ attestation), then verify from the outbox.
	act(t, tab, "sign up", chromedp.Navigate(s.url+"/signup"), chromedp.WaitVisible("#email"))
	browsertest.CheckAxe(t, tab, "sign-up")
	browsertest.Screenshot(t, tab, "page-signup")
	act(t, tab, "sign up form", chromedp.SendKeys("#email", email), chromedp.SendKeys("#password", password),
		chromedp.Click("#over_18"), chromedp.Click(`main form button[type="submit"]`), chromedp.WaitVisible("#signup-sent"))
	link := verifyLink(t, s.dir, email)
	link = s.url + link[strings.Index(link, "/verify-email"):]
	act(t, tab, "verify page", chromedp.Navigate(link), chromedp.WaitVisible("#verify"))
	browsertest.CheckAxe(t, tab, "verify")
	act(t, tab, "verify", chromedp.Click("#verify"), chromedp.WaitVisible("#message"))
	if msg := text(t, tab, "main h1"); msg != "Address confirmed" {
		t.Errorf("after verifying: %q: %s", msg, text(t, tab, "main"))
	}

	// Sign in.
	act(t, tab, "sign in page", chromedp.Navigate(s.url+"/signin"), chromedp.WaitVisible("#email"))
	browsertest.CheckAxe(t, tab, "sign-in")
	act(t, tab, "sign in", chromedp.SendKeys("#email", email), chromedp.SendKeys("#password", password+"\n"),
		chromedp.WaitVisible(`a[href="/gallery"]`))
	var acct struct {
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
	}
	if err := json.Unmarshal([]byte(eval[string](t, tab, `fetch("/v1/account").then(r => r.text())`)), &acct); err != nil || acct.Email != email || !acct.EmailVerified {
		t.Fatalf("account after sign-in: %+v %v", acct, err)
	}

	// Generate from the generator page: progress shows, then the image.
	act(t, tab, "generator", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#prompt"))
	browsertest.CheckAxe(t, tab, "home signed in")
	eval[bool](t, tab, `window.__seen = [];
new MutationObserver(rs => rs.forEach(r => window.__seen.push(r.target.id + (r.target.hidden ? ":hidden" : ":shown"))))
  .observe(document.body, {subtree: true, attributes: true, attributeFilter: ["hidden"]}); true`)
	act(t, tab, "generate", chromedp.SendKeys("#prompt", "a lighthouse at dusk, synthwave"), chromedp.Click("#generate"),
		chromedp.WaitVisible("#results img"))
	waitCondition(t, tab, "the image to load", `document.querySelector("#results img").naturalWidth > 0`)
	seen := eval[[]string](t, tab, `window.__seen`)
	pi, ri := slices.Index(seen, "progress:shown"), slices.Index(seen, "result:shown")
	if pi < 0 || ri < 0 || pi > ri {
		t.Errorf("progress then result: saw %v", seen)
	}
	src := eval[string](t, tab, `document.querySelector("#results img").src`)
	if dl := eval[string](t, tab, `document.querySelector("#results a[download]").href`); dl != src {
		t.Errorf("download link %q, image %q", dl, src)
	}
	if copyBtn := eval[string](t, tab, `document.querySelector("#results button[data-copy]").dataset.copy`); copyBtn != src {
		t.Errorf("copy-link button copies %q, want %q", copyBtn, src)
	}
	onlyNecessary(t, tab, s, "generating after reject")
	browsertest.CheckAxe(t, tab, "generator result")
	browsertest.Screenshot(t, tab, "generator-result")
	noCSPViolation(t, tab, "generator")

	// The gallery lists it with its expiry, as the store has it.
	var hist struct {
		Data []struct {
			ID      string    `json:"id"`
			Expires time.Time `json:"expires"`
		} `json:"data"`
	}
	waitCondition(t, tab, "the generation in the history", `fetch("/v1/account/generations").then(r => r.json()).then(j => j.data.length === 1)`)
	if err := json.Unmarshal([]byte(eval[string](t, tab, `fetch("/v1/account/generations").then(r => r.text())`)), &hist); err != nil || len(hist.Data) != 1 {
		t.Fatalf("history: %+v %v", hist, err)
	}
	act(t, tab, "gallery", chromedp.Navigate(s.url+"/gallery"), chromedp.WaitVisible("#gallery img"))
	waitCondition(t, tab, "the thumbnail", `document.querySelector("#gallery img").naturalWidth > 0`)
	if exp := text(t, tab, "#gen-"+hist.Data[0].ID+" .expires"); exp != "Expires "+hist.Data[0].Expires.UTC().Format("2 Jan 2006") {
		t.Errorf("gallery expiry %q, store %v", exp, hist.Data[0].Expires)
	}
	browsertest.CheckAxe(t, tab, "gallery")
	browsertest.Screenshot(t, tab, "gallery")

	// Privacy centre, then the other pages, each checked for accessibility.
	act(t, tab, "account", chromedp.Navigate(s.url+"/account"), chromedp.WaitVisible("#delete"))
	browsertest.CheckAxe(t, tab, "account")
	browsertest.Screenshot(t, tab, "privacy-centre")
	noCSPViolation(t, tab, "account")
	for _, p := range []string{"/privacy", "/cookies", "/terms", "/pricing", "/reset-password", "/no-such-page"} {
		act(t, tab, p, chromedp.Navigate(s.url+p), chromedp.WaitVisible("main h1"))
		browsertest.CheckAxe(t, tab, p)
		noCSPViolation(t, tab, p)
		browsertest.Screenshot(t, tab, "page-"+strings.Trim(strings.ReplaceAll(p, "/", "-"), "-"))
	}
	if h := text(t, tab, "main h1"); h != "Page not found" {
		t.Errorf("404 page heading %q", h)
	}

	// Delete the image from the gallery.
	act(t, tab, "delete image", chromedp.Navigate(s.url+"/gallery"), chromedp.WaitVisible("#gallery"),
		chromedp.Click("#gen-"+hist.Data[0].ID+` button[type="submit"]`), chromedp.WaitVisible("#gallery-empty"))
	if n := eval[float64](t, tab, `fetch("/v1/account/generations").then(r => r.json()).then(j => j.data.length)`); n != 0 {
		t.Errorf("history after delete has %v entries", n)
	}

	// Export: the link downloads a ZIP of the account.
	act(t, tab, "account again", chromedp.Navigate(s.url+"/account"), chromedp.WaitVisible("#export"))
	zip := eval[string](t, tab, `fetch(document.getElementById("export").href).then(async r => r.status + " " + r.headers.get("content-type") + " " + new Uint8Array(await r.arrayBuffer()).slice(0, 2).join(","))`)
	if zip != "200 application/zip 80,75" { // "PK"
		t.Errorf("export = %q, want a ZIP", zip)
	}

	// Delete the account with its password and the confirmation.
	act(t, tab, "delete account", chromedp.SendKeys("#delete_password", password), chromedp.Click("#confirm_delete"),
		chromedp.Click("#delete-account"), chromedp.WaitVisible("#message"))
	if msg := text(t, tab, "#message"); !strings.Contains(msg, "being deleted") {
		t.Errorf("after deleting: %q", msg)
	}
	resp, err := client.Post(s.url+"/v1/auth/login", "application/json", strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q}`, email, password)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Error("the deleted account can still sign in")
	}
}

// focusOn presses Tab until the element with id has focus, and returns
// how the focus looks there.
func focusOn(t *testing.T, ctx context.Context, id string) (outline string) {
	t.Helper()
	for range 60 {
		act(t, ctx, "tab", chromedp.KeyEvent(kb.Tab))
		if eval[string](t, ctx, `document.activeElement.id`) == id {
			return eval[string](t, ctx, `(() => { const s = getComputedStyle(document.activeElement); return s.outlineStyle + " " + s.outlineWidth; })()`)
		}
	}
	t.Fatalf("Tab never reached #%s", id)
	return ""
}

// TestBrowserKeyboardAndEdit uses the site with the keyboard alone, with
// a visible focus ring, then edits an uploaded picture.
func TestBrowserKeyboardAndEdit(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	s := startSite(t, t.TempDir())
	tab := b.Tab(t)
	reqs := browsertest.RecordRequests(t, tab)
	act(t, tab, "open", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible("#cookie-reject"))

	if ring := focusOn(t, tab, "cookie-reject"); ring != "solid 3px" {
		t.Errorf("focus ring on reject = %q, want a 3px solid outline", ring)
	}
	act(t, tab, "reject by keyboard", chromedp.KeyEvent(kb.Enter), chromedp.WaitNotPresent("#cookie-banner"))
	focusOn(t, tab, "prompt")
	act(t, tab, "type", chromedp.KeyEvent("a synthwave grid by keyboard"))
	if ring := focusOn(t, tab, "generate"); ring != "solid 3px" {
		t.Errorf("focus ring on generate = %q", ring)
	}
	act(t, tab, "generate by keyboard", chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible("#results img"))

	// An edit: a reference picture and a strength.
	ref := filepath.Join(t.TempDir(), "ref.png")
	resp, err := client.Get(eval[string](t, tab, `document.querySelector("#results img").src`))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := os.WriteFile(ref, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	act(t, tab, "edit", chromedp.Click("details.edit summary"), chromedp.WaitVisible("#image"),
		chromedp.SetUploadFiles("#image", []string{ref}), chromedp.SetValue("#strength", "0.8"),
		chromedp.SetValue("#prompt", "gameboy"), chromedp.Click("#generate"))
	waitCondition(t, tab, "the edited image", `(() => { const i = document.querySelector("#results img"); return !!i && i.alt === "Generated image: gameboy" && i.naturalWidth > 0; })()`)
	if got := reqs.Matching("/v1/images/edits"); len(got) != 1 {
		t.Errorf("edit requests = %v, want one", got)
	}
}
