package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// TestAdminLiftsSuspension suspends an account in a data directory the way
// moderation does, runs a gateway on it, reviews it with `imagegate admin
// suspensions` and lifts it with `imagegate admin lift-suspension`; the
// store then holds an active account and the lift in its security log.
func TestAdminLiftsSuspension(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-suspensions-0123"
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "imagegate.db")
	db, err := store.Open(store.Config{Path: dbPath})
	if err != nil {
		t.Fatal(err)
	}
	acct, err := db.CreateAccount(store.NewAccount{Email: "lift@example.com", PasswordHash: "x", Plan: "free", AgeAttested: time.Now()})
	if err == nil {
		err = db.SetStatus(acct.ID, store.StatusSuspended)
	}
	if err == nil {
		err = db.LogSecurityEvent(store.SecurityEvent{Kind: "account_suspended", AccountID: acct.ID, Detail: "moderation category=sexual_minors report=rpt_cli"})
	}
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", dir, "--admin-token", admin)
	waitReady(t, g.url)
	flags := []string{"--gateway", g.url, "--admin-token", admin}
	var out, errOut bytes.Buffer
	if err := runAdminSuspensions(t.Context(), flags, &out, &errOut); err != nil {
		t.Fatalf("admin suspensions: %v\n%s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], acct.ID) || !strings.Contains(lines[1], "report=rpt_cli") {
		t.Fatalf("review lists:\n%s", out.String())
	}
	if err := runAdminLiftSuspension(t.Context(), flags, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--account") {
		t.Errorf("lift without --account: %v", err)
	}
	out.Reset()
	if err := runAdminLiftSuspension(t.Context(), append(flags, "--account", acct.ID), &out, &errOut); err != nil {
		t.Fatalf("admin lift-suspension: %v", err)
	}
	if !strings.Contains(out.String(), acct.ID) {
		t.Errorf("lift printed %q", out.String())
	}
	if err := runAdminLiftSuspension(t.Context(), append(flags, "--account", acct.ID), &out, &errOut); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("second lift: %v, want a 409", err)
	}
	out.Reset()
	if err := runAdminSuspensions(t.Context(), flags, &out, &errOut); err != nil || out.String() != "no suspended accounts\n" {
		t.Errorf("review after the lift: %q %v", out.String(), err)
	}
	stop(t, g)

	db, err = store.Open(store.Config{Path: dbPath})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if a, err := db.Account(acct.ID); err != nil || a.Status != store.StatusActive {
		t.Errorf("account after the lift: %+v %v", a, err)
	}
	events, err := db.SecurityEvents(acct.ID)
	if err != nil || len(events) != 2 || events[1].Kind != "account_unsuspended" || events[1].IP == "" {
		t.Errorf("security log of the account: %+v %v", events, err)
	}
}
