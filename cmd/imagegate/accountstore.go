package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
)

// accountStore is what the composition root needs of the account store:
// the embedded bbolt store or the PostgreSQL one.
type accountStore interface {
	gateway.Store
	RunSweeper(ctx context.Context, r store.Retention, interval time.Duration, logger *slog.Logger, report func(store.SweepReport))
	Close() error
}

// openAccountStore opens PostgreSQL when --database-url is set (applying
// pending migrations under their lock), the bbolt file otherwise. The key
// files are in the data directory (or --key-dir), or with PostgreSQL
// behind the fleet's key service (--key-service-url).
func openAccountStore(ctx context.Context, cfg serveConfig, logger *slog.Logger) (accountStore, error) {
	if err := cfg.KeyService.check(cfg.DatabaseURL, cfg.KeyDir); err != nil {
		return nil, err
	}
	if cfg.DatabaseURL == "" {
		return store.Open(store.Config{Path: filepath.Join(cfg.DataDir, "imagegate.db")})
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	db, err := openPostgres(octx, cfg.DatabaseURL, cmp.Or(cfg.KeyDir, cfg.DataDir), cfg.KeyService)
	if err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	logger.Info("account store", "postgres", db.Pool().Config().ConnConfig.Host, "database", db.Pool().Config().ConnConfig.Database,
		"keys", cmp.Or(keyServiceHost(cfg.KeyService.URL), "key files"))
	return db, nil
}

// openPostgres opens the PostgreSQL store with the key files in keyDir,
// or those of the key service ks names.
func openPostgres(ctx context.Context, url, keyDir string, ks keyServiceFlags) (*postgres.DB, error) {
	cfg := postgres.Config{URL: url}
	keys, err := ks.client()
	if err != nil {
		return nil, err
	}
	if keys != nil {
		cfg.Keys = keys
	} else {
		if err := os.MkdirAll(keyDir, 0o700); err != nil {
			return nil, fmt.Errorf("--key-dir: %w", err)
		}
		cfg.KeyPath = filepath.Join(keyDir, "imagegate.db")
	}
	return postgres.Open(ctx, cfg)
}

// keyServiceHost is the host of a key service URL, for the log.
func keyServiceHost(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := neturl.Parse(raw)
	if err != nil {
		return "key service"
	}
	return "key service " + u.Host
}

const migrateUsage = `imagegate migrate — apply the PostgreSQL account store's schema migrations

Usage:
  imagegate migrate --database-url postgres://…

Gateways apply pending migrations when they start (one at a time, under a
lock); run this to apply them ahead of a rollout instead.
`

// runMigrate applies pending migrations and says which.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	url := fs.String("database-url", "", "PostgreSQL URL of the account store")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *url == "" {
		fmt.Fprint(stderr, migrateUsage)
		return errors.New("migrate: --database-url (or IMAGEGATE_DATABASE_URL) is required")
	}
	pool, err := pgxpool.New(ctx, *url)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer pool.Close()
	applied, err := postgres.Migrate(ctx, pool)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "migrate: the schema is up to date")
		return nil
	}
	fmt.Fprintf(stdout, "migrate: applied %v\n", applied)
	return nil
}
