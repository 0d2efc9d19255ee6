package store

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Profile is what an account says about itself beyond its sign-in details
// (promise R2: users can correct it). In the file it exists only sealed
// with the account's key, so erasing the account makes every copy noise.
type Profile struct {
	DisplayName string
}

// profileRecord is a profile as stored.
type profileRecord struct {
	DisplayName []byte `json:"display_name,omitempty"`
}

func profileAAD(accountID string) string { return "profile:" + accountID }

// Profile returns the account's profile; an account that never set one has
// the zero Profile. A missing account is ErrNotFound.
func (db *DB) Profile(accountID string) (Profile, error) {
	var p Profile
	err := db.bolt.View(func(tx *bolt.Tx) error {
		rec, err := getAccount(tx, accountID)
		if err != nil {
			return err
		}
		var pr profileRecord
		if err := getJSON(tx.Bucket(bucketProfiles), []byte(accountID), &pr); errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if pr.DisplayName == nil {
			return nil
		}
		key, err := db.keys.get(rec.Slot, ownerTag(rec.ID))
		if err != nil {
			return err
		}
		name, err := unseal(key, profileAAD(accountID), pr.DisplayName)
		if err != nil {
			return err
		}
		p.DisplayName = string(name)
		return nil
	})
	return p, err
}

// SetProfile replaces the account's profile. The caller validates the
// fields; an empty profile removes the record.
func (db *DB) SetProfile(accountID string, p Profile) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		rec, err := getActiveAccount(tx, accountID)
		if err != nil {
			return err
		}
		if p == (Profile{}) {
			return deleteProfile(tx, accountID)
		}
		key, err := db.keys.get(rec.Slot, ownerTag(rec.ID))
		if err != nil {
			return err
		}
		var pr profileRecord
		if pr.DisplayName, err = seal(key, profileAAD(accountID), []byte(p.DisplayName)); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketProfiles), []byte(accountID), pr)
	})
}

// deleteProfile removes the account's profile record; erasure calls it
// (the sealed bytes left in freed pages die with the account's key).
func deleteProfile(tx *bolt.Tx, accountID string) error {
	return tx.Bucket(bucketProfiles).Delete([]byte(accountID))
}

// UpdateSettings applies fn to the account's settings in one write
// transaction, so concurrent changes of different switches do not undo
// each other. It returns the settings now in force and whether fn changed
// them. Settings fn leaves as they are cost no write transaction at all
// (the GPC opt-out runs on every request that carries the signal), so fn
// may run twice and must depend only on its argument.
func (db *DB) UpdateSettings(accountID string, fn func(*Settings)) (Settings, bool, error) {
	var (
		out     Settings
		changed bool
	)
	apply := func(tx *bolt.Tx) (accountRecord, error) {
		rec, err := getActiveAccount(tx, accountID)
		if err != nil {
			return rec, err
		}
		out = rec.Settings
		fn(&out)
		changed = out != rec.Settings
		return rec, nil
	}
	if err := db.bolt.View(func(tx *bolt.Tx) error { _, err := apply(tx); return err }); err != nil || !changed {
		return out, false, err
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		rec, err := apply(tx)
		if err != nil || !changed {
			return err
		}
		rec.Settings = out
		return putJSON(tx.Bucket(bucketAccounts), []byte(accountID), rec)
	})
	return out, changed, err
}

// CancelEmailChange revokes the account's pending change of address: the
// link sent to the new address stops working. It reports whether a change
// was pending.
func (db *DB) CancelEmailChange(accountID string) (bool, error) {
	var cancelled bool
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		n, err := deleteTokensWhere(tx, func(t emailToken) bool {
			return t.AccountID == accountID && t.Purpose == purposeVerify && t.NewEmail != nil
		})
		cancelled = n > 0
		return err
	})
	return cancelled, err
}
