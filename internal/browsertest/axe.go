package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// AxeEnv names axe.min.js directly; otherwise it is looked up in
// $IMAGEGATE_TEST_TOOLS/../node_modules and then .tools/node_modules at the
// module root, where `make tools` installs it with npm.
const AxeEnv = "IMAGEGATE_TEST_AXE"

// AxeViolation is one failed axe-core rule on a page.
type AxeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any  `json:"target"`
		HTML   string `json:"html"`
	} `json:"nodes"`
}

func (v AxeViolation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s", v.ID, v.Impact, v.Help)
	for _, n := range v.Nodes {
		fmt.Fprintf(&b, "\n    %v %s", n.Target, n.HTML)
	}
	return b.String()
}

// axeSource reads axe.min.js, or skips/fails t when it is not installed.
func axeSource(t testing.TB) string {
	t.Helper()
	var candidates []string
	if p := os.Getenv(AxeEnv); p != "" {
		candidates = append(candidates, p)
	}
	const rel = "node_modules/axe-core/axe.min.js"
	if d := os.Getenv(testpeer.ToolsEnv); d != "" {
		candidates = append(candidates, filepath.Join(d, "..", rel))
	}
	if root, err := testpeer.ModuleRoot(); err == nil {
		candidates = append(candidates, filepath.Join(root, ".tools", rel))
	}
	for _, p := range candidates {
		if src, err := os.ReadFile(p); err == nil {
			return string(src)
		}
	}
	testpeer.Missing(t, "axe-core", "npm install --prefix .tools axe-core")
	return ""
}

// Axe runs axe-core (WCAG 2.x A and AA rules plus best practices) on the
// page the tab shows and returns every violation. The script is evaluated
// through DevTools, so the page's own CSP stays as strict as in
// production.
func Axe(t testing.TB, ctx context.Context) []AxeViolation {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](axeSource(t)+";true")); err != nil {
		t.Fatalf("inject axe-core: %v", err)
	}
	const run = `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations)`
	vs, err := chromedp.Run(ctx, chromedp.Evaluate[[]AxeViolation](run, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("run axe-core: %v", err)
	}
	return vs
}

// CheckAxe fails t for every serious or critical axe-core violation on the
// page (named page in the message) and logs the minor ones.
func CheckAxe(t testing.TB, ctx context.Context, page string) {
	t.Helper()
	for _, v := range Axe(t, ctx) {
		switch v.Impact {
		case "serious", "critical":
			t.Errorf("%s: accessibility: %s", page, v)
		default:
			t.Logf("%s: accessibility (minor): %s", page, v)
		}
	}
}
