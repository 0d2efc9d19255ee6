package testpeer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBinEnv names a directory holding initdb and postgres, searched
// before Debian's /usr/lib/postgresql/<version>/bin and PATH.
const PostgresBinEnv = "IMAGEGATE_TEST_PG_BIN"

const postgresHow = "apt-get install postgresql"

// Postgres is a throwaway PostgreSQL cluster: initdb into a temp dir, the
// server on a free loopback port with its unix socket in the same dir. It
// stops (fast shutdown) when the test that started it ends.
type Postgres struct {
	port int
	n    atomic.Int64
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPostgres starts a cluster for t and its subtests. As root it runs
// the server as the `postgres` OS user (or nobody): initdb refuses root.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin := postgresBin(t)
	cred := unprivileged(t)

	dir := t.TempDir()
	// Only the cluster's user needs to enter the temp dirs; let it
	// traverse them (not list them).
	if cred != nil {
		for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	data := filepath.Join(dir, "data")
	sock := filepath.Join(dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(sock)+len("/.s.PGSQL.65535") > 100 {
		t.Fatalf("testpeer: socket dir %s is too long for a unix socket; use a shorter test name", sock)
	}

	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}

	// The port is free only a moment ago: if another process binds it
	// first the server exits, and it is started again on another.
	for attempt := 1; ; attempt++ {
		p, out, err := startCluster(t, bin, cred, data, sock)
		if err == nil {
			return p
		}
		if attempt < 5 && strings.Contains(out, "could not bind") {
			t.Logf("testpeer: postgres lost its port to another process; starting it on another")
			continue
		}
		t.Fatalf("%v:\n%s", err, out)
	}
}

// startCluster starts the server of the cluster in data on a free port
// and waits until it accepts connections. It reports an error, with the
// server's output, if the server exits first.
func startCluster(t testing.TB, bin string, cred *syscall.Credential, data, sock string) (*Postgres, string, error) {
	t.Helper()
	port := FreePort(t)
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=127.0.0.1", "-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories="+sock, "-c", "fsync=off",
		"-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// SIGINT is PostgreSQL's fast shutdown; SIGKILL would orphan its
		// backends and shared memory.
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})

	p := &Postgres{port: port, cmd: cmd, done: done}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// Ready is asked on the cluster's own unix socket, in its private
	// directory: over TCP another server that took the port could answer.
	// The server binds its TCP port before it creates the socket.
	ready := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", sock, port)
	for {
		c, err := pgx.Connect(ctx, ready)
		if err == nil {
			c.Close(ctx)
			return p, out.String(), nil
		}
		select {
		case <-done:
			return nil, out.String(), errors.New("postgres exited before becoming ready")
		case <-ctx.Done():
			t.Fatalf("postgres not ready after %s: %v\n%s", startTimeout, err, out.String())
		case <-tick.C:
		}
	}
}

// Stop shuts the server down (fast shutdown: connections are cut) and
// waits for it, so a test can check what still works without it.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

func (p *Postgres) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

// NewDatabase creates an empty database in the cluster and returns its
// connection URL, so every test starts from nothing without paying for
// a cluster of its own.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", p.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return p.url(name)
}

// postgresBin finds the directory holding initdb: $IMAGEGATE_TEST_PG_BIN,
// the newest /usr/lib/postgresql/<version>/bin (Debian keeps them off
// PATH), then PATH.
func postgresBin(t testing.TB) string {
	t.Helper()
	var dirs []string
	if d := os.Getenv(PostgresBinEnv); d != "" {
		dirs = append(dirs, d)
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(found, func(i, j int) bool { return pgVersion(found[i]) > pgVersion(found[j]) })
	dirs = append(dirs, found...)
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	Missing(t, "PostgreSQL (initdb)", postgresHow)
	return ""
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(strings.SplitN(filepath.Base(filepath.Dir(binDir)), ".", 2)[0])
	return v
}

// unprivileged returns the credential to run the cluster under: nil when
// not root, else the postgres user (or nobody).
func unprivileged(t testing.TB) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		}
	}
	t.Fatal("testpeer: running as root and no postgres or nobody user to run PostgreSQL as")
	return nil
}
