package store

import (
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Purposes of emailed single-use tokens.
const (
	purposeReset  = "reset"  // sets a new password
	purposeVerify = "verify" // proves the account's address (or a new one)
)

// emailToken is a single-use token sent by email. Only its hash is the key;
// a new address waiting for verification is sealed with the account key.
type emailToken struct {
	AccountID string    `json:"account"`
	Purpose   string    `json:"purpose"`
	Expires   time.Time `json:"expires"`
	NewEmail  []byte    `json:"new_email,omitempty"`
}

// CreatePasswordReset issues a single-use reset token for the account,
// valid for ttl.
func (db *DB) CreatePasswordReset(accountID string, ttl time.Duration) (string, error) {
	return db.createEmailToken(accountID, purposeReset, "", ttl)
}

// CreateEmailVerification issues a single-use token proving an address:
// the account's current one (newEmail empty) or a new one it wants to move
// to. Only the latest verification token of an account stays valid.
func (db *DB) CreateEmailVerification(accountID, newEmail string, ttl time.Duration) (string, error) {
	return db.createEmailToken(accountID, purposeVerify, NormalizeEmail(newEmail), ttl)
}

func (db *DB) createEmailToken(accountID, purpose, newEmail string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", errors.New("store: token lifetime must be positive")
	}
	token, hash := newToken("", 32)
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		acct, err := getActiveAccount(tx, accountID)
		if err != nil {
			return err
		}
		rec := emailToken{AccountID: accountID, Purpose: purpose, Expires: db.now().UTC().Add(ttl)}
		if newEmail != "" {
			key, err := db.keys.get(acct.Slot, ownerTag(acct.ID))
			if err != nil {
				return err
			}
			if rec.NewEmail, err = seal(key, "new-email:"+string(hash), []byte(newEmail)); err != nil {
				return err
			}
		}
		if purpose == purposeVerify {
			if err := deleteTokens(tx, accountID, purposeVerify); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketResets), hash, rec)
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// ConsumePasswordReset spends a reset token: in one transaction it sets the
// new password hash, deletes every reset token of the account (so a second
// emailed link dies too), ends every session and revokes or flags the API
// keys as keys says. An unknown or used token is ErrNotFound; an old one
// ErrExpired.
//
// The link proves the address, so an account that never verified it
// becomes verified; and since whoever signed up with the address may not
// own it, that account's API keys die whatever keys says.
func (db *DB) ConsumePasswordReset(token, newHash string, keys APIKeyAction) (PasswordChange, error) {
	var ch PasswordChange
	id, err := db.consumeEmailToken(token, purposeReset, func(tx *bolt.Tx, rec *accountRecord, _ emailToken, _ []byte) error {
		rec.PasswordHash = newHash
		ch.AccountID = rec.ID
		if !rec.EmailVerified {
			rec.EmailVerified = true
			keys = RevokeAPIKeys
		}
		if err := applyKeyAction(tx, &ch, keys, "password_reset", db.now().UTC()); err != nil {
			return err
		}
		// A pending change of address dies too: whoever reset the
		// password may be undoing a takeover that started it.
		if err := deleteTokens(tx, rec.ID, purposeVerify); err != nil {
			return err
		}
		var err error
		ch.SessionsEnded, err = deleteSessions(tx, rec.ID, "")
		return err
	})
	if err != nil {
		return PasswordChange{}, err
	}
	ch.AccountID = id
	return ch, nil
}

// CheckPasswordReset reports whether token is a live reset token of an
// active account, without spending it: ErrNotFound, ErrExpired or
// ErrAccountInactive otherwise. It lets a caller refuse a bad token before
// paying for a password hash.
func (db *DB) CheckPasswordReset(token string) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		t, err := db.liveToken(tx, hashToken(token), purposeReset)
		if err != nil {
			return err
		}
		_, err = getActiveAccount(tx, t.AccountID)
		return err
	})
}

// liveToken reads the token stored under hash: ErrNotFound if there is
// none of purpose, ErrExpired if it is past its time.
func (db *DB) liveToken(tx *bolt.Tx, hash []byte, purpose string) (emailToken, error) {
	var t emailToken
	if err := getJSON(tx.Bucket(bucketResets), hash, &t); err != nil {
		return t, err
	}
	if t.Purpose != purpose {
		return t, ErrNotFound
	}
	if !db.now().Before(t.Expires) {
		return t, ErrExpired
	}
	return t, nil
}

// ConfirmEmail spends a verification token: the account's address is
// marked verified, or replaced by the new address the token was issued
// for (ErrConflict if another account took it meanwhile). It returns the
// account id.
func (db *DB) ConfirmEmail(token string) (string, error) {
	return db.consumeEmailToken(token, purposeVerify, func(tx *bolt.Tx, rec *accountRecord, t emailToken, key []byte) error {
		if t.NewEmail == nil {
			rec.EmailVerified = true
			return nil
		}
		email, err := unseal(key, "new-email:"+string(hashToken(token)), t.NewEmail)
		if err != nil {
			return err
		}
		return db.setEmail(tx, rec, key, string(email))
	})
}

// consumeEmailToken checks and deletes a token (and its siblings of the
// same purpose), then applies fn to the account, in one transaction.
func (db *DB) consumeEmailToken(token, purpose string, fn func(tx *bolt.Tx, rec *accountRecord, t emailToken, key []byte) error) (string, error) {
	hash := hashToken(token)
	var accountID string
	expired := false
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		t, err := db.liveToken(tx, hash, purpose)
		if errors.Is(err, ErrExpired) {
			expired = true
			return tx.Bucket(bucketResets).Delete(hash) // committed: expired tokens go away
		}
		if err != nil {
			return err
		}
		if err := deleteTokens(tx, t.AccountID, purpose); err != nil {
			return err
		}
		rec, err := getActiveAccount(tx, t.AccountID)
		if err != nil {
			return err
		}
		key, err := db.keys.get(rec.Slot, ownerTag(rec.ID))
		if err != nil {
			return err
		}
		if err := fn(tx, &rec, t, key); err != nil {
			return err
		}
		accountID = rec.ID
		return putJSON(tx.Bucket(bucketAccounts), []byte(rec.ID), rec)
	})
	if err == nil && expired {
		return "", ErrExpired
	}
	return accountID, err
}

// deleteTokens deletes the account's tokens of purpose (all if empty).
// revokeCredentials ends every session, API key and emailed token of the
// account.
func revokeCredentials(tx *bolt.Tx, accountID string) error {
	if _, err := deleteSessions(tx, accountID, ""); err != nil {
		return err
	}
	if _, err := deleteAPIKeys(tx, accountID); err != nil {
		return err
	}
	return deleteTokens(tx, accountID, "")
}

func deleteTokens(tx *bolt.Tx, accountID, purpose string) error {
	_, err := deleteTokensWhere(tx, func(t emailToken) bool {
		return t.AccountID == accountID && (purpose == "" || t.Purpose == purpose)
	})
	return err
}

// deleteTokensWhere deletes every emailed token doomed picks and reports
// how many went.
func deleteTokensWhere(tx *bolt.Tx, doomed func(emailToken) bool) (int, error) {
	tokens := tx.Bucket(bucketResets)
	var keys [][]byte
	// The bucket holds only live tokens (the sweeper removes expired
	// ones), so a scan is cheap.
	err := tokens.ForEach(func(k, v []byte) error {
		var t emailToken
		if err := decodeRecord(v, &t); err != nil {
			return err
		}
		if doomed(t) {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := tokens.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}
