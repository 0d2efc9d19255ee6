package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAdminDSARCommands runs a gateway process and tracks rights
// requests with `imagegate admin dsar add|list|close`.
func TestAdminDSARCommands(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-dsar-0123456"
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-token", admin)
	waitReady(t, g.url)
	run := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runAdminDSAR(t.Context(), append(args, "--gateway", g.url, "--admin-token", admin), &out, &errOut)
		return out.String(), err
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("admin dsar %v: %v", args, err)
		}
		return out
	}

	late := time.Now().UTC().AddDate(0, 0, -40).Format(time.DateOnly)
	if out := mustRun("add", "--email", "late@example.com", "--kind", "access", "--received", late, "--note", "asked twice"); !strings.Contains(out, "dsar-1 recorded") || !strings.Contains(out, "overdue by 10 days") {
		t.Errorf("add (late): %q", out)
	}
	if out := mustRun("add", "--email", "fresh@example.com", "--kind", "deletion"); !strings.Contains(out, "dsar-2 recorded") || !strings.Contains(out, "30 days left") {
		t.Errorf("add (today): %q", out)
	}
	mustRun("add", "--email", "mid@example.com", "--kind", "objection", "--received", time.Now().UTC().AddDate(0, 0, -10).Format(time.DateOnly))

	rows := func(out string) string {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.HasPrefix(lines[0], "ID") {
			t.Fatalf("no table:\n%s", out)
		}
		var ids []string
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			ids = append(ids, f[0]+" "+f[1])
		}
		return fmt.Sprint(ids)
	}
	out := mustRun("list")
	if got, want := rows(out), "[dsar-1 overdue dsar-3 open dsar-2 open]"; got != want {
		t.Errorf("list: %s, want %s\n%s", got, want, out)
	}
	if !strings.Contains(out, `"late@example.com"`) || !strings.Contains(out, `"asked twice"`) {
		t.Errorf("list does not show email and note:\n%s", out)
	}

	if out := mustRun("close", "--id", "dsar-3", "--note", "objection upheld"); !strings.Contains(out, "dsar-3 closed on "+time.Now().UTC().Format(time.DateOnly)) {
		t.Errorf("close: %q", out)
	}
	if got, want := rows(mustRun("list")), "[dsar-1 overdue dsar-2 open]"; got != want {
		t.Errorf("list after close: %s, want %s", got, want)
	}
	if got, want := rows(mustRun("list", "--closed")), "[dsar-1 overdue dsar-2 open dsar-3 closed]"; got != want {
		t.Errorf("list --closed: %s, want %s", got, want)
	}

	for name, args := range map[string][]string{
		"bad kind":      {"add", "--email", "x@example.com", "--kind", "everything"},
		"no email":      {"add", "--kind", "access"},
		"close twice":   {"close", "--id", "dsar-3"},
		"close unknown": {"close", "--id", "dsar-99"},
		"no id":         {"close"},
		"bad command":   {"remove"},
	} {
		if _, err := run(args...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := runAdminDSAR(t.Context(), nil, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("no command: accepted")
	}
	if strings.Contains(g.logs(), "late@example.com") {
		t.Error("a requester's email is in the gateway's logs")
	}
}
