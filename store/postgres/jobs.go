package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// Asynchronous jobs, shared by every gateway on the database. Sealing is
// the bbolt store's: the request with the owner's account key, or for an
// anonymous job with the key the visitor's token derives, plus a resume
// copy under a key of the job's own (store.ResumeAAD) destroyed when it
// finishes. An unfinished job is leased to one gateway at a time: the one
// that created it, then whichever claims it (FOR UPDATE SKIP LOCKED) once
// the holder stopped renewing the lease (it died, or lost the database).

const jobCols = `id, owner, record, request_sealed, resume_slot, resume_sealed, lease_holder, lease_until`

type jobRow struct {
	job          store.Job
	sealed       []byte
	resumeSlot   int64
	resumeSealed []byte
}

func scanJob(row pgx.Row) (jobRow, error) {
	var r jobRow
	var id, owner, holder string
	var rec []byte
	var until *time.Time
	if err := row.Scan(&id, &owner, &rec, &r.sealed, &r.resumeSlot, &r.resumeSealed, &holder, &until); err != nil {
		return r, notFound(err)
	}
	if err := json.Unmarshal(rec, &r.job); err != nil {
		return r, fmt.Errorf("postgres: decode job: %w", err)
	}
	r.job.ID, r.job.Owner, r.job.LeaseHolder = id, owner, holder
	r.job.Created, r.job.Updated = r.job.Created.UTC(), r.job.Updated.UTC()
	if until != nil {
		r.job.LeaseUntil = until.UTC()
	}
	return r, nil
}

func jobRecord(j store.Job) ([]byte, error) {
	j.Request = nil
	return json.Marshal(j)
}

func leaseArgs(j store.Job) (string, *time.Time) {
	if j.LeaseUntil.IsZero() || j.Finished() {
		return "", nil
	}
	t := j.LeaseUntil.UTC()
	return j.LeaseHolder, &t
}

// JobLeaseHolder names this client in job leases.
func (db *DB) JobLeaseHolder() string { return db.jobHolder }

// CreateJob stores j (queued) unless its owner already has a job under
// j.IdemKey — made on any gateway — which it returns instead with
// created false. A non-zero j.LeaseUntil leases the job to this client.
func (db *DB) CreateJob(j store.Job, anonKey []byte) (store.Job, bool, error) {
	if j.ID == "" || (j.Owner == "" && len(anonKey) != 32) {
		return store.Job{}, false, errors.New("store: a job needs an ID, and a key when it has no owner")
	}
	now := db.now().UTC()
	var resumeSlot int64
	var resumeSealed []byte
	if j.Owner == "" {
		ctx, cancel := db.op()
		err := db.pool.QueryRow(ctx, `SELECT nextval('account_key_slots')`).Scan(&resumeSlot)
		cancel()
		if err != nil {
			return store.Job{}, false, fmt.Errorf("postgres: key slot: %w", err)
		}
		key, err := db.keys.CreateAccountKey(uint64(resumeSlot), store.ResumeKeyName(j.ID))
		if err != nil {
			return store.Job{}, false, err
		}
		if resumeSealed, err = store.Seal(key, store.ResumeAAD(j.ID), j.Request); err != nil {
			return store.Job{}, false, err
		}
	}
	var out store.Job
	var created bool
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out, created = store.Job{}, false
		key := anonKey
		if j.Owner != "" {
			acct, err := getAccount(ctx, tx, j.Owner, "FOR SHARE")
			if err != nil {
				return err
			}
			if acct.Status == store.StatusErasing {
				return store.ErrAccountInactive
			}
			if key, err = db.keys.AccountKey(uint64(acct.Slot), acct.ID); err != nil {
				return err
			}
		}
		nj := j
		nj.Status, nj.Created, nj.Updated = store.JobQueued, now, now
		if !nj.LeaseUntil.IsZero() {
			nj.LeaseHolder = db.jobHolder
		}
		sealed, err := store.Seal(key, store.JobAAD(j.ID), j.Request)
		if err != nil {
			return err
		}
		rec, err := jobRecord(nj)
		if err != nil {
			return err
		}
		holder, until := leaseArgs(nj)
		// Two gateways given the same key at once: the unique index makes
		// the second insert do nothing, and it reads the first's job.
		tag, err := tx.Exec(ctx, `INSERT INTO jobs (`+jobCols+`, status, created, updated, idem_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (owner, idem_key) WHERE owner <> '' AND idem_key <> '' DO NOTHING`,
			nj.ID, nj.Owner, rec, sealed, resumeSlot, resumeSealed, holder, until, nj.Status, now, now, nj.IdemKey)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			r, err := scanJob(tx.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE owner = $1 AND idem_key = $2`, j.Owner, j.IdemKey))
			if err != nil {
				return err
			}
			out = r.job
			return nil
		}
		nj.Request = j.Request
		out, created = nj, true
		return nil
	})
	if resumeSlot != 0 && (err != nil || !created) {
		if derr := db.keys.DestroyAccountKey(uint64(resumeSlot)); err == nil {
			err = derr
		}
	}
	return out, created, err
}

// Job returns the job with its request opened: with the owner's key, or
// anonKey for a job without an owner. A wrong anonKey is ErrNotFound, as
// is a missing job.
func (db *DB) Job(id string, anonKey []byte) (store.Job, error) {
	ctx, cancel := db.op()
	defer cancel()
	r, err := scanJob(db.pool.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1`, id))
	if err != nil {
		return store.Job{}, err
	}
	return db.openJob(ctx, db.pool, r, anonKey)
}

func (db *DB) openJob(ctx context.Context, q querier, r jobRow, anonKey []byte) (store.Job, error) {
	key := anonKey
	if r.job.Owner != "" {
		acct, err := getAccount(ctx, q, r.job.Owner, "")
		if err != nil {
			return store.Job{}, err
		}
		if key, err = db.keys.AccountKey(uint64(acct.Slot), acct.ID); err != nil {
			return store.Job{}, err
		}
	}
	if len(key) != 32 {
		return store.Job{}, store.ErrNotFound
	}
	req, err := store.Unseal(key, store.JobAAD(r.job.ID), r.sealed)
	if err != nil {
		return store.Job{}, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	j := r.job
	j.Request = req
	return j, nil
}

// UpdateJob changes the stored job with fn, under its row lock, and
// returns it as stored without its request. A job fn finishes loses its
// lease and its resume copy, whose key is destroyed after the commit.
func (db *DB) UpdateJob(id string, fn func(*store.Job) error) (store.Job, error) {
	var out store.Job
	var destroy int64
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		destroy = 0
		r, err := scanJob(tx.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		j := r.job
		if err := fn(&j); err != nil {
			return err
		}
		old := r.job
		j.ID, j.Owner, j.TokenHash, j.IdemKey, j.RequestHash, j.Created = old.ID, old.Owner, old.TokenHash, old.IdemKey, old.RequestHash, old.Created
		j.Updated = db.now().UTC()
		j.Request = nil
		switch {
		case j.Finished() || j.LeaseUntil.IsZero():
			j.LeaseHolder, j.LeaseUntil = "", time.Time{}
		case old.LeaseHolder == "":
			j.LeaseHolder = db.jobHolder
		default:
			j.LeaseHolder = old.LeaseHolder
		}
		resume := r.resumeSealed
		if j.Finished() && resume != nil {
			resume, destroy = nil, r.resumeSlot
		}
		rec, err := jobRecord(j)
		if err != nil {
			return err
		}
		holder, until := leaseArgs(j)
		if _, err := tx.Exec(ctx, `UPDATE jobs SET record = $2, status = $3, updated = $4, resume_sealed = $5,
			lease_holder = $6, lease_until = $7 WHERE id = $1`, id, rec, j.Status, j.Updated, resume, holder, until); err != nil {
			return err
		}
		out = j
		return nil
	})
	if err == nil && destroy != 0 {
		err = db.keys.DestroyAccountKey(uint64(destroy))
	}
	return out, err
}

// ClaimJobs leases to this client, until now+ttl, up to
// store.JobClaimLimit unfinished jobs whose lease lapsed or that were
// never leased (oldest first). Rows another gateway is claiming or
// updating at that moment are skipped (SKIP LOCKED), and the lease is
// checked again under the row lock, so each lapsed job goes to exactly one
// claimer. Jobs come with their request opened, or nil when it can no
// longer be read (an erased owner, a destroyed key).
func (db *DB) ClaimJobs(ttl time.Duration) ([]store.Job, error) {
	now := db.now().UTC()
	var rows []jobRow
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		rs, err := tx.Query(ctx, `WITH c AS (
				SELECT id FROM jobs WHERE status IN ('queued', 'running') AND (lease_until IS NULL OR lease_until <= $1)
				ORDER BY created LIMIT $2 FOR UPDATE SKIP LOCKED)
			UPDATE jobs j SET lease_holder = $3, lease_until = $4 FROM c WHERE j.id = c.id
			RETURNING j.id, j.owner, j.record, j.request_sealed, j.resume_slot, j.resume_sealed, j.lease_holder, j.lease_until`,
			now, store.JobClaimLimit, db.jobHolder, now.Add(ttl))
		if err != nil {
			return err
		}
		rows, err = pgx.CollectRows(rs, func(row pgx.CollectableRow) (jobRow, error) { return scanJob(row) })
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]store.Job, 0, len(rows))
	for _, r := range rows {
		j := r.job
		j.Request = db.openForResume(r)
		out = append(out, j)
	}
	return out, nil
}

func (db *DB) openForResume(r jobRow) []byte {
	if r.job.Owner != "" {
		ctx, cancel := db.op()
		defer cancel()
		j, err := db.openJob(ctx, db.pool, r, nil)
		if err != nil {
			return nil
		}
		return j.Request
	}
	if r.resumeSealed == nil {
		return nil
	}
	key, err := db.keys.AccountKey(uint64(r.resumeSlot), store.ResumeKeyName(r.job.ID))
	if err != nil {
		return nil
	}
	req, err := store.Unseal(key, store.ResumeAAD(r.job.ID), r.resumeSealed)
	if err != nil {
		return nil
	}
	return req
}

// RenewJobLeases extends to now+ttl this client's leases on ids and
// returns those it still holds (unfinished, not claimed by another).
func (db *DB) RenewJobLeases(ids []string, ttl time.Duration) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	ctx, cancel := db.op()
	defer cancel()
	rs, err := db.pool.Query(ctx, `UPDATE jobs SET lease_until = $3
		WHERE id = ANY($1) AND lease_holder = $2 AND status IN ('queued', 'running') RETURNING id`,
		ids, db.jobHolder, db.now().UTC().Add(ttl))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rs, pgx.RowTo[string])
}

// SweepJobs deletes jobs finished before cutoff, destroying any resume
// key a failed destruction left.
func (db *DB) SweepJobs(cutoff time.Time) (int, error) {
	n := 0
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		rs, err := tx.Query(ctx, `DELETE FROM jobs WHERE status NOT IN ('queued', 'running') AND updated < $1 RETURNING resume_slot`, cutoff.UTC())
		if err != nil {
			return err
		}
		slots, err := pgx.CollectRows(rs, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		n = len(slots)
		for _, s := range slots {
			if s != 0 {
				if err := db.keys.DestroyAccountKey(uint64(s)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return n, err
}

// AccountJobs returns the account's jobs, requests opened, for its data
// export.
func (db *DB) AccountJobs(accountID string) ([]store.Job, error) {
	ctx, cancel := db.op()
	defer cancel()
	rs, err := db.pool.Query(ctx, `SELECT `+jobCols+` FROM jobs WHERE owner = $1 ORDER BY created, id`, accountID)
	if err != nil {
		return nil, err
	}
	rows, err := pgx.CollectRows(rs, func(row pgx.CollectableRow) (jobRow, error) { return scanJob(row) })
	if err != nil {
		return nil, err
	}
	out := make([]store.Job, 0, len(rows))
	for _, r := range rows {
		j, err := db.openJob(ctx, db.pool, r, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}
