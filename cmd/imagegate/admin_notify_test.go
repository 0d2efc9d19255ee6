package main

import (
	"bytes"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminNotifyCommand runs a gateway process with two accounts and
// mails them a notice with `imagegate admin notify --all --wait`.
func TestAdminNotifyCommand(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-notify-012345"
	dir := t.TempDir()
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", dir, "--admin-token", admin)
	waitReady(t, g.url)
	recipients := []string{"first-cli@example.com", "second-cli@example.com"}
	for _, addr := range recipients {
		resp, err := client.Post(g.url+"/v1/auth/signup", "application/json",
			strings.NewReader(`{"email":"`+addr+`","password":"a long enough passphrase","over_18":true}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 202 {
			t.Fatalf("signup %s: %d", addr, resp.StatusCode)
		}
	}
	tpl := filepath.Join(t.TempDir(), "notice.txt")
	if err := os.WriteFile(tpl, []byte("Dear {{email}},\nwe found a problem on {{date}}.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runAdminNotify(t.Context(), append(args, "--gateway", g.url, "--admin-token", admin), &out, &errOut)
		return out.String(), err
	}
	out, err := run("--template", tpl, "--all", "--subject", "CLI incident notice", "--rate", "100", "--wait", "--poll", "20ms")
	if err != nil {
		t.Fatalf("admin notify: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "done") || !strings.Contains(last, "2 recipients: 2 sent") {
		t.Errorf("progress:\n%s", out)
	}
	if !strings.HasPrefix(lines[0], "notify-1 started") {
		t.Errorf("start line: %q", lines[0])
	}

	got := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(dir, "outbox", "*.eml"))
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(r)
		if err == nil && m.Header.Get("Subject") == "CLI incident notice" {
			got[m.Header.Get("To")]++
		}
		r.Close()
	}
	for _, addr := range recipients {
		if got["<"+addr+">"]+got[addr] != 1 {
			t.Errorf("%s got the notice %d times (outbox: %v)", addr, got["<"+addr+">"]+got[addr], got)
		}
	}

	if out, err := run("--status", "notify-1"); err != nil || !strings.Contains(out, "notify-1  done") {
		t.Errorf("--status: %q, %v", out, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.txt")
	os.WriteFile(bad, []byte("Dear {{name}}"), 0o600)
	for name, args := range map[string][]string{
		"no template":         {"--all"},
		"no recipients":       {"--template", tpl},
		"both":                {"--template", tpl, "--all", "--accounts", "acct_x"},
		"unknown placeholder": {"--template", bad, "--all"},
		"unknown job":         {"--status", "notify-99"},
	} {
		if _, err := run(args...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, addr := range recipients {
		if strings.Contains(g.logs(), addr) {
			t.Errorf("%s is in the gateway's logs", addr)
		}
	}
}
