package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/store"
)

// readmeTOML returns the configuration-file example from the README, so
// the documentation cannot drift from what the binary accepts.
func readmeTOML(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(raw), "### The configuration file")
	if !ok {
		t.Fatal("README has no configuration-file section")
	}
	_, block, ok := strings.Cut(after, "```toml\n")
	if !ok {
		t.Fatal("README's configuration-file section has no toml block")
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	var gw gateway.Config
	var ret store.Retention
	if err := loadConfigFile(write("readme.toml", readmeTOML(t)), &gw, &ret); err != nil {
		t.Fatalf("the README's example does not load: %v", err)
	}
	if err := gw.Validate(); err != nil {
		t.Fatalf("the README's example does not validate: %v", err)
	}
	if gw.Plans.Plans["pro"].MaxSize != 1024 || gw.Plans.ImageCredits[512] != 2 || gw.RateLimits.Costs.GenerationMiss != 20 ||
		gw.LoginGuard.PerAccountSource.Window != 15*time.Minute || ret.SecurityLog != 720*time.Hour {
		t.Errorf("values not applied: plans %+v credits %v costs %+v login %+v retention %v",
			gw.Plans.Plans, gw.Plans.ImageCredits, gw.RateLimits.Costs, gw.LoginGuard.PerAccountSource, ret.SecurityLog)
	}

	for name, text := range map[string]string{
		"unknown key":     "default_plan = \"free\"\ncolour = \"blue\"\n",
		"bad side":        "[image_credits]\nlarge = 3\n",
		"bad duration":    "[retention]\nsecurity_log = \"a month\"\n",
		"unknown login":   "[rate_limits.login.per_planet]\nquota = 1\nwindow = \"1m\"\n",
		"not toml":        "plans = [\n",
		"misspelt nested": "[plans.free]\nmonthly_credit = 5\n",
	} {
		if err := loadConfigFile(write(strings.ReplaceAll(name, " ", "_")+".toml", text), &gateway.Config{}, &store.Retention{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := loadConfigFile(filepath.Join(dir, "missing.toml"), &gateway.Config{}, &store.Retention{}); err == nil {
		t.Errorf("a missing file was accepted")
	}
}
