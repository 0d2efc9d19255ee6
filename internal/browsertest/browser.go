// Package browsertest drives a real headless Chromium (Debian's
// /usr/bin/chromium) through chromedp for imagegate's browser tests: it
// starts the browser with a fresh profile, opens isolated tabs, saves
// screenshots as test artifacts and runs axe-core inside a page.
//
// Chromium and axe-core are installed by `make tools` (which `make test`
// runs). When either is missing a test is skipped under a plain `go test`
// and fails when IMAGEGATE_TEST_REQUIRE_PEERS=1, like every other peer in
// internal/testpeer.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// ChromiumEnv overrides the browser binary (default /usr/bin/chromium).
const ChromiumEnv = "IMAGEGATE_TEST_CHROMIUM"

// DefaultChromium is where Debian's chromium package installs the browser.
const DefaultChromium = "/usr/bin/chromium"

// tabTimeout bounds everything one tab does, so a page that never shows
// the awaited element fails the test instead of hanging it.
const tabTimeout = 3 * time.Minute

// Browser is a running headless Chromium owned by one test.
type Browser struct {
	ctx context.Context // the browser-level chromedp context
}

// Chromium returns the browser binary, or skips/fails t when it is missing.
func Chromium(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(ChromiumEnv)
	if bin == "" {
		bin = DefaultChromium
	}
	if _, err := exec.LookPath(bin); err != nil {
		testpeer.Missing(t, "chromium", "apt-get install chromium")
	}
	return bin
}

// New starts Chromium headless with a fresh profile in t.TempDir() and
// stops it when the test ends. The flags keep the browser from talking to
// anything but the pages a test opens.
func New(t testing.TB) *Browser {
	t.Helper()
	bin := Chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first action starts the browser process.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &Browser{ctx: ctx}
}

// TabOption adjusts a tab before its first navigation.
type TabOption func(ctx context.Context) error

// GPC makes the tab a visitor with Global Privacy Control on: every
// request carries Sec-GPC: 1 and navigator.globalPrivacyControl is true,
// as in a browser where the visitor switched it on.
func GPC() TabOption {
	return func(ctx context.Context) error {
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Sec-GPC": "1"},
		}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `Object.defineProperty(Navigator.prototype, "globalPrivacyControl", {get: () => true, configurable: true});`,
		})
		return err
	}
}

// Viewport sets the tab's CSS viewport, for the narrow-screen checks.
func Viewport(width, height int64) TabOption {
	return func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.EmulateViewport(width, height))
	}
}

// Tab opens a tab in its own browser context (its own cookie jar, like a
// fresh visitor) and closes it when the test ends. Every action run on the
// returned context is bounded by a few minutes.
func (b *Browser) Tab(t testing.TB, opts ...TabOption) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, tabTimeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	for _, o := range opts {
		if err := o(ctx); err != nil {
			t.Fatalf("tab option: %v", err)
		}
	}
	return ctx
}

// Cookies returns the cookies the tab's jar holds for url.
func Cookies(t testing.TB, ctx context.Context, url string) []*network.Cookie {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{url}})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	return res.Cookies
}

// CookieNames returns the names of the cookies the tab holds for url.
func CookieNames(t testing.TB, ctx context.Context, url string) []string {
	t.Helper()
	var names []string
	for _, c := range Cookies(t, ctx, url) {
		names = append(names, c.Name)
	}
	return names
}

// NoScript disables JavaScript in the tab, to check that pages work as
// plain forms (progressive enhancement).
func NoScript() TabOption {
	return func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}
}
