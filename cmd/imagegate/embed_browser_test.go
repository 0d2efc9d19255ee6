package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imagegate/imagegate/internal/browsertest"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// siteOn serves handler on a loopback address of its own (127.0.0.2,
// 127.0.0.3: other origins than the gateway's 127.0.0.1) and returns its
// origin.
func siteOn(t *testing.T, ip string, handler http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		testpeer.Missing(t, "loopback address "+ip, "Linux routes all of 127.0.0.0/8 to lo")
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// hostPage is a partner's page: its own content, the embed snippet, and
// a script recording what reaches the page — the widget's DOM events in
// window.events, every raw message in window.raw.
func hostPage(title, snippet, extra string) string {
	return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>` + title + `</title>
<style>
body { font: 16px/1.5 Georgia, serif; margin: 0; background: #fbf5e9; color: #2b2118; }
header { background: #2b2118; color: #fbf5e9; padding: 1.2rem 2rem; }
header h1 { margin: 0; font-size: 1.6rem; letter-spacing: .04em; }
main { max-width: 720px; margin: 1.5rem auto; padding: 0 1rem; }
.card { background: #fff; border: 1px solid #e2d5bf; border-radius: 10px; padding: .5rem; }
</style></head>
<body>
<header><h1>` + title + `</h1><p>Design a poster, then order a print.</p></header>
<main>
<h2>Make your poster</h2>
<script>
window.events = []; window.raw = [];
["imagegate:ready", "imagegate:generated", "imagegate:error", "imagegate:resize"].forEach(function (n) {
  document.addEventListener(n, function (e) { window.events.push({type: n, detail: e.detail}); });
});
window.addEventListener("message", function (e) { window.raw.push({origin: e.origin, type: e.data && e.data.type}); });
function widget() { return document.querySelector("#imagegate iframe"); }
</script>
<div class="card">` + snippet + `</div>
` + extra + `
</main></body></html>`
}

// spoofer is a page on a third origin, framed by the host page, that keeps
// posting fake widget messages to the host and fake commands to every
// frame of the host.
const spoofer = `<!doctype html><html lang="en"><head><title>ad</title></head><body><script>
setInterval(function () {
  parent.postMessage({type: "imagegate:generated", url: "http://evil.example/fake.png", seed: 1}, "*");
  parent.postMessage({type: "imagegate:resize", height: 3999}, "*");
  for (var i = 0; i < parent.frames.length; i++) {
    parent.frames[i].postMessage({type: "imagegate:set-prompt", prompt: "evil prompt"}, "*");
  }
}, 40);
</script></body></html>`

type browserEvent struct {
	Type   string         `json:"type"`
	Detail map[string]any `json:"detail"`
}

// frameTarget attaches to the widget's frame, which Chromium runs in a
// process of its own (it is cross-site).
func frameTarget(t *testing.T, tab context.Context, gateway string) context.Context {
	t.Helper()
	for {
		infos, err := chromedp.Targets(tab)
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range infos {
			if info.Type == "iframe" && strings.HasPrefix(info.URL, gateway+"/embed/frame?") {
				ctx, cancel := chromedp.NewContext(tab, chromedp.WithTargetID(info.TargetID))
				t.Cleanup(cancel)
				return ctx
			}
		}
		select {
		case <-tab.Done():
			t.Fatal("the widget's frame never appeared")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func events(t *testing.T, tab context.Context) []browserEvent {
	t.Helper()
	evs, err := chromedp.Run(tab, chromedp.Evaluate[[]browserEvent](`window.events`))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr)); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestBrowserEmbedWidget runs the real binary, a partner's page on a
// second loopback origin and an intruder on a third, and drives the
// widget in headless Chromium end to end.
func TestBrowserEmbedWidget(t *testing.T) {
	t.Parallel()
	b := browsertest.New(t)
	const admin = "admin-token-embed-0123456"
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-token", admin)
	waitReady(t, g.url)
	a := &adminClient{gateway: g.url, token: admin, timeout: time.Minute}

	var snippet string
	mux := http.NewServeMux()
	partnerSite := siteOn(t, "127.0.0.2", mux)
	evil := http.NewServeMux()
	evilSite := siteOn(t, "127.0.0.3", evil)

	var created struct {
		Partner partnerAnswer `json:"partner"`
	}
	if err := a.call(t.Context(), "POST", "/v1/admin/partners", map[string]any{
		"name": "Retro Poster Shop", "origins": []string{partnerSite}, "monthly_quota": 50, "rate_limit": 60,
	}, &created); err != nil {
		t.Fatal(err)
	}
	p := created.Partner
	snippet = p.Snippet
	withResults := strings.Replace(snippet, " async>", ` data-results="1" async>`, 1)
	spoof := `<iframe src="` + evilSite + `/spoof" title="advert" width="1" height="1" style="border:0;position:absolute;left:-50px"></iframe>`
	html := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, body)
		}
	}
	mux.HandleFunc("/results", html(hostPage("Retro Poster Shop", withResults, spoof)))
	mux.HandleFunc("/plain", html(hostPage("Retro Poster Shop", snippet, "")))
	evil.HandleFunc("/spoof", html(spoofer))
	evil.HandleFunc("/copy", html(hostPage("Copycat", snippet, "")))
	// A forged frame: the right origin claimed in the query, framed by the
	// wrong page. Only frame-ancestors can refuse it.
	evil.HandleFunc("/forged", html(hostPage("Copycat", `<div id="imagegate"><iframe title="stolen" src="`+
		g.url+`/embed/frame?key=`+p.PublishableKey+`&origin=`+partnerSite+`"></iframe></div>`, "")))

	const prompt = "a synthwave sunset over a grid"
	t.Run("partner page", func(t *testing.T) {
		tab := b.Tab(t)
		if err := chromedp.Do(tab, chromedp.Navigate(partnerSite+"/results")); err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "the ready event", `window.events.some(e => e.type === "imagegate:ready")`)
		frame := frameTarget(t, tab, g.url)
		if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](`widget().contentWindow.postMessage({type: "imagegate:set-prompt", prompt: `+jsString(prompt)+`}, `+jsString(g.url)+`); true`)); err != nil {
			t.Fatal(err)
		}
		poll(t, frame, "the host's prompt in the frame", `document.getElementById("ig-prompt").value === `+jsString(prompt))
		// Let the intruder post a few rounds after the host did.
		poll(t, tab, "the intruder's messages", `window.raw.filter(m => m.origin === `+jsString(evilSite)+`).length >= 12`)
		if got, _ := chromedp.Run(frame, chromedp.Evaluate[string](`document.getElementById("ig-prompt").value`)); got != prompt {
			t.Fatalf("the frame took a prompt from the wrong origin: %q", got)
		}
		if err := chromedp.Do(frame, chromedp.Click(chromedp.CSS("#ig-go"))); err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "the generated event", `window.events.some(e => e.type === "imagegate:generated")`)
		poll(t, frame, "the image", `document.getElementById("ig-img").naturalWidth === 512`)
		height, err := chromedp.Run(frame, chromedp.Evaluate[int](`document.documentElement.scrollHeight`))
		if err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "the widget sized to its content", fmt.Sprintf(`parseInt(widget().style.height) >= %d`, height))

		var generated []browserEvent
		for _, e := range events(t, tab) {
			if e.Type == "imagegate:generated" {
				generated = append(generated, e)
			}
			if u, _ := e.Detail["url"].(string); strings.Contains(u, "evil") {
				t.Errorf("the host page took a message from the wrong origin: %v", e)
			}
			if h, _ := e.Detail["height"].(float64); h == 3999 {
				t.Errorf("the host page resized for the intruder: %v", e)
			}
		}
		if len(generated) != 1 {
			t.Fatalf("generated events %v", generated)
		}
		u, _ := generated[0].Detail["url"].(string)
		if _, ok := generated[0].Detail["seed"].(float64); !ok || !strings.HasPrefix(u, g.url+"/o/") {
			t.Errorf("generated detail %v: want the image link and seed (the host asked for results)", generated[0].Detail)
		}
		if _, ok := generated[0].Detail["prompt"]; ok {
			t.Error("the prompt reached the host page")
		}
		if h, _ := chromedp.Run(tab, chromedp.Evaluate[string](`widget().style.height`)); h == "3999px" || h == "420px" {
			t.Errorf("the widget's height is %s: not sized from the frame's own resize messages", h)
		}
		if names := browsertest.CookieNames(t, tab, g.url); len(names) != 0 {
			t.Errorf("the third-party frame set cookies: %v", names)
		}
		shot := browsertest.Screenshot(t, tab, "embed-partner-page")
		copyToDocs(t, shot, "embed-partner-page.png")
		for _, v := range browsertest.Axe(t, frame) {
			if v.Impact == "serious" || v.Impact == "critical" {
				t.Errorf("frame page: %s", v)
			}
		}
	})

	t.Run("no results requested", func(t *testing.T) {
		tab := b.Tab(t)
		if err := chromedp.Do(tab, chromedp.Navigate(partnerSite+"/plain")); err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "the ready event", `window.events.some(e => e.type === "imagegate:ready")`)
		frame := frameTarget(t, tab, g.url)
		if err := chromedp.Do(frame, chromedp.SendKeys(chromedp.CSS("#ig-prompt"), prompt), chromedp.Click(chromedp.CSS("#ig-go"))); err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "the generated event", `window.events.some(e => e.type === "imagegate:generated")`)
		for _, e := range events(t, tab) {
			if e.Type == "imagegate:generated" && len(e.Detail) != 0 {
				t.Errorf("without data-results the host got %v", e.Detail)
			}
		}
		// The partner's page may also call the API itself (CORS).
		got, err := chromedp.Run(tab, chromedp.Evaluate[float64](`fetch(`+jsString(g.url+"/v1/images/generations")+`, {method: "POST",
			headers: {"Content-Type": "application/json", "Imagegate-Key": `+jsString(p.PublishableKey)+`},
			body: JSON.stringify({prompt: "pixel skyline", size: "256x256"})}).then(r => r.json()).then(b => b.data[0].seed)`, chromedp.EvalAwaitPromise))
		if err != nil || got == 0 {
			t.Errorf("fetch from the partner's page: %v %v", got, err)
		}
	})

	t.Run("narrow screen", func(t *testing.T) {
		tab := b.Tab(t, browsertest.Viewport(360, 740))
		if err := chromedp.Do(tab, chromedp.Navigate(partnerSite+"/plain")); err != nil {
			t.Fatal(err)
		}
		poll(t, tab, "the ready event", `window.events.some(e => e.type === "imagegate:ready")`)
		frame := frameTarget(t, tab, g.url)
		overflow, err := chromedp.Run(frame, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		if err != nil || overflow {
			t.Errorf("the frame scrolls sideways at 360 px (%v)", err)
		}
		width, err := chromedp.Run(tab, chromedp.Evaluate[float64](`widget().getBoundingClientRect().width`))
		if err != nil || width > 360 {
			t.Errorf("the widget is %v px wide in a 360 px window (%v)", width, err)
		}
		browsertest.Screenshot(t, tab, "embed-partner-page-360")
	})

	t.Run("other origin", func(t *testing.T) {
		for _, path := range []string{"/copy", "/forged"} {
			tab := b.Tab(t)
			if err := chromedp.Do(tab, chromedp.Navigate(evilSite+path)); err != nil {
				t.Fatal(err)
			}
			// Chromium replaces a frame refused by frame-ancestors with its
			// error page: none of the widget renders.
			frame := frameTarget(t, tab, g.url)
			poll(t, frame, "the frame's final document", `document.readyState === "complete" && location.href !== "about:blank"`)
			state, err := chromedp.Run(frame, chromedp.Evaluate[string](`location.href + " " + !!document.getElementById("ig-form")`))
			if err != nil || state != "chrome-error://chromewebdata/ false" {
				t.Errorf("%s: the frame rendered on a page not on the partner's list: %q %v", path, state, err)
			}
			if evs := events(t, tab); len(evs) != 0 {
				t.Errorf("%s: the widget talked to a page not on the list: %v", path, evs)
			}
			// The key itself is refused from this origin; CORS leaves the
			// page only a network error.
			res, err := chromedp.Run(tab, chromedp.Evaluate[string](`fetch(`+jsString(g.url+"/v1/images/generations")+`, {method: "POST",
				headers: {"Content-Type": "application/json", "Imagegate-Key": `+jsString(p.PublishableKey)+`},
				body: JSON.stringify({prompt: "stolen key", size: "256x256"})}).then(r => "status " + r.status, e => "refused " + e.name)`, chromedp.EvalAwaitPromise))
			if err != nil || res != "refused TypeError" {
				t.Errorf("%s: fetch with the partner's key: %q %v", path, res, err)
			}
		}
	})

	var got partnerAnswer
	if err := a.call(t.Context(), "GET", "/v1/admin/partners/"+p.ID, nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.MonthImages != 3 {
		t.Errorf("partner's images this month %d, want 3 (two in the widget, one by fetch): %+v", got.MonthImages, got.Usage)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// copyToDocs keeps a screenshot in docs/screenshots/ for the README when
// IMAGEGATE_UPDATE_DOCS is set.
func copyToDocs(t *testing.T, src, name string) {
	t.Helper()
	if os.Getenv("IMAGEGATE_UPDATE_DOCS") == "" {
		return
	}
	root, err := testpeer.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "docs", "screenshots", name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}
