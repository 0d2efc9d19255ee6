package store

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// ErrNotSuspended reports a lift of a suspension on an account that is
// not suspended (active, or being erased: an erasure is never undone).
var ErrNotSuspended = errors.New("store: account not suspended")

// SuspendedAccounts returns the ids of suspended accounts, in id order,
// for an operator's review.
func (db *DB) SuspendedAccounts() ([]string, error) {
	var ids []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
			var rec struct {
				Status AccountStatus `json:"status"`
			}
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if rec.Status == StatusSuspended {
				ids = append(ids, string(k))
			}
			return nil
		})
	})
	return ids, err
}

// LiftSuspension makes a suspended account active again, in one
// transaction, so a lift racing an erasure or a second lift changes the
// account at most once. Its sessions stay ended (the suspension ended
// them): the owner signs in again. It is ErrNotSuspended for an account
// in any other state and ErrNotFound for none.
func (db *DB) LiftSuspension(id string) error {
	return db.updateAccount(id, func(_ *bolt.Tx, rec *accountRecord, _ []byte) error {
		if rec.Status != StatusSuspended {
			return ErrNotSuspended
		}
		rec.Status = StatusActive
		return nil
	})
}
