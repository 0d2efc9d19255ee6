package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
)

const storeUsage = `imagegate store — move the account store

Usage:
  imagegate store copy --from bolt:DATA_DIR --to postgres://…

copy moves a single-node deployment's account store (the bbolt file in
DATA_DIR, with the gateway stopped) into an empty PostgreSQL database, in
one transaction, and verifies it by row counts and checksums. Sealed data
is copied sealed: run the gateways with --key-dir DATA_DIR (or a copy of
its imagegate.db.keys, .daykeys and .reportkeys files), or, for gateways
on separate hosts, serve those files with "imagegate keys serve --key-dir
DATA_DIR" and start the gateways with --key-service-url.
`

func runStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "store", storeUsage, map[string]command{"copy": runStoreCopy}, args, stdout, stderr)
}

func runStoreCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("store copy", flag.ContinueOnError)
	from := fs.String("from", "", "bolt:DATA_DIR, the data directory of the embedded store (gateway stopped)")
	to := fs.String("to", "", "PostgreSQL URL of an empty database")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	dir, ok := strings.CutPrefix(*from, "bolt:")
	if !ok || dir == "" || *to == "" {
		fmt.Fprint(stderr, storeUsage)
		return errors.New("store copy: --from bolt:DATA_DIR and --to postgres://… are required")
	}
	path := filepath.Join(dir, "imagegate.db")
	// Opening creates a missing store; a typo must not copy an empty one.
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	src, err := store.Open(store.Config{Path: path})
	if err != nil {
		return fmt.Errorf("store copy: %w (is imagegate serve running on %s? stop it first)", err, dir)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, postgres.Config{URL: *to, KeyPath: path})
	if err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	defer dst.Close()
	rep, err := dst.CopyFromBolt(ctx, src)
	if err != nil {
		return fmt.Errorf("store copy: %w", err)
	}
	for _, t := range []string{"accounts", "sessions", "api_keys", "ledger", "holds", "consents", "security_log", "billing",
		"webhook_events", "generations", "objects", "object_refs", "doomed_objects", "erasures", "reports", "dsar_requests", "notify_jobs"} {
		fmt.Fprintf(stdout, "%-16s %d\n", t, rep.Counts[t])
	}
	for _, t := range []string{"accounts", "ledger", "generations", "objects", "reports"} {
		fmt.Fprintf(stdout, "sha256 %-12s %s\n", t, rep.Checksums[t])
	}
	fmt.Fprintf(stdout, "ok: copied and verified; start the gateways with --database-url and --key-dir %s (or serve its key files with imagegate keys serve --key-dir %s)\n", dir, dir)
	return nil
}
