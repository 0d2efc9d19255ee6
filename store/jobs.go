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
// with a key derived from the job token only the visitor holds. An
// anonymous job's request is sealed a second time, with a key of its own
// in the key file, so that a gateway can run it again after a restart;
// that key is destroyed the moment the job finishes (see ResumeAAD).
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
	// Holds are the credit holds the job's current run took, so that a
	// gateway taking over the job after its runner died gives them back at
	// once instead of leaving the credits held until the holds expire.
	Holds []string `json:"holds,omitempty"`
	// LeaseHolder is the store client (JobLeaseHolder) that runs the job,
	// until LeaseUntil; another client claims it only once the lease
	// lapsed (ClaimJobs). Set by the store: CreateJob and UpdateJob take a
	// non-zero LeaseUntil as "leased by me until then", a zero one as "not
	// leased". A finished job has no lease.
	LeaseHolder string    `json:"-"`
	LeaseUntil  time.Time `json:"-"`
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
	// ResumeSlot is the key-file slot of an anonymous job's resume key;
	// ResumeSealed the request under it, dropped when the job finishes
	// (and the key destroyed, so no freed page keeps it readable).
	ResumeSlot   uint64    `json:"resume_slot,omitempty"`
	ResumeSealed []byte    `json:"resume,omitempty"`
	Holder       string    `json:"lease_holder,omitempty"`
	Until        time.Time `json:"lease_until,omitzero"`
}

// JobAAD binds a job's sealed request to its job.
func JobAAD(id string) string { return "job:" + id }

// ResumeAAD binds an anonymous job's second sealed copy of its request to
// its job. That copy is sealed with a key of the job's own in the account
// key file (named ResumeKeyName(id), in a slot of the account sequence)
// and lets any gateway run the job again after the one running it
// stopped; the key is destroyed when the job finishes, so the prompt is
// readable by the operator only while the job is unfinished.
func ResumeAAD(id string) string { return "job-resume:" + id }

// ResumeKeyName is the name (the account-key tag's input) of an
// anonymous job's resume key.
func ResumeKeyName(id string) string { return "job-resume:" + id }

// JobClaimLimit bounds the jobs one ClaimJobs call takes.
const JobClaimLimit = 64

// NewJobID returns an unguessable job ID.
func NewJobID() string { return newID("job_") }

// CreateJob stores j (queued) unless its owner already has a job under
// j.IdemKey, which it returns instead with created false. anonKey seals
// the request of a job without an owner; an owner's jobs use the
// account's key. A non-zero j.LeaseUntil leases the job to this client.
func (db *DB) CreateJob(j Job, anonKey []byte) (Job, bool, error) {
	if j.ID == "" || (j.Owner == "" && len(anonKey) != 32) {
		return Job{}, false, errors.New("store: a job needs an ID, and a key when it has no owner")
	}
	now := db.now().UTC()
	var resumeSlot uint64
	var resumeSealed []byte
	if j.Owner == "" {
		slot, err := db.reserveSlot(bucketAccounts)
		if err != nil {
			return Job{}, false, err
		}
		key, err := db.keys.create(slot, ownerTag(ResumeKeyName(j.ID)))
		if err != nil {
			return Job{}, false, err
		}
		if resumeSealed, err = seal(key, ResumeAAD(j.ID), j.Request); err != nil {
			return Job{}, false, err
		}
		resumeSlot = slot
	}
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
					out = rec.job()
					return nil
				}
			}
			if key, err = db.keys.get(acct.Slot, ownerTag(acct.ID)); err != nil {
				return err
			}
		}
		j.Status, j.Created, j.Updated = JobQueued, now, now
		rec := jobRecord{Job: j, ResumeSlot: resumeSlot, ResumeSealed: resumeSealed}
		if !j.LeaseUntil.IsZero() {
			rec.Holder, rec.Until = db.jobHolder, j.LeaseUntil.UTC()
		}
		var err error
		if rec.Sealed, err = seal(key, JobAAD(j.ID), j.Request); err != nil {
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
		out, created = rec.job(), true
		out.Request = j.Request
		return nil
	})
	if err != nil && resumeSlot != 0 {
		db.keys.destroy(resumeSlot)
	}
	return out, created, err
}

// job is the record's Job with its lease filled in, without its request.
func (rec jobRecord) job() Job {
	j := rec.Job
	j.Request = nil
	j.LeaseHolder, j.LeaseUntil = rec.Holder, rec.Until
	return j
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
	j := rec.job()
	if j.Request, err = unseal(key, JobAAD(id), rec.Sealed); err != nil {
		return Job{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return j, nil
}

// UpdateJob changes the stored job with fn (never its request, owner or
// keys; its lease only as Job.LeaseUntil says) and returns it as stored,
// without its request. A job fn finishes loses its lease and its resume
// copy, whose key is destroyed.
func (db *DB) UpdateJob(id string, fn func(*Job) error) (Job, error) {
	var out Job
	var destroy uint64
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		destroy = 0
		var rec jobRecord
		if err := getJSON(tx.Bucket(bucketJobs), []byte(id), &rec); err != nil {
			return err
		}
		j := rec.job()
		if err := fn(&j); err != nil {
			return err
		}
		j.ID, j.Owner, j.TokenHash, j.IdemKey, j.RequestHash, j.Created = rec.ID, rec.Owner, rec.TokenHash, rec.IdemKey, rec.RequestHash, rec.Created
		j.Updated = db.now().UTC()
		j.Request = nil
		switch {
		case j.Finished() || j.LeaseUntil.IsZero():
			rec.Holder, rec.Until = "", time.Time{}
		default:
			if rec.Holder == "" {
				rec.Holder = db.jobHolder
			}
			rec.Until = j.LeaseUntil.UTC()
		}
		if j.Finished() && rec.ResumeSealed != nil {
			rec.ResumeSealed, destroy = nil, rec.ResumeSlot
		}
		rec.Job = j
		out = rec.job()
		return putJSON(tx.Bucket(bucketJobs), []byte(id), rec)
	})
	if err == nil && destroy != 0 {
		err = db.keys.destroy(destroy)
	}
	return out, err
}

// JobLeaseHolder names this client in job leases.
func (db *DB) JobLeaseHolder() string { return db.jobHolder }

// ClaimJobs leases to this client, until now+ttl, up to JobClaimLimit
// unfinished jobs nobody else holds: never leased, their lease lapsed or,
// since bbolt lets one process at a time open the file, leased by an
// earlier run of the store (a gateway killed mid-job). It returns them
// with their request opened (an anonymous one's from its resume copy), or
// nil when it can no longer be read (an erased owner, a destroyed key).
func (db *DB) ClaimJobs(ttl time.Duration) ([]Job, error) {
	now := db.now().UTC()
	var claimed []jobRecord
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		claimed = nil
		b := tx.Bucket(bucketJobs)
		var recs []jobRecord
		err := b.ForEach(func(k, v []byte) error {
			var rec jobRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if !rec.Finished() && (rec.Holder != db.jobHolder || !rec.Until.After(now)) && len(recs) < JobClaimLimit {
				recs = append(recs, rec)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, rec := range recs {
			rec.Holder, rec.Until = db.jobHolder, now.Add(ttl)
			if err := putJSON(b, []byte(rec.ID), rec); err != nil {
				return err
			}
			claimed = append(claimed, rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Job, 0, len(claimed))
	for _, rec := range claimed {
		j := rec.job()
		j.Request = db.openForResume(rec)
		out = append(out, j)
	}
	return out, nil
}

// openForResume opens a job's request with its owner's key or its resume
// key; nil when neither opens it.
func (db *DB) openForResume(rec jobRecord) []byte {
	if rec.Owner != "" {
		j, err := db.Job(rec.ID, nil)
		if err != nil {
			return nil
		}
		return j.Request
	}
	if rec.ResumeSealed == nil {
		return nil
	}
	key, err := db.keys.get(rec.ResumeSlot, ownerTag(ResumeKeyName(rec.ID)))
	if err != nil {
		return nil
	}
	req, err := unseal(key, ResumeAAD(rec.ID), rec.ResumeSealed)
	if err != nil {
		return nil
	}
	return req
}

// RenewJobLeases extends to now+ttl this client's leases on the jobs ids
// and returns those it still holds; a job missing from the answer was
// finished, or claimed by another client after the lease lapsed, and must
// not be run or recorded here any more.
func (db *DB) RenewJobLeases(ids []string, ttl time.Duration) ([]string, error) {
	now := db.now().UTC()
	var held []string
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		held = nil
		b := tx.Bucket(bucketJobs)
		for _, id := range ids {
			var rec jobRecord
			err := getJSON(b, []byte(id), &rec)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if rec.Finished() || rec.Holder != db.jobHolder {
				continue
			}
			rec.Until = now.Add(ttl)
			if err := putJSON(b, []byte(id), rec); err != nil {
				return err
			}
			held = append(held, id)
		}
		return nil
	})
	return held, err
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
			if rec.ResumeSlot != 0 {
				// Destroyed when the job finished; again in case that failed.
				if err := db.keys.destroy(rec.ResumeSlot); err != nil {
					return err
				}
			}
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
