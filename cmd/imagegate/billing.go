package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/imagegate/imagegate/store"
)

const billingUsage = `Usage:
  imagegate billing reconcile [--fix] [--data-dir DIR | --database-url URL (--key-dir DIR | --key-service-url URL --key-service-token T)]

reconcile recomputes every account's credit balance from its ledger (and
its held credits from the open holds), prints the accounts that differ and
the billing flags operators should look at (disputes, clawbacks of credits
already spent). It exits non-zero when balances differ, unless --fix sets
them to the ledger's sums (the ledger is the truth). Stop "imagegate
serve" on the data directory first: the store allows one process. With
--database-url it checks the PostgreSQL account store instead, while the
gateways run (each account is locked while it is checked and fixed).
`

// runBilling is "imagegate billing <command>": operator commands about
// credits and payments.
func runBilling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "billing", billingUsage, map[string]command{"reconcile": runReconcile}, args, stdout, stderr)
}

// ledgerChecker is what reconcile needs of either account store.
type ledgerChecker interface {
	Reconcile(fix bool) ([]store.Mismatch, error)
	BillingFlags() ([]store.BillingFlag, error)
	Close() error
}

func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("billing reconcile", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "the data directory of the store to check")
	databaseURL := fs.String("database-url", "", "check the PostgreSQL account store at this URL instead")
	keyDir := fs.String("key-dir", "", "with --database-url: the gateways' --key-dir (default --data-dir)")
	fix := fs.Bool("fix", false, "set mismatched balances to their ledger sums")
	var ks keyServiceFlags
	ks.register(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := ks.check(*databaseURL, *keyDir); err != nil {
		return fmt.Errorf("billing reconcile: %w", err)
	}
	var db ledgerChecker
	if *databaseURL != "" {
		pdb, err := openPostgres(ctx, *databaseURL, cmp.Or(*keyDir, *dataDir), ks)
		if err != nil {
			return fmt.Errorf("billing reconcile: %w", err)
		}
		db = pdb
	} else {
		path := filepath.Join(*dataDir, "imagegate.db")
		// Opening creates a missing store; a typo in --data-dir must not
		// report an empty, consistent one.
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("billing reconcile: %w", err)
		}
		bdb, err := store.Open(store.Config{Path: path})
		if err != nil {
			return fmt.Errorf("billing reconcile: %w (is imagegate serve running on %s? stop it first)", err, *dataDir)
		}
		db = bdb
	}
	defer db.Close()

	mismatches, err := db.Reconcile(*fix)
	if err != nil {
		return fmt.Errorf("billing reconcile: %w", err)
	}
	for _, m := range mismatches {
		fmt.Fprintf(stdout, "mismatch account=%s balance=%d ledger=%d held=%d open_holds=%d\n",
			m.AccountID, m.Balance, m.LedgerSum, m.Held, m.HoldSum)
	}
	flags, err := db.BillingFlags()
	if err != nil {
		return fmt.Errorf("billing reconcile: %w", err)
	}
	for _, f := range flags {
		fmt.Fprintf(stdout, "flag id=%s account=%s reason=%s ref=%s", f.ID, f.AccountID, f.Reason, f.Ref)
		if f.Status != "" {
			fmt.Fprintf(stdout, " status=%s", f.Status)
		}
		fmt.Fprintf(stdout, " credits=%d", f.Credits)
		if f.Currency != "" {
			fmt.Fprintf(stdout, " money=%d %s", f.MoneyMinor, f.Currency)
		}
		fmt.Fprintf(stdout, " time=%s\n", f.Time.UTC().Format(time.RFC3339))
	}
	switch {
	case len(mismatches) == 0:
		fmt.Fprintf(stdout, "ok: every balance equals its ledger; %d billing flag(s)\n", len(flags))
	case *fix:
		fmt.Fprintf(stdout, "fixed: %d account(s) set to their ledger; %d billing flag(s)\n", len(mismatches), len(flags))
	default:
		return fmt.Errorf("billing reconcile: %d account(s) differ from their ledger; rerun with --fix to set them from it", len(mismatches))
	}
	return nil
}
