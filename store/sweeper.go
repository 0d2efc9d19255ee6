package store

import (
	"context"
	"errors"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Retention says how long each kind of record is kept. The zero value of a
// field means its default.
type Retention struct {
	// SecurityLog is how long security-log rows (and the IP addresses and
	// user agents in them) are kept: 30 days (promise S1).
	SecurityLog time.Duration
	// StaleHolds releases credit holds older than this: generations that
	// never settled because the process died mid-call (15 minutes).
	StaleHolds time.Duration
	// WebhookEvents is how long processed payment-webhook ids are kept to
	// recognise redeliveries (30 days; Stripe retries for 3).
	WebhookEvents time.Duration
	// DSARPersonal is how long a closed rights request keeps the
	// requester's email and notes (90 days); DSARRecord how long its bare
	// record stays as evidence of compliance (3 years).
	DSARPersonal, DSARRecord time.Duration
}

// Rights-request retention defaults.
const (
	DefaultDSARPersonal = 90 * 24 * time.Hour
	DefaultDSARRecord   = 3 * 365 * 24 * time.Hour
)

func (r *Retention) setDefaults() {
	if r.SecurityLog == 0 {
		r.SecurityLog = 30 * 24 * time.Hour
	}
	if r.StaleHolds == 0 {
		r.StaleHolds = 15 * time.Minute
	}
	if r.WebhookEvents == 0 {
		r.WebhookEvents = 30 * 24 * time.Hour
	}
	if r.DSARPersonal == 0 {
		r.DSARPersonal = DefaultDSARPersonal
	}
	if r.DSARRecord == 0 {
		r.DSARRecord = DefaultDSARRecord
	}
}

// Validate fills defaults and reports every problem at once.
func (r *Retention) Validate() error {
	r.setDefaults()
	var errs []error
	if r.SecurityLog < 24*time.Hour {
		errs = append(errs, errors.New("store: security log retention must be at least 24h"))
	}
	if r.StaleHolds < time.Minute {
		errs = append(errs, errors.New("store: stale hold age must be at least 1m"))
	}
	if r.WebhookEvents < 4*24*time.Hour {
		errs = append(errs, errors.New("store: webhook ids must be kept at least 96h (Stripe retries for 3 days)"))
	}
	if r.DSARPersonal < 24*time.Hour || r.DSARRecord < r.DSARPersonal {
		errs = append(errs, errors.New("store: rights requests keep personal data at least 24h, and their record at least as long"))
	}
	return errors.Join(errs...)
}

// SweepReport counts what one sweep removed.
type SweepReport struct {
	SecurityEvents int
	Sessions       int
	EmailTokens    int
	Holds          int
	// Reports are reports of apparent CSAM whose legal hold ended.
	Reports int
	// DSARsErased had their personal data destroyed; DSARsDeleted were
	// removed entirely.
	DSARsErased, DSARsDeleted int
	// WebhookEvents are processed payment-webhook ids past retention.
	WebhookEvents int
}

// Sweep removes everything past its retention: security-log rows (and
// their day keys), expired sessions and email tokens, stale credit holds.
// It is idempotent and works in short transactions.
func (db *DB) Sweep(ctx context.Context, r Retention) (SweepReport, error) {
	if err := r.Validate(); err != nil {
		return SweepReport{}, err
	}
	// Every step runs even when another fails: one bad record must not
	// stop, say, rights-request data from expiring.
	var rep SweepReport
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
	step(&rep.SecurityEvents, func() (int, error) { return db.SweepSecurityLog(r.SecurityLog) })
	step(&rep.Sessions, func() (int, error) {
		return db.sweepExpired(bucketSessions, func(v []byte, now time.Time) (bool, error) {
			var s sessionRecord
			if err := decodeRecord(v, &s); err != nil {
				return false, err
			}
			return !now.Before(s.Expires) || !now.Before(s.LastSeen.Add(s.Idle)), nil
		}, func(tx *bolt.Tx, k []byte) error { return deleteSession(tx, k) })
	})
	step(&rep.EmailTokens, func() (int, error) {
		return db.sweepExpired(bucketResets, func(v []byte, now time.Time) (bool, error) {
			var t emailToken
			if err := decodeRecord(v, &t); err != nil {
				return false, err
			}
			return !now.Before(t.Expires), nil
		}, func(tx *bolt.Tx, k []byte) error { return tx.Bucket(bucketResets).Delete(k) })
	})
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

// sweepExpired deletes the records of bucket for which expired says so, at
// most sweepBatch per write transaction.
func (db *DB) sweepExpired(bucket []byte, expired func(v []byte, now time.Time) (bool, error), del func(tx *bolt.Tx, k []byte) error) (int, error) {
	total := 0
	var after []byte
	for {
		var doomed [][]byte
		now := db.now()
		done := true
		err := db.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
			}
			for ; k != nil; k, v = c.Next() {
				if len(doomed) == sweepBatch {
					after, done = append([]byte(nil), k...), false
					return nil
				}
				gone, err := expired(v, now)
				if err != nil {
					return err
				}
				if gone {
					doomed = append(doomed, append([]byte(nil), k...))
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		if len(doomed) > 0 {
			err = db.bolt.Update(func(tx *bolt.Tx) error {
				for _, k := range doomed {
					if err := del(tx, k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return total, err
			}
		}
		total += len(doomed)
		if done {
			return total, nil
		}
	}
}

// RunSweeper sweeps every interval until ctx ends, logging counts.
func (db *DB) RunSweeper(ctx context.Context, r Retention, interval time.Duration, logger *slog.Logger, report func(SweepReport)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rep, err := db.Sweep(ctx, r)
		if err != nil && ctx.Err() == nil {
			logger.Error("retention sweep failed", "err", err)
		} else if err == nil {
			if report != nil {
				report(rep)
			}
			logger.Debug("retention sweep", "security_events", rep.SecurityEvents, "sessions", rep.Sessions, "email_tokens", rep.EmailTokens, "holds", rep.Holds, "reports", rep.Reports)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
