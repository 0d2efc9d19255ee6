package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// suite writes a throwaway module whose packages pass, skip, fail and do
// not build, for run to drive a real `go test -json` over.
func suite(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module example.com/suite\n\ngo 1.22\n",
		"pass/pass_test.go": `package pass
import "testing"
func TestPasses(t *testing.T) { t.Log("quiet when it passes") }
`,
		"skip/skip_test.go": `package skip
import "testing"
func TestRuns(t *testing.T) {}
func TestPeerMissing(t *testing.T) { t.Skip("stripe-mock is not installed") }
func TestTable(t *testing.T) {
	t.Run("runs", func(t *testing.T) {})
	t.Run("skips", func(t *testing.T) { t.Parallel(); t.Skipf("no %s here", "root") })
}
`,
		"fail/fail_test.go": `package fail
import "testing"
func TestBreaks(t *testing.T) { t.Error("the promise broke") }
`,
		"broken/broken_test.go": `package broken
import "testing"
func TestNeverBuilds(t *testing.T) { undefinedName() }
`,
		"notests/lib.go": "package notests\n",
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRunFailsOnAnySkip runs go test for real over each kind of package:
// only a run where every test ran and passed exits 0, and every skipped
// test (subtests too) is listed with its reason.
func TestRunFailsOnAnySkip(t *testing.T) {
	t.Parallel()
	dir := suite(t)
	for _, c := range []struct {
		name       string
		args       []string
		status     int
		skips      []string // lines of the skip list
		outHas     []string
		outHasNone []string
	}{
		{name: "all pass", args: []string{"-count=1", "./pass", "./notests"}, status: 0,
			outHas: []string{"ok  \texample.com/suite/pass"}, outHasNone: []string{"=== RUN", "quiet when it passes", "noskip:"}},
		{name: "skips", args: []string{"-count=1", "./pass", "./skip"}, status: 1,
			skips: []string{
				"  example.com/suite/skip TestPeerMissing: skip_test.go:4: stripe-mock is not installed",
				"  example.com/suite/skip TestTable/skips: skip_test.go:7: no root here",
			},
			outHas: []string{"noskip: 2 test(s) skipped"}},
		{name: "failure", args: []string{"-count=1", "./fail"}, status: 1,
			outHas: []string{"the promise broke", "FAIL\texample.com/suite/fail"}, outHasNone: []string{"noskip:"}},
		{name: "build failure", args: []string{"-count=1", "./broken", "./pass"}, status: 1,
			outHas: []string{"undefined: undefinedName", "ok  \texample.com/suite/pass"}},
		{name: "-short refused", args: []string{"-short", "./pass"}, status: 2},
		{name: "-skip refused", args: []string{"-skip", "TestPeer", "./skip"}, status: 2},
		{name: "-test.short after -args refused", args: []string{"./pass", "-args", "-test.short"}, status: 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			status := run(c.args, dir, &out, &errOut)
			if status != c.status {
				t.Errorf("status %d, want %d\nstdout:\n%s\nstderr:\n%s", status, c.status, &out, &errOut)
			}
			var skips []string
			if _, list, ok := strings.Cut(out.String(), "must run:\n"); ok {
				skips = strings.Split(strings.TrimRight(list, "\n"), "\n")
			}
			if !slices.Equal(skips, c.skips) {
				t.Errorf("skip list %q, want %q", skips, c.skips)
			}
			for _, s := range c.outHas {
				if !strings.Contains(out.String()+errOut.String(), s) {
					t.Errorf("output lacks %q:\n%s%s", s, &out, &errOut)
				}
			}
			for _, s := range c.outHasNone {
				if strings.Contains(out.String(), s) {
					t.Errorf("output has %q:\n%s", s, &out)
				}
			}
		})
	}
}

func TestRefuseSkippingFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args    []string
		goflags string
		refused bool
	}{
		{[]string{"-race", "-count=1", "-timeout", "30m", "./..."}, "", false},
		{[]string{"-run", "TestX", "./..."}, "-mod=mod", false},
		{[]string{"-short", "./..."}, "", true},
		{[]string{"-short=true", "./..."}, "", true},
		{[]string{"--short", "./..."}, "", true},
		{[]string{"-skip=TestX", "./..."}, "", true},
		{[]string{"./..."}, "-short", true},
		{[]string{"./...", "-args", "-test.skip", "X"}, "", true},
	} {
		if err := refuseSkippingFlags(c.args, c.goflags); (err != nil) != c.refused {
			t.Errorf("refuseSkippingFlags(%q, GOFLAGS=%q) = %v, want refused %v", c.args, c.goflags, err, c.refused)
		}
	}
}
