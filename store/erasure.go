package store

import (
	"bytes"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Erasure reasons, recorded with the job.
const (
	ErasureByUser  = "user"  // the account holder asked (promise R3)
	ErasureByAdmin = "admin" // an operator, e.g. answering an emailed request
	ErasureMinor   = "minor" // the account belongs to a minor (promise A4)
)

// ErasureJob is an account being erased. The job is durable: a process
// that dies midway finds it on restart and finishes it.
type ErasureJob struct {
	AccountID string    `json:"account"`
	Reason    string    `json:"reason"`
	Started   time.Time `json:"started"`
	// Mailed is set once the confirmation email went out, so a resumed
	// job does not send it twice.
	Mailed bool `json:"mailed"`
	// slot is the account's key slot, kept here so a job resumed after
	// the account record is gone still destroys the key.
	Slot uint64 `json:"slot"`
}

// BeginErasure starts erasing an account: in one transaction it marks the
// account as being erased (it can no longer sign in or act), ends its
// sessions, revokes its API keys and email links, releases its credit
// holds and records the job. Beginning twice is harmless.
func (db *DB) BeginErasure(accountID, reason string) (ErasureJob, error) {
	job := ErasureJob{AccountID: accountID, Reason: reason, Started: db.now().UTC()}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketErasures)
		if err := getJSON(jobs, []byte(accountID), &job); err == nil {
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		rec, err := getAccount(tx, accountID)
		if err != nil {
			return err
		}
		rec.Status = StatusErasing
		job.Slot = rec.Slot
		if err := putJSON(tx.Bucket(bucketAccounts), []byte(accountID), rec); err != nil {
			return err
		}
		if _, err := deleteSessions(tx, accountID, ""); err != nil {
			return err
		}
		if _, err := deleteAPIKeys(tx, accountID); err != nil {
			return err
		}
		if err := deleteTokens(tx, accountID, ""); err != nil {
			return err
		}
		return putJSON(jobs, []byte(accountID), job)
	})
	return job, err
}

// PendingErasures lists the jobs not yet finished, oldest first.
func (db *DB) PendingErasures() ([]ErasureJob, error) {
	var jobs []ErasureJob
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketErasures).ForEach(func(_, v []byte) error {
			var j ErasureJob
			if err := decodeRecord(v, &j); err != nil {
				return err
			}
			jobs = append(jobs, j)
			return nil
		})
	})
	return jobs, err
}

// EraseStep deletes the next part of an erasing account's data: up to
// batch generations (their outputs are queued for deletion when nobody
// else references them), then its consent records, security-log rows,
// credit holds and Stripe link. It returns done when nothing is left but
// the account record itself (see FinishErasure). Each call is one short
// transaction, so erasing a large account never blocks other writers.
func (db *DB) EraseStep(accountID string, batch int) (done bool, err error) {
	now := db.now().UTC()
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketErasures).Get([]byte(accountID)) == nil {
			return ErrNotFound
		}
		prefix := compositeKey([]byte(accountID), nil)
		gens := firstKeys(tx.Bucket(bucketGenerations), prefix, batch)
		for _, k := range gens {
			if err := deleteGeneration(tx, now, accountID, string(k[len(prefix):]), false); err != nil {
				return err
			}
		}
		if len(gens) > 0 {
			return nil
		}
		if err := eraseAccountRecords(tx, accountID); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

// eraseAccountRecords deletes everything of an account but its
// generations (erased first, in batches) and its account record: consent
// records, profile, security-log rows, credit holds, notify rows and the
// Stripe link. FinishErasure runs it again in its own transaction, so
// whatever a late writer added between the last step and the end goes too.
func eraseAccountRecords(tx *bolt.Tx, accountID string) error {
	prefix := compositeKey([]byte(accountID), nil)
	for _, k := range prefixKeys(tx.Bucket(bucketConsents), prefix) {
		if err := tx.Bucket(bucketConsents).Delete(k); err != nil {
			return err
		}
	}
	if err := deleteProfile(tx, accountID); err != nil {
		return err
	}
	if err := eraseAccountJobs(tx, accountID); err != nil {
		return err
	}
	for _, k := range prefixKeys(tx.Bucket(bucketAccountSecurity), prefix) {
		if err := tx.Bucket(bucketSecurityLog).Delete(k[len(prefix):]); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAccountSecurity).Delete(k); err != nil {
			return err
		}
	}
	var holds []string
	err := tx.Bucket(bucketHolds).ForEach(func(k, v []byte) error {
		var h Hold
		if err := decodeRecord(v, &h); err != nil {
			return err
		}
		if h.AccountID == accountID {
			holds = append(holds, h.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range holds {
		if _, err := takeHold(tx, id); err != nil {
			return err
		}
	}
	if err := forgetNotifyRecipient(tx, accountID); err != nil {
		return err
	}
	return unlinkStripeCustomer(tx, accountID)
}

// firstKeys returns copies of at most n keys of b that start with prefix.
func firstKeys(b *bolt.Bucket, prefix []byte, n int) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(keys) < n; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	return keys
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
	return db.bolt.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketErasures)
		var j ErasureJob
		if err := getJSON(jobs, []byte(accountID), &j); err != nil {
			return err
		}
		j.Mailed = true
		return putJSON(jobs, []byte(accountID), j)
	})
}

// FinishErasure removes the account record and its lookup entries and
// destroys the account's key, so that every sealed copy of its email and
// prompts — in freed pages of the file or in older backups — is noise.
// What law requires keeping stays, pseudonymous: ledger entries (keyed by
// the random account id, which nothing links to a person any more) and
// items under legal hold. The job is deleted last, so a crash before that
// resumes here.
func (db *DB) FinishErasure(accountID string) error {
	var job ErasureJob
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := getJSON(tx.Bucket(bucketErasures), []byte(accountID), &job); err != nil {
			return err
		}
		rec, err := getAccount(tx, accountID)
		if errors.Is(err, ErrNotFound) {
			return nil // removed by an earlier, interrupted attempt
		}
		if err != nil {
			return err
		}
		prefix := compositeKey([]byte(accountID), nil)
		if len(firstKeys(tx.Bucket(bucketGenerations), prefix, 1)) > 0 {
			return errors.New("store: erasure not finished: generations remain (run EraseStep until done)")
		}
		if err := eraseAccountRecords(tx, accountID); err != nil {
			return err
		}
		if err := tx.Bucket(bucketAccountEmails).Delete(rec.EmailIndex); err != nil {
			return err
		}
		if rec.GoogleIndex != nil {
			if err := tx.Bucket(bucketAccountGoogle).Delete(rec.GoogleIndex); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketAccounts).Delete([]byte(accountID))
	})
	if err != nil {
		return err
	}
	if err := db.keys.destroy(job.Slot); err != nil {
		return err
	}
	// The account's index entries linger in freed pages under the current
	// lookup-index key: a new key, and the old one destroyed, make them
	// match nothing. Before the job goes, so a failure is retried.
	if err := db.RotateIndexKey(); err != nil {
		return err
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketErasures).Delete([]byte(accountID))
	})
}
