// Command imagegate is the whole imagegate system in one binary: the HTTP
// gateway (serve), the inference tier (inference), and operator commands.
//
// Every flag can also be set through an IMAGEGATE_* environment variable
// (the flag name upper-cased, dashes as underscores); a flag given on the
// command line wins over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "imagegate:", err)
		}
		os.Exit(2)
	}
}

const usage = `imagegate — AI image-generation gateway

Usage:
  imagegate [serve] [flags]     run the gateway (and, with no --inference, the inference tier in-process)
  imagegate inference [flags]   run the inference tier alone
  imagegate billing reconcile   check balances against the ledger, list billing flags
  imagegate migrate [flags]     apply the PostgreSQL account store's schema migrations (--database-url)
  imagegate store copy --from bolt:DIR --to postgres://…   move the embedded account store to PostgreSQL
  imagegate keys serve [flags]  keep the key files for a fleet of gateways on one PostgreSQL (--key-service-url)
  imagegate purge [flags]       purge outputs from the CDN and every gateway (--object, --tag, --prefix, --everything)
  imagegate admin <command>     operator commands: delete-account, erasures, reports, dsar, notify (run "imagegate admin help")
  imagegate partner <command>   partner sites embedding the generator: add, list, update, disable
  imagegate stats export [--out FILE] [--k 10]   aggregated, anonymized generation statistics
  imagegate version             print the version

Run "imagegate <command> -h" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, stdout, stderr)
	case "inference":
		return runInference(ctx, args, stdout, stderr)
	case "billing":
		return runBilling(ctx, args, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args, stdout, stderr)
	case "store":
		return runStore(ctx, args, stdout, stderr)
	case "keys":
		return runKeys(ctx, args, stdout, stderr)
	case "purge":
		return runPurge(ctx, args, stdout, stderr)
	case "admin":
		return runAdmin(ctx, args, stdout, stderr)
	case "partner":
		return runPartner(ctx, args, stdout, stderr)
	case "stats":
		return runStats(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "imagegate", version)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q must be text or json", format)
}
