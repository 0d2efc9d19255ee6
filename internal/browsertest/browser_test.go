package browsertest

import (
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestHarness drives the real browser against a loopback page and checks
// each thing the harness promises: isolated jars, GPC, screenshots and an
// axe run that finds a real violation.
func TestHarness(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "seen", Value: "1", Path: "/"})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		gpc := "off"
		if r.Header.Get("Sec-GPC") == "1" {
			gpc = "on"
		}
		// The unlabelled input is a serious axe violation (label).
		w.Write([]byte(`<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1 id="gpc">` + gpc + `</h1><input type="text"></main></body></html>`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	b := New(t)
	tab := b.Tab(t)
	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatal(err)
	}
	if got := CookieNames(t, tab, srv.URL); !slices.Equal(got, []string{"seen"}) {
		t.Errorf("cookies after the first visit = %v, want [seen]", got)
	}
	text, err := chromedp.Run(tab, chromedp.Text("#gpc"))
	if err != nil || text != "off" {
		t.Errorf("plain tab: GPC heading = %q (%v), want off", text, err)
	}

	var labelMissing bool
	for _, v := range Axe(t, tab) {
		if v.ID == "label" && (v.Impact == "critical" || v.Impact == "serious") {
			labelMissing = true
		}
	}
	if !labelMissing {
		t.Error("axe did not report the unlabelled input")
	}

	path := Screenshot(t, tab, "harness")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cfg, err := png.DecodeConfig(f); err != nil || cfg.Width != 1280 {
		t.Errorf("screenshot is not a 1280 px wide PNG: %v %d", err, cfg.Width)
	}

	// A second tab is a fresh visitor with GPC on: no cookie from the
	// first tab, and the header and the DOM property both arrive.
	gpcTab := b.Tab(t, GPC())
	if err := chromedp.Do(gpcTab, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatal(err)
	}
	text, err = chromedp.Run(gpcTab, chromedp.Text("#gpc"))
	if err != nil || text != "on" {
		t.Errorf("GPC tab: heading = %q (%v), want on", text, err)
	}
	prop, err := chromedp.Run(gpcTab, chromedp.Evaluate[bool](`navigator.globalPrivacyControl === true`))
	if err != nil || !prop {
		t.Errorf("navigator.globalPrivacyControl = %v (%v), want true", prop, err)
	}
	if _, err := chromedp.Run(gpcTab, chromedp.Evaluate[bool](`document.cookie = "x=1"; true`)); err != nil {
		t.Fatal(err)
	}
	if got := CookieNames(t, tab, srv.URL); slices.Contains(got, "x") {
		t.Errorf("first tab sees the second tab's cookie: %v", got)
	}
}
