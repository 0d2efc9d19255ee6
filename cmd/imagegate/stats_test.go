package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatsExportCommand runs a gateway process and exports its
// statistics with `imagegate stats export`.
func TestStatsExportCommand(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-stats-0123456"
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-token", admin)
	waitReady(t, g.url)
	run := func(args ...string) (string, string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runStats(t.Context(), args, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	// A k below 10 is refused before any gateway is asked (none listens
	// at this address).
	if _, _, err := run("export", "--k", "9", "--gateway", "http://127.0.0.1:1", "--admin-token", admin); err == nil || !strings.Contains(err.Error(), "at least 10") {
		t.Errorf("k=9: %v", err)
	}

	file := filepath.Join(t.TempDir(), "stats.json")
	_, msg, err := run("export", "--k", "12", "--out", file, "--gateway", g.url, "--admin-token", admin)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	var doc struct {
		Schema string            `json:"schema"`
		K      int               `json:"k"`
		Groups []json.RawMessage `json:"groups"`
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Schema != "imagegate.stats.v1" || doc.K != 12 || doc.Groups == nil {
		t.Errorf("export file: %+v %v\n%s", doc, err, raw)
	}
	if !strings.Contains(msg, "wrote 0 groups (k=12)") {
		t.Errorf("message: %q", msg)
	}
	out, _, err := run("export", "--gateway", g.url, "--admin-token", admin)
	if err != nil || !strings.Contains(out, `"k": 10`) {
		t.Errorf("export to stdout: %v\n%s", err, out)
	}
	for name, args := range map[string][]string{
		"no command":  {},
		"bad command": {"import"},
		"no token":    {"export", "--gateway", g.url},
		"bad token":   {"export", "--gateway", g.url, "--admin-token", "wrong"},
	} {
		if _, _, err := run(args...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
