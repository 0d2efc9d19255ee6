package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// TestSIGKILLMidErasureThenRestartCompletesIt kills the gateway with
// SIGKILL while an erasure is half done and checks the next start finishes
// it. The kill lands at a known point: the mail server accepts the
// connection and never answers, so the erasure has removed the data and
// waits on its confirmation mail, the job's last step, when it dies.
func TestSIGKILLMidErasureThenRestartCompletesIt(t *testing.T) {
	t.Parallel()
	const (
		admin    = "admin-token-erasure-0123456"
		email    = "killed-mid-erasure@example.com"
		password = "a long enough passphrase"
	)
	dir := t.TempDir()
	args := []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--admin-token", admin}

	// First run: an account with private outputs.
	g := start(t, args...)
	waitReady(t, g.url)
	user := newJarClient(t)
	user.expect(t, "POST", g.url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
	user.expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
	var objects []string
	for _, prompt := range []string{"a lighthouse nobody else asked for", "a harbour nobody else asked for"} {
		raw := user.expect(t, "POST", g.url+"/v1/images/generations", `{"prompt":"`+prompt+`","size":"256x256","private":true}`, 200)
		var out struct {
			Data []struct{ URL string } `json:"data"`
		}
		if err := json.Unmarshal(raw, &out); err != nil || len(out.Data) != 1 {
			t.Fatalf("generation: %v %s", err, raw)
		}
		u, _ := url.Parse(out.Data[0].URL)
		objects = append(objects, path.Base(u.Path))
	}
	stop(t, g)
	for _, name := range objects {
		if len(objectFiles(t, dir, name)) != 1 {
			t.Fatalf("output %s is not in the object store before the erasure", name)
		}
	}

	// Second run: mail goes to a server that accepts and stalls.
	smtp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := smtp.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never greeted
		}
	}()
	g = start(t, append(args, "--smtp-url", "smtp://"+smtp.Addr().String(), "--mail-from", "Site <no-reply@example.com>")...)
	waitReady(t, g.url)
	user = newJarClient(t)
	user.expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
	user.expect(t, "DELETE", g.url+"/v1/account", `{"password":"`+password+`"}`, 202)
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(60 * time.Second):
		t.Fatalf("the erasure never reached its confirmation mail:\n%s", g.logs())
	}
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	g.cmd.Wait()

	// The kill landed mid-erasure: the data is gone, the job is not.
	db, err := store.Open(store.Config{Path: filepath.Join(dir, "imagegate.db")})
	if err != nil {
		t.Fatalf("the store does not open after SIGKILL: %v", err)
	}
	jobs, err := db.PendingErasures()
	db.Close()
	if err != nil || len(jobs) != 1 {
		t.Fatalf("pending erasures after the kill: %+v, %v; want the one that was cut off", jobs, err)
	}

	// Third run, with working mail: the erasure completes.
	g = start(t, args...)
	waitReady(t, g.url)
	adminClient := newJarClient(t)
	adminClient.header = http.Header{"Authorization": {"Bearer " + admin}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		raw := adminClient.expect(t, "GET", g.url+"/v1/admin/accounts/erasures", "", 200)
		if bytes.Equal(bytes.TrimSpace(raw), []byte(`{"data":[]}`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the erasure did not complete after restart: %s\n%s", raw, g.logs())
		}
		time.Sleep(20 * time.Millisecond) // polling for the lifecycle pass the restart starts
	}
	if !outboxHas(t, dir, email, "Your account has been deleted") {
		t.Errorf("no deletion confirmation in the outbox after the resumed erasure")
	}
	newJarClient(t).expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 401)
	for _, name := range objects {
		if files := objectFiles(t, dir, name); len(files) != 0 {
			t.Errorf("output %s survived the erasure: %v", name, files)
		}
	}
}

// jarClient is an HTTP client with a cookie jar, like a browser.
type jarClient struct {
	c      *http.Client
	header http.Header
}

func newJarClient(t *testing.T) *jarClient {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &jarClient{c: &http.Client{Jar: jar, Timeout: 60 * time.Second}}
}

// expect sends a JSON request and fails t unless the answer has status.
func (j *jarClient) expect(t *testing.T, method, u, body string, status int) []byte {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range j.header {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := j.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: %d %s, want %d", method, u, resp.StatusCode, raw, status)
	}
	return raw
}

// stop ends a gateway gracefully and waits for it.
func stop(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("the gateway did not exit cleanly: %v\n%s", err, p.logs())
	}
}

// objectFiles lists the files under <dir>/objects named name.
func objectFiles(t *testing.T, dir, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(filepath.Join(dir, "objects"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			found = append(found, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// outboxHas reports whether <dir>/outbox holds a message to addr with
// subject.
func outboxHas(t *testing.T, dir, addr, subject string) bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, "outbox", e.Name()))
		if err == nil && bytes.Contains(raw, []byte("\r\nTo: <"+addr+">")) && bytes.Contains(raw, []byte("Subject: "+subject)) {
			return true
		}
	}
	return false
}
