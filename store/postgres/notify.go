package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// Recipient states, as in the bbolt store.
const (
	rcptPending     = "pending"
	rcptSending     = "sending"
	rcptSent        = "sent"
	rcptFailed      = "failed"
	rcptInterrupted = "interrupted"
	rcptSkipped     = "skipped:" // + reason
)

const notifyBatch = 1000

// notifyJobRecord is a job with its cursors: the last account listed (All
// jobs) and the recipient to look at next.
type notifyJobRecord struct {
	store.NotifyJob
	ListAfter string `json:"list_after,omitempty"`
	SendAfter string `json:"send_after,omitempty"`
}

func putNotifyJob(ctx context.Context, tx pgx.Tx, rec notifyJobRecord, seq int64) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("postgres: encode notify job: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO notify_jobs (id, seq, state, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, record = excluded.record`, rec.ID, seq, rec.State, v)
	return err
}

func decodeNotifyJob(v []byte) (notifyJobRecord, error) {
	var rec notifyJobRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, fmt.Errorf("postgres: decode notify job: %w", err)
	}
	if rec.Counts.Skipped == nil {
		rec.Counts.Skipped = map[string]int{}
	}
	return rec, nil
}

// CreateNotifyJob records an incident notification (promise S5): an
// explicit list of accounts, each once, or All accounts (listed later by
// ListNotifyRecipients).
func (db *DB) CreateNotifyJob(n store.NewNotifyJob) (store.NotifyJob, error) {
	var errs []error
	if n.Subject == "" || n.Template == "" {
		errs = append(errs, errors.New("postgres: a notification needs a subject and a template"))
	}
	if !(n.Rate > 0) {
		errs = append(errs, errors.New("postgres: a notification's rate must be positive"))
	}
	if n.All == (len(n.Accounts) > 0) {
		errs = append(errs, errors.New("postgres: a notification goes to a list of accounts or to all of them"))
	}
	if err := errors.Join(errs...); err != nil {
		return store.NotifyJob{}, err
	}
	var out store.NotifyJob
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var seq int64
		if err := tx.QueryRow(ctx, `SELECT nextval('notify_seq')`).Scan(&seq); err != nil {
			return err
		}
		rec := notifyJobRecord{NotifyJob: store.NotifyJob{
			ID: "notify-" + strconv.FormatInt(seq, 10), Subject: n.Subject, Template: n.Template, SiteURL: n.SiteURL,
			Rate: n.Rate, All: n.All, Created: db.now().UTC(), State: store.NotifySending,
			Counts: store.NotifyCounts{Skipped: map[string]int{}},
		}}
		if n.All {
			rec.State = store.NotifyListing
		}
		for _, id := range n.Accounts {
			if id == "" {
				continue
			}
			tag, err := tx.Exec(ctx, `INSERT INTO notify_recipients (job_id, account_id, state) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				rec.ID, id, rcptPending)
			if err != nil {
				return err
			}
			if tag.RowsAffected() > 0 {
				rec.Counts.Total++
				rec.Counts.Pending++
			}
		}
		out = rec.NotifyJob
		return putNotifyJob(ctx, tx, rec, seq)
	})
	return out, err
}

// NotifyJob returns a job and its progress.
func (db *DB) NotifyJob(id string) (store.NotifyJob, error) {
	ctx, cancel := db.op()
	defer cancel()
	var v []byte
	if err := db.pool.QueryRow(ctx, `SELECT record FROM notify_jobs WHERE id = $1`, id).Scan(&v); err != nil {
		return store.NotifyJob{}, notFound(err)
	}
	rec, err := decodeNotifyJob(v)
	return rec.NotifyJob, err
}

// UnfinishedNotifyJobs lists the jobs not yet done, oldest first.
func (db *DB) UnfinishedNotifyJobs() ([]store.NotifyJob, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT record FROM notify_jobs WHERE state <> $1 ORDER BY seq`, store.NotifyDone)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.NotifyJob, error) {
		var v []byte
		if err := row.Scan(&v); err != nil {
			return store.NotifyJob{}, err
		}
		rec, err := decodeNotifyJob(v)
		return rec.NotifyJob, err
	})
}

// updateNotifyJob runs fn on the job with its row locked, so gateways
// resuming one job take turns, and writes it back.
func (db *DB) updateNotifyJob(id string, fn func(ctx context.Context, tx pgx.Tx, rec *notifyJobRecord) error) error {
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var v []byte
		var seq int64
		if err := tx.QueryRow(ctx, `SELECT record, seq FROM notify_jobs WHERE id = $1 FOR UPDATE`, id).Scan(&v, &seq); err != nil {
			return notFound(err)
		}
		rec, err := decodeNotifyJob(v)
		if err != nil {
			return err
		}
		if err := fn(ctx, tx, &rec); err != nil {
			return err
		}
		return putNotifyJob(ctx, tx, rec, seq)
	})
}

// ListNotifyRecipients adds up to batch more accounts (created up to the
// job's creation) to an All job; done when none is left.
func (db *DB) ListNotifyRecipients(jobID string, batch int) (done bool, err error) {
	err = db.updateNotifyJob(jobID, func(ctx context.Context, tx pgx.Tx, rec *notifyJobRecord) error {
		if rec.State != store.NotifyListing {
			done = true
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT id, created <= $2 FROM accounts WHERE id > $1 ORDER BY id LIMIT $3`,
			rec.ListAfter, rec.Created, batch+1)
		if err != nil {
			return err
		}
		type acct struct {
			id      string
			counted bool
		}
		accts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (acct, error) {
			var a acct
			return a, row.Scan(&a.id, &a.counted)
		})
		if err != nil {
			return err
		}
		for i, a := range accts {
			if i == batch {
				break
			}
			rec.ListAfter = a.id
			if !a.counted {
				continue // not affected: it did not exist when the job began
			}
			if _, err := tx.Exec(ctx, `INSERT INTO notify_recipients (job_id, account_id, state) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, rec.ID, a.id, rcptPending); err != nil {
				return err
			}
			rec.Counts.Total++
			rec.Counts.Pending++
		}
		if len(accts) <= batch {
			rec.State, done = store.NotifySending, true
		}
		return nil
	})
	return done, err
}

// NextNotifyRecipient claims the job's next recipient, recorded as being
// mailed before this returns; see store.DB.NextNotifyRecipient. When
// nobody is left it marks the job done and returns store.ErrJobFinished.
func (db *DB) NextNotifyRecipient(jobID string) (store.NotifyRecipient, error) {
	for {
		var out store.NotifyRecipient
		var finished bool
		err := db.updateNotifyJob(jobID, func(ctx context.Context, tx pgx.Tx, rec *notifyJobRecord) error {
			switch rec.State {
			case store.NotifyDone:
				finished = true
				return nil
			case store.NotifyListing:
				return fmt.Errorf("postgres: job %s is still listing its recipients", jobID)
			}
			rows, err := tx.Query(ctx, `SELECT account_id, state FROM notify_recipients WHERE job_id = $1 AND account_id >= $2
				ORDER BY account_id LIMIT $3`, rec.ID, rec.SendAfter, notifyBatch)
			if err != nil {
				return err
			}
			type rcpt struct{ id, state string }
			batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rcpt, error) {
				var r rcpt
				return r, row.Scan(&r.id, &r.state)
			})
			if err != nil {
				return err
			}
			set := func(id, state string) error {
				_, err := tx.Exec(ctx, `UPDATE notify_recipients SET state = $3 WHERE job_id = $1 AND account_id = $2`, rec.ID, id, state)
				return err
			}
			for _, r := range batch {
				rec.SendAfter = r.id
				switch r.state {
				case rcptSending:
					// Claimed by a run that never reported back.
					if err := set(r.id, rcptInterrupted); err != nil {
						return err
					}
					rec.Counts.Sending--
					rec.Counts.Interrupted++
					continue
				case rcptPending:
				default:
					continue
				}
				target, skip, err := db.notifyTarget(ctx, tx, r.id)
				if err != nil {
					return err
				}
				rec.Counts.Pending--
				if skip != "" {
					rec.Counts.Skipped[skip]++
					if err := set(r.id, rcptSkipped+skip); err != nil {
						return err
					}
					continue
				}
				rec.Counts.Sending++
				out = target
				return set(r.id, rcptSending)
			}
			if len(batch) == notifyBatch {
				return nil // looked at a batch without a recipient: go on
			}
			if _, err := tx.Exec(ctx, `DELETE FROM notify_recipients WHERE job_id = $1`, rec.ID); err != nil {
				return err
			}
			rec.State, rec.Finished, rec.SendAfter = store.NotifyDone, db.now().UTC(), ""
			finished = true
			return nil
		})
		switch {
		case err != nil:
			return store.NotifyRecipient{}, err
		case finished:
			return store.NotifyRecipient{}, store.ErrJobFinished
		case out.AccountID != "":
			return out, nil
		}
	}
}

// notifyTarget opens the account to mail, or says why it is skipped.
func (db *DB) notifyTarget(ctx context.Context, tx pgx.Tx, accountID string) (store.NotifyRecipient, string, error) {
	r, err := getAccount(ctx, tx, accountID, "")
	if errors.Is(err, store.ErrNotFound) {
		return store.NotifyRecipient{}, store.SkipDeleted, nil
	}
	if err != nil {
		return store.NotifyRecipient{}, "", err
	}
	switch r.Status {
	case store.StatusSuspended:
		return store.NotifyRecipient{}, store.SkipSuspended, nil
	case store.StatusErasing:
		return store.NotifyRecipient{}, store.SkipErasing, nil
	}
	a, err := db.openAccount(r)
	if errors.Is(err, store.ErrKeyDestroyed) {
		return store.NotifyRecipient{}, store.SkipDeleted, nil
	}
	if err != nil {
		return store.NotifyRecipient{}, "", err
	}
	return store.NotifyRecipient{AccountID: a.ID, Email: a.Email, Created: a.Created}, "", nil
}

// FinishNotifyRecipient records the outcome of a claimed recipient's mail.
func (db *DB) FinishNotifyRecipient(jobID, accountID string, outcome store.NotifyOutcome) error {
	return db.updateNotifyJob(jobID, func(ctx context.Context, tx pgx.Tx, rec *notifyJobRecord) error {
		var cur string
		err := tx.QueryRow(ctx, `SELECT state FROM notify_recipients WHERE job_id = $1 AND account_id = $2`, rec.ID, accountID).Scan(&cur)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		switch cur {
		case rcptSending:
			rec.Counts.Sending--
		case rcptInterrupted:
			if outcome == store.NotifyRetry {
				return nil
			}
			rec.Counts.Interrupted--
		default:
			return fmt.Errorf("postgres: recipient of %s is not being mailed: %w", jobID, store.ErrConflict)
		}
		state := rcptSent
		switch outcome {
		case store.NotifySent:
			rec.Counts.Sent++
		case store.NotifyFailed:
			state = rcptFailed
			rec.Counts.Failed++
		case store.NotifyRetry:
			state = rcptPending
			rec.Counts.Pending++
		default:
			return fmt.Errorf("postgres: unknown notification outcome %d", outcome)
		}
		_, err = tx.Exec(ctx, `UPDATE notify_recipients SET state = $3 WHERE job_id = $1 AND account_id = $2`, rec.ID, accountID, state)
		return err
	})
}

// forgetNotifyRecipient removes an account from every unfinished job (for
// erasure): a pending recipient counts as skipped, deleted.
func forgetNotifyRecipient(ctx context.Context, tx pgx.Tx, accountID string) error {
	rows, err := tx.Query(ctx, `SELECT j.id, j.seq, j.record, r.state FROM notify_recipients r JOIN notify_jobs j ON j.id = r.job_id
		WHERE r.account_id = $1 AND j.state <> $2 ORDER BY j.seq FOR UPDATE OF j`, accountID, store.NotifyDone)
	if err != nil {
		return err
	}
	type hit struct {
		seq   int64
		rec   []byte
		state string
	}
	hits, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (hit, error) {
		var h hit
		var id string
		return h, row.Scan(&id, &h.seq, &h.rec, &h.state)
	})
	if err != nil {
		return err
	}
	for _, h := range hits {
		rec, err := decodeNotifyJob(h.rec)
		if err != nil {
			return err
		}
		switch h.state {
		case rcptPending:
			rec.Counts.Pending--
			rec.Counts.Skipped[store.SkipDeleted]++
		case rcptSending:
			rec.Counts.Sending--
			rec.Counts.Interrupted++
		}
		if h.state == rcptPending || h.state == rcptSending {
			if err := putNotifyJob(ctx, tx, rec, h.seq); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM notify_recipients WHERE job_id = $1 AND account_id = $2`, rec.ID, accountID); err != nil {
			return err
		}
	}
	return nil
}
