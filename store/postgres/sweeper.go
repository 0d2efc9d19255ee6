package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imagegate/imagegate/store"
)

// ErrSweepRunning reports that another process holds the sweep lease: one
// node sweeps at a time, the others skip their turn.
var ErrSweepRunning = errors.New("postgres: another gateway is sweeping")

// sweepLock is the pg_advisory_lock key of the retention sweep lease.
const sweepLock int64 = 0x696d6167_73776570 // "imagswep"

// Sweep removes everything past its retention, as store.DB.Sweep does, on
// one node at a time: it holds a session advisory lock for the whole
// sweep (released if the node dies, with its connection) and returns
// ErrSweepRunning without touching anything when another node holds it.
func (db *DB) Sweep(ctx context.Context, r store.Retention) (store.SweepReport, error) {
	if err := r.Validate(); err != nil {
		return store.SweepReport{}, err
	}
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return store.SweepReport{}, fmt.Errorf("postgres: connect: %w", err)
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, sweepLock).Scan(&got); err != nil {
		return store.SweepReport{}, fmt.Errorf("postgres: sweep lease: %w", err)
	}
	if !got {
		return store.SweepReport{}, ErrSweepRunning
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, sweepLock)

	var rep store.SweepReport
	var errs []error
	step := func(n *int, f func() (int, error)) {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			return
		}
		v, err := f()
		*n += v
		errs = append(errs, err)
	}
	del := func(q string) func() (int, error) {
		return func() (int, error) {
			octx, cancel := db.op()
			defer cancel()
			tag, err := db.pool.Exec(octx, q, db.now().UTC())
			return int(tag.RowsAffected()), err
		}
	}
	step(&rep.SecurityEvents, func() (int, error) { return db.SweepSecurityLog(r.SecurityLog) })
	step(&rep.Sessions, del(`DELETE FROM sessions WHERE expires <= $1 OR last_seen + idle_ns * interval '1 microsecond' / 1000 <= $1`))
	step(&rep.EmailTokens, del(`DELETE FROM email_tokens WHERE expires <= $1`))
	step(&rep.Reports, db.SweepReports)
	step(&rep.DSARsErased, func() (int, error) {
		erased, deleted, err := db.ExpireDSARs(r.DSARPersonal, r.DSARRecord)
		rep.DSARsDeleted += deleted
		return erased, err
	})
	step(&rep.WebhookEvents, func() (int, error) { return db.PruneStripeEvents(db.now().Add(-r.WebhookEvents)) })
	step(&rep.Holds, func() (int, error) { return db.ReleaseStaleHolds(r.StaleHolds) })
	return rep, errors.Join(errs...)
}

// RunSweeper sweeps every interval until ctx ends, logging counts. A
// round another node is sweeping is skipped.
func (db *DB) RunSweeper(ctx context.Context, r store.Retention, interval time.Duration, logger *slog.Logger, report func(store.SweepReport)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := db.Sweep(ctx, r)
		switch {
		case errors.Is(err, ErrSweepRunning):
			logger.Debug("retention sweep skipped: another gateway holds the lease")
		case err != nil && ctx.Err() == nil:
			logger.Error("retention sweep failed", "err", err)
		case err == nil:
			if report != nil {
				report(rep)
			}
			logger.Debug("retention sweep", "security_events", rep.SecurityEvents, "sessions", rep.Sessions,
				"email_tokens", rep.EmailTokens, "holds", rep.Holds, "reports", rep.Reports)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
