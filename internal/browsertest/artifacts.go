package browsertest

import (
	"os"
	"path/filepath"
	"testing"

	"context"
	"github.com/chromedp/chromedp"
)

// ArtifactsEnv names the directory screenshots are written to; unset, they
// go to a per-test temporary directory (and are logged).
const ArtifactsEnv = "IMAGEGATE_TEST_ARTIFACTS"

// Screenshot saves a PNG of the whole page as <artifacts>/<name>.png and
// returns its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
	return path
}
