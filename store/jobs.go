package store

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Job is an asynchronous generation: the request as the client sent it,
// where it is and, once finished, its images or its error. The request
// holds the prompt, so it is sealed in the file: with the owner's account
// key (erased with the account), or, for a visitor without an account,
// with a key derived from the job token only the visitor holds.
type Job struct {
	ID      string    `json:"id"`
	Owner   string    `json:"owner,omitempty"` // account ID; empty: anonymous
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Request is the request body (plaintext here, sealed in the file).
	Request []byte `json:"-"`
	// RequestHash tells a retried POST from another one under the same
	// idempotency key.
	RequestHash []byte `json:"request_hash,omitempty"`
	IdemKey     string `json:"idem_key,omitempty"`
	// TokenHash is the hash of an anonymous job's token.
	TokenHash []byte `json:"token_hash,omitempty"`
	// Runs counts how often the job was started (restarts re-run it).
	Runs   int        `json:"runs"`
	Images []JobImage `json:"images,omitempty"`
	Error  *JobError  `json:"error,omitempty"`
}

// JobImage is one output of a finished job.
type JobImage struct {
	Object      string `json:"object"`
	Ext         string `json:"ext"`
	ContentType string `json:"content_type"`
	Seed        uint64 `json:"seed"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
}

// JobError is the public error of a failed job.
type JobError struct {
	Status  int    `json:"status"`
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Job states. Queued and running jobs are unfinished: a gateway starting
// up runs them again.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Finished reports whether the job reached a final state.
func (j Job) Finished() bool {
	return j.Status == JobSucceeded || j.Status == JobFailed || j.Status == JobCancelled
}

// jobRecord is a Job as stored: the request sealed.
type jobRecord struct {
	Job
	Sealed []byte `json:"request"`
}

func jobAAD(id string) string { return "job:" + id }

// NewJobID returns an unguessable job ID.
func NewJobID() string { return newID("job_") }

// CreateJob stores j (queued) unless its owner already has a job under
// j.IdemKey, which it returns instead with created false. anonKey seals
// the request of a job without an owner; an owner's jobs use the
// account's key.
func (db *DB) CreateJob(j Job, anonKey []byte) (Job, bool, error) {
	if j.ID == "" || (j.Owner == "" && len(anonKey) != 32) {
		return Job{}, false, errors.New("store: a job needs an ID, and a key when it has no owner")
	}
	now := db.now().UTC()
	var out Job
	created := false
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		key := anonKey
		if j.Owner != "" {
			acct, err := getAccount(tx, j.Owner)
			if err != nil {
				return err
			}
			if acct.Status == StatusErasing {
				return ErrAccountInactive
			}
			if j.IdemKey != "" {
				if id := tx.Bucket(bucketJobIdem).Get(compositeKey([]byte(j.Owner), []byte(j.IdemKey))); id != nil {
					var rec jobRecord
					if err := getJSON(tx.Bucket(bucketJobs), id, &rec); err != nil {
						return err
					}
					out = rec.Job
					return nil
				}
			}
			if key, err = db.keys.get(acct.Slot, ownerTag(acct.ID)); err != nil {
				return err
			}
		}
		j.Status, j.Created, j.Updated = JobQueued, now, now
		rec := jobRecord{Job: j}
		var err error
		if rec.Sealed, err = seal(key, jobAAD(j.ID), j.Request); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketJobs), []byte(j.ID), rec); err != nil {
			return err
		}
		if j.Owner != "" {
			if err := tx.Bucket(bucketJobOwners).Put(compositeKey([]byte(j.Owner), []byte(j.ID)), nil); err != nil {
				return err
			}
			if j.IdemKey != "" {
				if err := tx.Bucket(bucketJobIdem).Put(compositeKey([]byte(j.Owner), []byte(j.IdemKey)), []byte(j.ID)); err != nil {
					return err
				}
			}
		}
		out, created = j, true
		return nil
	})
	return out, created, err
}

// Job returns the job with its request opened: with the owner's key, or
// anonKey for a job without an owner. A wrong anonKey is ErrNotFound, as
// is a missing job, so a guessed ID learns nothing.
func (db *DB) Job(id string, anonKey []byte) (Job, error) {
	var rec jobRecord
	var slot uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if err := getJSON(tx.Bucket(bucketJobs), []byte(id), &rec); err != nil {
			return err
		}
		if rec.Owner != "" {
			acct, err := getAccount(tx, rec.Owner)
			if err != nil {
				return err
			}
			slot = acct.Slot
		}
		return nil
	})
	if err != nil {
		return Job{}, err
	}
	key := anonKey
	if rec.Owner != "" {
		if key, err = db.keys.get(slot, ownerTag(rec.Owner)); err != nil {
			return Job{}, err
		}
	}
	if len(key) != 32 {
		return Job{}, ErrNotFound
	}
	if rec.Request, err = unseal(key, jobAAD(id), rec.Sealed); err != nil {
		return Job{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return rec.Job, nil
}

// UpdateJob changes the stored job with fn (never its request, owner or
// keys) and returns it as stored, without its request.
func (db *DB) UpdateJob(id string, fn func(*Job) error) (Job, error) {
	var out Job
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var rec jobRecord
		if err := getJSON(tx.Bucket(bucketJobs), []byte(id), &rec); err != nil {
			return err
		}
		j := rec.Job
		if err := fn(&j); err != nil {
			return err
		}
		j.ID, j.Owner, j.TokenHash, j.IdemKey, j.RequestHash, j.Created = rec.ID, rec.Owner, rec.TokenHash, rec.IdemKey, rec.RequestHash, rec.Created
		j.Updated = db.now().UTC()
		rec.Job = j
		out = j
		return putJSON(tx.Bucket(bucketJobs), []byte(id), rec)
	})
	out.Request = nil
	return out, err
}

// UnfinishedJobs returns the queued and running jobs, for a gateway to run
// again after a restart: those with an owner with their request opened,
// anonymous ones without (their key is the visitor's token).
func (db *DB) UnfinishedJobs() ([]Job, error) {
	var ids []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var rec jobRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if !rec.Finished() {
				ids = append(ids, string(k))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var out []Job
	for _, id := range ids {
		j, err := db.Job(id, nil)
		if errors.Is(err, ErrNotFound) {
			var rec jobRecord
			err = db.bolt.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketJobs), []byte(id), &rec) })
			j = rec.Job
		}
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// JobTokenMatches reports whether token hash h is the job's, in constant
// time.
func (j Job) JobTokenMatches(h []byte) bool {
	return len(j.TokenHash) > 0 && subtle.ConstantTimeCompare(j.TokenHash, h) == 1
}

// SweepJobs deletes jobs finished before cutoff; they held the request
// (prompt) only so their owner could read the outcome.
func (db *DB) SweepJobs(cutoff time.Time) (int, error) {
	n := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var doomed []jobRecord
		err := tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			var rec jobRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if rec.Finished() && rec.Updated.Before(cutoff) {
				doomed = append(doomed, rec)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, rec := range doomed {
			if err := deleteJob(tx, rec.Job); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

func deleteJob(tx *bolt.Tx, j Job) error {
	if err := tx.Bucket(bucketJobs).Delete([]byte(j.ID)); err != nil {
		return err
	}
	if j.Owner == "" {
		return nil
	}
	if j.IdemKey != "" {
		if err := tx.Bucket(bucketJobIdem).Delete(compositeKey([]byte(j.Owner), []byte(j.IdemKey))); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketJobOwners).Delete(compositeKey([]byte(j.Owner), []byte(j.ID)))
}

// AccountJobs returns the account's jobs, requests opened, for its data
// export.
func (db *DB) AccountJobs(accountID string) ([]Job, error) {
	var ids []string
	prefix := compositeKey([]byte(accountID), nil)
	db.bolt.View(func(tx *bolt.Tx) error {
		for _, k := range prefixKeys(tx.Bucket(bucketJobOwners), prefix) {
			ids = append(ids, string(bytes.TrimPrefix(k, prefix)))
		}
		return nil
	})
	out := make([]Job, 0, len(ids))
	for _, id := range ids {
		j, err := db.Job(id, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// eraseAccountJobs deletes every job of the account (erasure).
func eraseAccountJobs(tx *bolt.Tx, accountID string) error {
	prefix := compositeKey([]byte(accountID), nil)
	for _, k := range prefixKeys(tx.Bucket(bucketJobOwners), prefix) {
		var rec jobRecord
		err := getJSON(tx.Bucket(bucketJobs), k[len(prefix):], &rec)
		if errors.Is(err, ErrNotFound) {
			if err := tx.Bucket(bucketJobOwners).Delete(k); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := deleteJob(tx, rec.Job); err != nil {
			return err
		}
	}
	return nil
}
