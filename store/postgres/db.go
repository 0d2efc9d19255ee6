package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/imagegate/imagegate/store"
)

// Config says which database to use and where the key files are.
type Config struct {
	// URL is a PostgreSQL connection string (postgres://… or key=value).
	URL string
	// KeyPath is the path prefix of the key files, as store.Config.Path:
	// KeyPath+".keys", ".daykeys" and ".reportkeys". Every gateway on the
	// database must open the same files.
	KeyPath string
	// Keys, when set, keeps the key slots instead of KeyPath's files: a
	// key service client (store/keyservice) that every gateway of a fleet
	// shares, so none needs the files on its own disk. The DB closes it.
	Keys store.KeyBackend
	// Now is the clock (time.Now). Tests pass a fake one.
	Now func() time.Time
	// Timeout bounds each store operation (10 s): the gateway's store
	// interfaces carry no context.
	Timeout time.Duration
	// MaxConns caps the pool (pgxpool's default when zero).
	MaxConns int32
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("postgres: database URL is required"))
	}
	if c.KeyPath == "" && c.Keys == nil {
		errs = append(errs, errors.New("postgres: key path (or a key service) is required"))
	}
	if c.KeyPath != "" && c.Keys != nil {
		errs = append(errs, errors.New("postgres: a key path and a key service are exclusive"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("postgres: timeout must not be negative"))
	}
	if c.MaxConns < 0 {
		errs = append(errs, errors.New("postgres: max conns must not be negative"))
	}
	return errors.Join(errs...)
}

// DB is the account store on PostgreSQL. It is safe for concurrent use,
// and any number of processes may share one database.
type DB struct {
	pool    *pgxpool.Pool
	keys    *store.Keyring
	index   atomic.Pointer[indexKey]
	now     func() time.Time
	timeout time.Duration
	// jobHolder names this client in job leases (one per Open).
	jobHolder string
}

// Open connects, applies pending migrations (under an advisory lock) and
// opens the key files (or takes cfg.Keys, which it closes on failure too).
func Open(ctx context.Context, cfg Config) (_ *DB, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		if cfg.Keys != nil {
			cfg.Keys.Close()
		}
		return nil, fmt.Errorf("postgres: parse database URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		if cfg.Keys != nil {
			cfg.Keys.Close()
		}
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db := &DB{pool: pool, now: cfg.Now, timeout: cfg.Timeout, jobHolder: store.NewID("holder_")}
	where := "the key file " + cfg.KeyPath + ".keys"
	if cfg.Keys != nil {
		db.keys = store.NewKeyring(cfg.Keys)
		where = "the key service's key file"
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	if _, err := Migrate(ctx, pool); err != nil {
		return nil, err
	}
	if db.keys == nil {
		if db.keys, err = store.OpenKeyring(cfg.KeyPath); err != nil {
			return nil, err
		}
	}
	if err := db.openIndexKey(ctx, where); err != nil {
		return nil, err
	}
	return db, nil
}

// Close closes the pool and the key files.
func (db *DB) Close() error {
	db.pool.Close()
	if db.keys != nil {
		return db.keys.Close()
	}
	return nil
}

// Pool is the connection pool, for operators' tools (store copy).
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// op is the context of one store operation.
func (db *DB) op() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), db.timeout)
}

// inTx runs fn in one READ COMMITTED transaction. Money and identity
// changes lock the rows they read (SELECT … FOR UPDATE), see doc.go. A
// transaction PostgreSQL aborts as a deadlock victim (two gateways
// locking the same rows in different orders) runs again, up to three
// times: fn must set its results afresh on each run.
func (db *DB) inTx(fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := db.op()
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
		if attempt == 3 || !isRetryable(err) {
			return err
		}
	}
}

// isRetryable reports a deadlock or serialization failure: nothing was
// written, and the same transaction may succeed when run again.
func isRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// notFound maps pgx's no-rows to store.ErrNotFound, and so a key
// PostgreSQL cannot even hold as text (a NUL byte, invalid UTF-8: it
// names nothing) — bbolt takes any bytes as a key and finds nothing.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) || isBadText(err) {
		return store.ErrNotFound
	}
	return err
}

// isBadText reports text PostgreSQL refuses: NUL bytes or invalid UTF-8.
func isBadText(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "22021" || pe.Code == "22P05")
}

// isUnique reports a unique-constraint violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
