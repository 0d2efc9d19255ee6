// Command noskip is how `make test` runs the suite: it runs `go test -json`
// with the arguments given, prints what a plain `go test` would (the
// output of each failed or skipped test, each package's summary, build
// errors), and fails the run when go test fails or when any test skipped.
//
// A test that skips because its peer is missing would otherwise turn a
// regression into a green run; under `make test` every test must run, so a
// skip is a failure whatever its reason, and the flags that skip tests on
// purpose (-short, -skip) are refused.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], "", os.Stdout, os.Stderr))
}

// run runs `$GO test -json args` in dir ("" for the working directory)
// and returns the exit status: go test's own when it failed, 1 when it
// passed with skips, 2 when the arguments would skip tests on purpose.
func run(args []string, dir string, stdout, stderr io.Writer) int {
	if err := refuseSkippingFlags(args, os.Getenv("GOFLAGS")); err != nil {
		fmt.Fprintln(stderr, "noskip:", err)
		return 2
	}
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	cmd := exec.Command(goBin, append([]string{"test", "-json"}, args...)...)
	cmd.Dir = dir
	cmd.Stderr = stderr
	events, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(stderr, "noskip:", err)
		return 2
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "noskip:", err)
		return 2
	}
	skips, scanErr := scan(events, stdout)
	io.Copy(io.Discard, events) // let go test finish writing if scan stopped early
	waitErr := cmd.Wait()

	status := 0
	var exit *exec.ExitError
	switch {
	case errors.As(waitErr, &exit):
		status = exit.ExitCode()
	case waitErr != nil:
		fmt.Fprintln(stderr, "noskip:", waitErr)
		status = 2
	}
	if scanErr != nil {
		fmt.Fprintln(stderr, "noskip: reading go test -json:", scanErr)
		status = max(status, 2)
	}
	if len(skips) > 0 {
		fmt.Fprintf(stdout, "noskip: %d test(s) skipped; under make test every test must run:\n", len(skips))
		for _, s := range skips {
			fmt.Fprintln(stdout, "  "+s)
		}
		status = max(status, 1)
	}
	return status
}

// refuseSkippingFlags reports the first argument (or GOFLAGS word) that
// asks go test to leave tests out on purpose.
func refuseSkippingFlags(args []string, goflags string) error {
	for _, a := range append(args, strings.Fields(goflags)...) {
		// Also after -args: -test.short there reaches every test binary.
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && (name == "short" || name == "skip" || name == "test.short" || name == "test.skip") {
			return fmt.Errorf("%s leaves tests out on purpose; the whole suite runs without it", a)
		}
	}
	return nil
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output and build-fail
}

// scan reads go test's JSON events, writes to out what plain `go test`
// would print, and returns each skipped test as "package test: reason".
func scan(r io.Reader, out io.Writer) ([]string, error) {
	type key struct{ pkg, test string }
	held := map[key][]string{} // output of tests still running
	var skips []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Not an event (go test wrote something of its own): pass it on.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		k := key{e.Package, e.Test}
		switch {
		case e.Action == "build-output":
			io.WriteString(out, e.Output)
		case e.Test == "" && e.Action == "output":
			if strings.TrimSpace(e.Output) != "PASS" {
				io.WriteString(out, e.Output)
			}
		case e.Test == "" && e.Action == "fail":
			// A crashed or timed-out binary leaves tests without an end:
			// their output explains the failure.
			for hk, lines := range held {
				if hk.pkg == e.Package {
					io.WriteString(out, strings.Join(lines, ""))
					delete(held, hk)
				}
			}
		case e.Test == "":
			// A package's start, pass, or skip ("no test files").
		case e.Action == "output":
			if !isProgress(e.Output) {
				held[k] = append(held[k], e.Output)
			}
		case e.Action == "pass":
			delete(held, k)
		case e.Action == "fail":
			io.WriteString(out, strings.Join(held[k], ""))
			delete(held, k)
		case e.Action == "skip":
			io.WriteString(out, strings.Join(held[k], ""))
			skips = append(skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, skipReason(held[k])))
			delete(held, k)
		}
	}
	return skips, sc.Err()
}

// isProgress reports the lines -v adds that plain go test does not print.
func isProgress(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// skipReason is the message a test gave t.Skip: its output between the
// "--- SKIP" line's neighbours, trimmed.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--- SKIP") {
			msg = append(msg, t)
		}
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " ")
}
