package main

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
)

// TestAdminReportsListsHeldReports runs a gateway process, has a visitor
// send a prompt the built-in policy reports as apparent CSAM, and lists
// the report with `imagegate admin reports`.
func TestAdminReportsListsHeldReports(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-reports-0123"
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-token", admin)
	waitReady(t, g.url)

	var out, errOut bytes.Buffer
	if err := runAdminReports(t.Context(), []string{"--gateway", g.url, "--admin-token", admin}, &out, &errOut); err != nil {
		t.Fatalf("admin reports: %v\n%s", err, errOut.String())
	}
	if got := out.String(); got != "no reports under legal hold\n" {
		t.Errorf("empty store: %q", got)
	}

	resp, err := client.Post(g.url+"/v1/images/generations", "application/json",
		strings.NewReader(`{"prompt":"loli \u001b[2J marker-cli","size":"256x256"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("CSAM prompt: %d, want 400", resp.StatusCode)
	}

	out.Reset()
	if err := runAdminReports(t.Context(), []string{"--gateway", g.url, "--admin-token", admin}, &out, &errOut); err != nil {
		t.Fatalf("admin reports: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("want a header and one report:\n%s", out.String())
	}
	row := regexp.MustCompile(`^rpt_\w+\s+\S+Z\s+365\s+sexual_minors\s+prompt\s+anonymous \(127\.0\.0\.1\)\s+-\s+"loli \\x1b\[2J marker-cli"$`)
	if !row.MatchString(lines[1]) {
		t.Errorf("report row %q does not match %s", lines[1], row)
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Error("a control character from the prompt reached the terminal")
	}

	out.Reset()
	if err := runAdminReports(t.Context(), []string{"--gateway", g.url, "--admin-token", admin, "--json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var answer struct {
		Reports []struct {
			ID, Prompt, Account string
			Params              map[string]string
		}
	}
	if err := json.Unmarshal(out.Bytes(), &answer); err != nil || len(answer.Reports) != 1 || answer.Reports[0].Params["size"] != "256x256" {
		t.Errorf("--json: %v %s", err, out.String())
	}

	if err := runAdminReports(t.Context(), []string{"--gateway", g.url, "--admin-token", "wrong-token-0123456789"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong token: %v, want a 401 error", err)
	}
	if err := runAdminReports(t.Context(), []string{"--gateway", g.url}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--admin-token") {
		t.Errorf("no token: %v", err)
	}
}
