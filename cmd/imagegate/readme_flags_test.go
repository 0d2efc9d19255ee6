package main

import (
	"os"
	"strings"
	"testing"
)

// readmeSection is the README's section under heading, up to the next
// heading of its level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i := strings.Index(readme, heading+"\n")
	if i < 0 {
		t.Fatalf("README has no section %s", heading)
	}
	section := readme[i+len(heading):]
	if j := strings.Index(section, "\n### "); j >= 0 {
		section = section[:j]
	}
	return section
}

// TestReadmeDocumentsTheKeyServiceFlags checks the README's configuration
// tables against the commands' own help: every flag of `keys serve`, and
// every key-service flag of serve, has a row naming it (and, for those of
// its own, its environment variable).
func TestReadmeDocumentsTheKeyServiceFlags(t *testing.T) {
	t.Parallel()
	keys := readmeSection(t, "### `imagegate keys serve`")
	for name, f := range commandFlags(t, "keys", "serve") {
		if !strings.Contains(keys, "`--"+name+"`") {
			t.Errorf("README's keys serve table lacks --%s", name)
		}
		if !strings.HasPrefix(name, "log-") && !strings.Contains(keys, "`"+f.env+"`") {
			t.Errorf("README's keys serve table lacks %s", f.env)
		}
	}
	serve := readmeSection(t, "### `imagegate serve` (the default command)")
	var found int
	for name, f := range commandFlags(t, "serve") {
		if !strings.HasPrefix(name, "key-") {
			continue
		}
		found++
		if !strings.Contains(serve, "| `--"+name+"` | `"+f.env+"` |") {
			t.Errorf("README's serve table lacks a row for --%s (%s)", name, f.env)
		}
	}
	if found != 4 {
		t.Errorf("serve has %d key flags, want --key-dir and the three --key-service-*", found)
	}
}
