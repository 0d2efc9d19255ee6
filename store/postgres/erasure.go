package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// BeginErasure starts erasing an account: in one transaction it marks the
// account as being erased, ends its sessions, revokes its API keys and
// email links and records the job. Beginning twice is harmless. The job
// lives in the database, so any gateway can resume it.
func (db *DB) BeginErasure(accountID, reason string) (store.ErasureJob, error) {
	job := store.ErasureJob{AccountID: accountID, Reason: reason, Started: db.now().UTC()}
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := getAccount(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		if j, err := getErasure(ctx, tx, accountID, ""); err == nil {
			job = j
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		job.Slot = uint64(r.Slot)
		if _, err := tx.Exec(ctx, `UPDATE accounts SET status = $2 WHERE id = $1`, accountID, store.StatusErasing); err != nil {
			return err
		}
		if err := revokeCredentials(ctx, tx, accountID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO erasures (account_id, reason, started, mailed, slot) VALUES ($1, $2, $3, false, $4)`,
			accountID, reason, job.Started, r.Slot)
		return err
	})
	return job, err
}

func getErasure(ctx context.Context, q querier, accountID, lock string) (store.ErasureJob, error) {
	var j store.ErasureJob
	var slot int64
	err := q.QueryRow(ctx, `SELECT account_id, reason, started, mailed, slot FROM erasures WHERE account_id = $1 `+lock, accountID).
		Scan(&j.AccountID, &j.Reason, &j.Started, &j.Mailed, &slot)
	j.Started, j.Slot = j.Started.UTC(), uint64(slot)
	return j, notFound(err)
}

// PendingErasures lists the jobs not yet finished, oldest first.
func (db *DB) PendingErasures() ([]store.ErasureJob, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT account_id, reason, started, mailed, slot FROM erasures ORDER BY started, account_id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.ErasureJob, error) {
		var j store.ErasureJob
		var slot int64
		err := row.Scan(&j.AccountID, &j.Reason, &j.Started, &j.Mailed, &slot)
		j.Started, j.Slot = j.Started.UTC(), uint64(slot)
		return j, err
	})
}

// EraseStep deletes the next part of an erasing account's data: up to
// batch generations, then its consent records, profile, security-log
// rows, credit holds and Stripe link. It returns done when nothing is left
// but the account record (see FinishErasure). The job row is locked, so
// two gateways resuming one job take turns.
func (db *DB) EraseStep(accountID string, batch int) (done bool, err error) {
	now := db.now().UTC()
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := getErasure(ctx, tx, accountID, "FOR UPDATE"); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id FROM generations WHERE account_id = $1 ORDER BY id LIMIT $2`, accountID, batch)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := deleteGeneration(ctx, tx, now, accountID, id, false); err != nil {
				return err
			}
		}
		if len(ids) > 0 {
			return nil
		}
		if err := eraseAccountRecords(ctx, tx, accountID); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

// eraseAccountRecords deletes everything of an account but its
// generations and its account row.
func eraseAccountRecords(ctx context.Context, tx pgx.Tx, accountID string) error {
	for _, q := range []string{
		`DELETE FROM consents WHERE subject = $1`,
		`DELETE FROM profiles WHERE account_id = $1`,
		`DELETE FROM security_log WHERE account_id = $1`,
		`DELETE FROM billing WHERE account_id = $1`,
		`DELETE FROM jobs WHERE owner = $1`,
	} {
		if _, err := tx.Exec(ctx, q, accountID); err != nil {
			return err
		}
	}
	var held int64
	if err := tx.QueryRow(ctx, `WITH gone AS (DELETE FROM holds WHERE account_id = $1 RETURNING amount)
		SELECT coalesce(sum(amount), 0)::bigint FROM gone`, accountID).Scan(&held); err != nil {
		return err
	}
	if held > 0 {
		if _, err := tx.Exec(ctx, `UPDATE accounts SET held = held - $2 WHERE id = $1`, accountID, held); err != nil {
			return err
		}
	}
	return forgetNotifyRecipient(ctx, tx, accountID)
}

// ErasureEmail returns the address of an account being erased, for the
// confirmation mail; after FinishErasure nobody can read it any more.
func (db *DB) ErasureEmail(accountID string) (string, error) {
	a, err := db.Account(accountID)
	if err != nil {
		return "", err
	}
	return a.Email, nil
}

// MarkErasureMailed records that the confirmation mail went out.
func (db *DB) MarkErasureMailed(accountID string) error {
	ctx, cancel := db.op()
	defer cancel()
	tag, err := db.pool.Exec(ctx, `UPDATE erasures SET mailed = true WHERE account_id = $1`, accountID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// FinishErasure removes the account row and destroys the account's key,
// so every sealed copy of its email, prompts and profile — in the
// database, its WAL, replicas and backups — is noise. Ledger entries stay,
// pseudonymous. The job is deleted last, so a crash before that (on any
// gateway) resumes here.
func (db *DB) FinishErasure(accountID string) error {
	var job store.ErasureJob
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		if job, err = getErasure(ctx, tx, accountID, "FOR UPDATE"); err != nil {
			return err
		}
		if _, err := getAccount(ctx, tx, accountID, "FOR UPDATE"); errors.Is(err, store.ErrNotFound) {
			return nil // removed by an earlier, interrupted attempt
		} else if err != nil {
			return err
		}
		var left bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM generations WHERE account_id = $1)`, accountID).Scan(&left); err != nil {
			return err
		}
		if left {
			return errors.New("postgres: erasure not finished: generations remain (run EraseStep until done)")
		}
		if err := eraseAccountRecords(ctx, tx, accountID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM accounts WHERE id = $1`, accountID)
		return err
	})
	if err != nil {
		return err
	}
	if err := db.keys.DestroyAccountKey(job.Slot); err != nil {
		return err
	}
	// The account's index entry may survive in old WAL, replicas or
	// backups under the current lookup-index key: a new key, and the old
	// one destroyed, make it match nothing. Before the job goes, so a
	// failure is retried.
	if err := db.RotateIndexKey(); err != nil {
		return err
	}
	ctx, cancel := db.op()
	defer cancel()
	_, err = db.pool.Exec(ctx, `DELETE FROM erasures WHERE account_id = $1`, accountID)
	return err
}
