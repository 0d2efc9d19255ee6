package browsertest

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Requests records the URL of every request a tab sends, in order, so a
// test can assert what a page did not call (no analytics before consent).
type Requests struct {
	mu   sync.Mutex
	urls []string
}

// RecordRequests starts recording the tab's requests.
func RecordRequests(t testing.TB, ctx context.Context) *Requests {
	t.Helper()
	r := &Requests{}
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Request != nil {
			r.mu.Lock()
			r.urls = append(r.urls, e.Request.URL)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("listen for requests: %v", err)
	}
	return r
}

// Matching returns the recorded URLs that contain substr.
func (r *Requests) Matching(substr string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, u := range r.urls {
		if strings.Contains(u, substr) {
			out = append(out, u)
		}
	}
	return out
}

// All returns every recorded URL.
func (r *Requests) All() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.urls)
}

// cspRecorder collects the page's securitypolicyviolation events into
// window.__cspViolations on every document the tab opens.
const cspRecorder = `window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", e => window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber));`

// WatchCSP makes every document of the tab record the Content-Security-
// Policy violations it meets; read them with CSPViolations.
func WatchCSP() TabOption {
	return func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
		return err
	}
}

// CSPViolations returns the violations the current document recorded
// (see WatchCSP).
func CSPViolations(t testing.TB, ctx context.Context) []string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.__cspViolations || []`))
	if err != nil {
		t.Fatalf("read CSP violations: %v", err)
	}
	return v
}
