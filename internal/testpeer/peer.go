// Package testpeer starts the real protocol peers imagegate's tests talk to
// (an S3 server, stripe-mock, an SMTP server) as child processes on
// loopback, and stops them when the test ends.
//
// The peers are installed by `make tools` (which `make test` runs) into
// .tools/bin at the module root. When a peer is missing, a test that needs
// it is skipped under a plain `go test`, and fails under `make test`, which
// sets IMAGEGATE_TEST_REQUIRE_PEERS=1 and fails the run on any skip: CI
// must never pass by skipping.
package testpeer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv, when "1", turns a missing peer into a test failure.
const RequireEnv = "IMAGEGATE_TEST_REQUIRE_PEERS"

// ToolsEnv names a directory searched for peer binaries before PATH.
const ToolsEnv = "IMAGEGATE_TEST_TOOLS"

// startTimeout bounds how long a peer may take to become ready.
const startTimeout = 60 * time.Second

// Missing skips or fails t (see the package comment) because a peer is not
// installed; how says what installs it.
func Missing(t testing.TB, what, how string) {
	t.Helper()
	Unavailable(t, "%s is not installed (%s); `make tools` installs it", what, how)
}

// Unavailable skips t under a plain `go test` because something it needs
// here (a peer, a privilege, a second loopback address) is not, and fails
// it under `make test` ($RequireEnv), where every test must run. Tests call
// it instead of t.Skip: `make test` fails on any skip (internal/noskip).
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf(format+" (%s=1: every test must run)", append(args, RequireEnv)...)
	}
	t.Skipf(format, args...)
}

// Tool returns the path of an installed peer binary: first in $ToolsEnv,
// then in .tools/bin at the module root, then on PATH.
func Tool(t testing.TB, name, how string) string {
	t.Helper()
	var dirs []string
	if d := os.Getenv(ToolsEnv); d != "" {
		dirs = append(dirs, d)
	}
	if root, err := moduleRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, ".tools", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	Missing(t, name, how)
	return ""
}

// ModuleRoot is the directory holding go.mod, for harnesses that find
// installed tools relative to it.
func ModuleRoot() (string, error) { return moduleRoot() }

// moduleRoot walks up from the working directory (a package directory
// under `go test`) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testpeer: no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a loopback TCP port that was free a moment ago. A peer
// that cannot take a listener from us must bind it itself; the small race
// with other processes is retried by Start's callers through ready().
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// RefusedPort returns a loopback TCP port that refuses connections until t
// ends: a socket is bound to it and never listens, so no other process
// can take the port in the meantime (a port merely closed again, as
// FreePort's, could be bound by any listener of a parallel test).
func RefusedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// Process is a running peer.
type Process struct {
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error // valid after done is closed
}

// Output is everything the peer wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start runs name with args (and extra environment variables), then polls
// ready until it returns nil, the process exits, or startTimeout passes.
// The process is killed when the test ends.
func Start(t testing.TB, bin string, args, env []string, ready func(ctx context.Context) error) *Process {
	t.Helper()
	p, err := start(t, bin, args, env, ready)
	if err != nil {
		t.Fatalf("%v:\n%s", err, p.Output())
	}
	return p
}

// StartOnFreePort is Start for a peer told its port on the command line:
// args builds the arguments (and ready the readiness check) for an
// address FreePort found. Should another process take the port first, the
// peer fails to listen and is started again on another.
func StartOnFreePort(t testing.TB, bin string, env []string, args func(addr string) ([]string, func(ctx context.Context) error)) (*Process, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := Addr(FreePort(t))
		a, ready := args(addr)
		p, err := start(t, bin, a, env, ready)
		if err == nil {
			return p, addr
		}
		if attempt < 5 && errors.Is(err, errExited) && strings.Contains(strings.ToLower(p.Output()), "address already in use") {
			t.Logf("testpeer: %s lost its port to another process; starting it on another", filepath.Base(bin))
			continue
		}
		t.Fatalf("%v:\n%s", err, p.Output())
	}
}

// errExited is start's error for a peer that ended before it was ready.
var errExited = errors.New("exited before becoming ready")

func start(t testing.TB, bin string, args, env []string, ready func(ctx context.Context) error) (*Process, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Process{cmd: cmd, out: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(bin), err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			cmd.Process.Kill()
		}
		<-p.done
	})

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = ready(ctx); last == nil {
			return p, nil
		}
		select {
		case <-p.done:
			return p, fmt.Errorf("%s %w (%v)", filepath.Base(bin), errExited, p.err)
		case <-ctx.Done():
			return p, fmt.Errorf("%s not ready after %s: %v", filepath.Base(bin), startTimeout, last)
		case <-tick.C:
		}
	}
}

// DialReady is a ready func for peers that are ready once they accept TCP
// connections on addr.
func DialReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Addr joins the loopback host and port.
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Buffer collects output written from any goroutine: a process's
// output, a test's log sink.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
