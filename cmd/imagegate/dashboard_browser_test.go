package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imagegate/imagegate/internal/browsertest"
)

// TestBrowserDashboard signs in to /admin in headless Chromium on the
// real binary and checks that the charts show the counts this test
// produced: three partner generations (one miss, two hits), a page view
// counted after the visitor accepted analytics, an overdue rights request.
func TestBrowserDashboard(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	const admin = "admin-token-dashboard-01"
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-token", admin)
	waitReady(t, g.url)
	a := &adminClient{gateway: g.url, token: admin, timeout: time.Minute}

	var created struct {
		Partner   partnerAnswer `json:"partner"`
		SecretKey string        `json:"secret_key"`
	}
	if err := a.call(t.Context(), "POST", "/v1/admin/partners", map[string]any{
		"name": "Retro Poster Shop", "origins": []string{"https://posters.example"}, "monthly_quota": 500, "rate_limit": 60,
	}, &created); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		req, _ := http.NewRequest("POST", g.url+"/v1/images/generations", strings.NewReader(`{"prompt":"a neon city at night","size":"512x512"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+created.SecretKey)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("generation: %d", resp.StatusCode)
		}
	}
	late := time.Now().UTC().AddDate(0, 0, -35).Format(time.DateOnly)
	if err := a.call(t.Context(), "POST", "/v1/admin/dsar", map[string]any{"email": "someone@example.com", "kind": "access", "received": late}, &map[string]any{}); err != nil {
		t.Fatal(err)
	}

	// A visitor accepts analytics on the site; the page shown after the
	// choice is counted (the one before it is not: no consent yet).
	visitor := b.Tab(t)
	if err := chromedp.Do(visitor, chromedp.Navigate(g.url+"/"), chromedp.Click(chromedp.CSS("#cookie-accept")), chromedp.WaitReady(chromedp.CSS("main"))); err != nil {
		t.Fatal(err)
	}
	pageViews := func() int {
		t.Helper()
		var out struct {
			Total struct {
				PageViews map[string]int `json:"page_views"`
			} `json:"total"`
		}
		if err := a.call(t.Context(), "GET", "/v1/admin/analytics", nil, &out); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range out.Total.PageViews {
			n += v
		}
		return n
	}
	// The page's script reports the view after load: wait for the count.
	for deadline := time.Now().Add(60 * time.Second); pageViews() == 0; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the accepted visitor's page view was never counted")
		}
	}

	tab := b.Tab(t, browsertest.WatchCSP())
	if err := chromedp.Do(tab, chromedp.Navigate(g.url+"/admin"), chromedp.WaitVisible(chromedp.CSS("#token"))); err != nil {
		t.Fatal(err)
	}
	for _, v := range browsertest.Axe(t, tab) {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("sign-in page: %s", v)
		}
	}
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.CSS("#token"), admin), chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS("#h-traffic"))); err != nil {
		t.Fatal(err)
	}
	views := pageViews()
	for id, want := range map[string]string{
		"fig-generation-requests": "3", "fig-loads": "1", "fig-hit-ratio": "66.7 %",
		"fig-dsars": "1", "fig-erasures": "0", "fig-pageviews": fmt.Sprint(views),
	} {
		got, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#"+id)))
		if err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", id, got, err, want)
		}
	}
	// The charts are drawn: bars with the counts as their values.
	for _, sel := range []string{
		`svg[aria-labelledby="chart-cache-answers-by-tier"] rect[data-value="2"]`,
		`svg[aria-labelledby="chart-partner-images-this-month"] rect[data-value="3"]`,
		`svg[aria-labelledby="chart-inference-calls-by-latency"] rect.bar`,
		`svg[aria-labelledby="chart-page-views-by-page"] rect.bar`,
	} {
		n, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll(`+jsString(sel)+`).length`))
		if err != nil || n == 0 {
			t.Errorf("no %s on the dashboard (%v)", sel, err)
		}
	}
	if names := browsertest.CookieNames(t, tab, g.url); len(names) != 1 || names[0] != "__Host-imagegate_admin" {
		t.Errorf("dashboard cookies %v, want only the admin session", names)
	}
	for _, v := range browsertest.Axe(t, tab) {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("dashboard: %s", v)
		}
	}
	shot := browsertest.Screenshot(t, tab, "dashboard")
	copyToDocs(t, shot, "dashboard.png")

	if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`nav a[href="/admin/partners"]`)), chromedp.WaitVisible(chromedp.CSS("#snippet-0"))); err != nil {
		t.Fatal(err)
	}
	snippet, err := chromedp.Run(tab, chromedp.Value(chromedp.CSS("#snippet-0")))
	if err != nil || !strings.Contains(snippet, `data-key="`+created.Partner.PublishableKey+`"`) || !strings.Contains(snippet, g.url+"/embed.js") {
		t.Errorf("snippet %q (%v)", snippet, err)
	}
	// The copy button is shown by the page's script: it ran under the CSP.
	if hidden, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.querySelector("button[data-copy]").hidden`)); err != nil || hidden {
		t.Errorf("copy button hidden=%v (%v): the dashboard script did not run", hidden, err)
	}
	if v := browsertest.CSPViolations(t, tab); len(v) != 0 {
		t.Errorf("CSP violations: %v", v)
	}
	for _, v := range browsertest.Axe(t, tab) {
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Errorf("partners page: %s", v)
		}
	}
	shot = browsertest.Screenshot(t, tab, "dashboard-partners")
	copyToDocs(t, shot, "dashboard-partners.png")
}
