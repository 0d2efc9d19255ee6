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
}

func (r *Retention) setDefaults() {
	if r.SecurityLog == 0 {
		r.SecurityLog = 30 * 24 * time.Hour
	}
	if r.StaleHolds == 0 {
		r.StaleHolds = 15 * time.Minute
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
	return errors.Join(errs...)
}

// SweepReport counts what one sweep removed.
type SweepReport struct {
	SecurityEvents int
	Sessions       int
	EmailTokens    int
	Holds          int
}

// Sweep removes everything past its retention: security-log rows (and
// their day keys), expired sessions and email tokens, stale credit holds.
// It is idempotent and works in short transactions.
func (db *DB) Sweep(ctx context.Context, r Retention) (SweepReport, error) {
	if err := r.Validate(); err != nil {
		return SweepReport{}, err
	}
	var rep SweepReport
	var err error
	if rep.SecurityEvents, err = db.SweepSecurityLog(r.SecurityLog); err != nil {
		return rep, err
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	if rep.Sessions, err = db.sweepExpired(bucketSessions, func(v []byte, now time.Time) (bool, error) {
		var s sessionRecord
		if err := decodeRecord(v, &s); err != nil {
			return false, err
		}
		return !now.Before(s.Expires) || !now.Before(s.LastSeen.Add(s.Idle)), nil
	}, func(tx *bolt.Tx, k []byte) error { return deleteSession(tx, k) }); err != nil {
		return rep, err
	}
	if rep.EmailTokens, err = db.sweepExpired(bucketResets, func(v []byte, now time.Time) (bool, error) {
		var t emailToken
		if err := decodeRecord(v, &t); err != nil {
			return false, err
		}
		return !now.Before(t.Expires), nil
	}, func(tx *bolt.Tx, k []byte) error { return tx.Bucket(bucketResets).Delete(k) }); err != nil {
		return rep, err
	}
	rep.Holds, err = db.ReleaseStaleHolds(r.StaleHolds)
	return rep, err
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
			logger.Debug("retention sweep", "security_events", rep.SecurityEvents, "sessions", rep.Sessions, "email_tokens", rep.EmailTokens, "holds", rep.Holds)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
