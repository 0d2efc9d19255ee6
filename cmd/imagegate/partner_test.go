package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestPartnerCommands runs a gateway process and manages a partner with
// `imagegate partner add|list|update|disable`; each step is checked
// against what the gateway then does with the partner's keys.
func TestPartnerCommands(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-partner-0123"
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--admin-token", admin)
	waitReady(t, g.url)
	run := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(t.Context(), append(append([]string{"partner"}, args...), "--gateway", g.url, "--admin-token", admin), &out, &errOut)
		return out.String(), err
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("partner %v: %v", args, err)
		}
		return out
	}
	generate := func(origin, pk string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", g.url+"/v1/images/generations", strings.NewReader(`{"prompt":"cga palette","size":"256x256"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Imagegate-Key", pk)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	out := mustRun("add", "--name", "Shop", "--origin", "https://SHOP.example:443", "--origin", "http://127.0.0.2:9000", "--quota", "100", "--rate", "30")
	id := regexp.MustCompile(`partner (ptr_[a-z0-9]+) added`).FindStringSubmatch(out)
	pk := regexp.MustCompile(`publishable key: (pk_\S+)`).FindStringSubmatch(out)
	if id == nil || pk == nil || !strings.Contains(out, "secret key:      psk_") || !strings.Contains(out, `data-key="`+pk[1]+`"`) {
		t.Fatalf("add printed:\n%s", out)
	}
	if code := generate("https://shop.example", pk[1]); code != http.StatusOK {
		t.Errorf("generation from the partner's origin: %d", code)
	}
	if code := generate("https://other.example", pk[1]); code != http.StatusForbidden {
		t.Errorf("generation from another origin: %d, want 403", code)
	}

	out = mustRun("list")
	if !strings.Contains(out, id[1]) || !strings.Contains(out, "active") || !strings.Contains(out, "1/100") ||
		!strings.Contains(out, "https://shop.example http://127.0.0.2:9000") {
		t.Errorf("list:\n%s", out)
	}
	var listed struct {
		Partners []struct {
			ID    string `json:"id"`
			Usage []struct {
				Images int `json:"images"`
			} `json:"usage"`
		} `json:"partners"`
	}
	if err := json.Unmarshal([]byte(mustRun("list", "--json")), &listed); err != nil || len(listed.Partners) != 1 || len(listed.Partners[0].Usage) != 1 || listed.Partners[0].Usage[0].Images != 1 {
		t.Errorf("list --json: %+v %v", listed, err)
	}

	if out := mustRun("update", "--id", id[1], "--origin", "https://other.example", "--quota", "5"); !strings.Contains(out, "origins https://other.example, quota 5/month") {
		t.Errorf("update: %q", out)
	}
	if code := generate("https://shop.example", pk[1]); code != http.StatusForbidden {
		t.Errorf("an origin removed by update still works: %d", code)
	}
	if code := generate("https://other.example", pk[1]); code != http.StatusOK {
		t.Errorf("the origin added by update: %d", code)
	}
	if out := mustRun("disable", "--id", id[1]); !strings.Contains(out, "disabled") {
		t.Errorf("disable: %q", out)
	}
	if code := generate("https://other.example", pk[1]); code != http.StatusForbidden {
		t.Errorf("a disabled partner's key: %d", code)
	}
	if out := mustRun("update", "--id", id[1], "--enable"); !strings.Contains(out, "active") {
		t.Errorf("enable: %q", out)
	}

	for name, args := range map[string][]string{
		"bad origin":     {"add", "--name", "X", "--origin", "https://x.example/path", "--quota", "1"},
		"wildcard":       {"add", "--name", "X", "--origin", "https://*.example", "--quota", "1"},
		"no quota":       {"add", "--name", "X", "--origin", "https://x.example"},
		"unknown plan":   {"add", "--name", "X", "--origin", "https://x.example", "--quota", "1", "--plan", "gold"},
		"unknown id":     {"disable", "--id", "ptr_nope"},
		"nothing to do":  {"update", "--id", id[1]},
		"no id":          {"disable"},
		"bad subcommand": {"remove"},
	} {
		if _, err := run(args...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if out := mustRun("list"); strings.Count(out, "ptr_") != 1 {
		t.Errorf("refused commands added partners:\n%s", out)
	}
}
