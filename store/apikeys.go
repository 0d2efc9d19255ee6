package store

import (
	"errors"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// APIKeyPrefix starts every API key, so leaked keys are recognisable to
// secret scanners.
const APIKeyPrefix = "sk_"

// apiKeyTouchEvery bounds LastUsed writes to one per key per interval.
const apiKeyTouchEvery = time.Hour

// API key scopes: what a request signed with the key may do. A browser
// session needs none; keys carry only what their owner granted.
const (
	// ScopeImagesWrite generates and edits images for the account.
	ScopeImagesWrite = "images:write"
	// ScopeAccountRead reads the account, its history, keys and billing.
	ScopeAccountRead = "account:read"
)

// Scopes lists every scope a key can be granted.
var Scopes = []string{ScopeImagesWrite, ScopeAccountRead}

// DefaultAPIKeyScopes is what a key gets when its creator names none, and
// what a key created before scopes existed holds: images only. Reading
// the account must be granted explicitly.
var DefaultAPIKeyScopes = []string{ScopeImagesWrite}

// APIKey describes a server-to-server credential. The secret is shown once
// at creation and stored only as its SHA-256.
type APIKey struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account"`
	Name      string    `json:"name"`
	Hint      string    `json:"hint"` // the first characters, to tell keys apart
	Created   time.Time `json:"created"`
	LastUsed  time.Time `json:"last_used"`
	// Scopes are what the key may do. Records written before scopes
	// existed have none stored and read as DefaultAPIKeyScopes.
	Scopes []string `json:"scopes,omitempty"`
	// Flagged is when a password change kept this key working but marked
	// it for review (zero: never); FlaggedBy says which change.
	Flagged   time.Time `json:"flagged,omitzero"`
	FlaggedBy string    `json:"flagged_by,omitempty"`
}

// HasScope reports whether the key was granted scope.
func (k APIKey) HasScope(scope string) bool { return slices.Contains(k.Scopes, scope) }

// getAPIKey reads the key stored under hash, filling in the scopes of a
// record that predates them.
func getAPIKey(b *bolt.Bucket, hash []byte) (APIKey, error) {
	var k APIKey
	if err := getJSON(b, hash, &k); err != nil {
		return APIKey{}, err
	}
	if len(k.Scopes) == 0 {
		k.Scopes = slices.Clone(DefaultAPIKeyScopes)
	}
	return k, nil
}

// errUnknownScope refuses a key request naming a scope that does not exist.
var errUnknownScope = errors.New("store: unknown API key scope")

// CreateAPIKey issues a key for an active account and returns its secret.
// scopes nil means DefaultAPIKeyScopes; otherwise each must be one of
// Scopes (duplicates are dropped, the order is Scopes').
func (db *DB) CreateAPIKey(accountID, name string, scopes []string) (string, APIKey, error) {
	if scopes == nil {
		scopes = DefaultAPIKeyScopes
	}
	var granted []string
	for _, s := range Scopes {
		if slices.Contains(scopes, s) {
			granted = append(granted, s)
		}
	}
	for _, s := range scopes {
		if !slices.Contains(Scopes, s) {
			return "", APIKey{}, errUnknownScope
		}
	}
	if len(granted) == 0 {
		return "", APIKey{}, errors.New("store: an API key needs at least one scope")
	}
	secret, hash := newToken(APIKeyPrefix, 24)
	k := APIKey{ID: newID("key_"), AccountID: accountID, Name: name, Hint: secret[:len(APIKeyPrefix)+4], Created: db.now().UTC(), Scopes: granted}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if _, err := getActiveAccount(tx, accountID); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketAPIKeys), hash, k); err != nil {
			return err
		}
		return tx.Bucket(bucketAccountAPIKeys).Put(compositeKey([]byte(accountID), []byte(k.ID)), hash)
	})
	if err != nil {
		return "", APIKey{}, err
	}
	return secret, k, nil
}

// ValidateAPIKey returns the key named by secret.
func (db *DB) ValidateAPIKey(secret string) (APIKey, error) {
	hash := hashToken(secret)
	var k APIKey
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		k, err = getAPIKey(tx.Bucket(bucketAPIKeys), hash)
		return err
	})
	if err != nil {
		return APIKey{}, err
	}
	now := db.now().UTC()
	if now.Sub(k.LastUsed) >= apiKeyTouchEvery {
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAPIKeys)
			// The stored record, not k: a legacy record keeps reading as
			// legacy rather than having defaults written into it.
			var rec APIKey
			if err := getJSON(b, hash, &rec); err != nil {
				return err
			}
			rec.LastUsed = now
			k.LastUsed = now
			return putJSON(b, hash, rec)
		})
	}
	return k, err
}

// APIKeys lists the account's keys, oldest first.
func (db *DB) APIKeys(accountID string) ([]APIKey, error) {
	var keys []APIKey
	err := db.bolt.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketAccountAPIKeys)
		for _, k := range prefixKeys(idx, compositeKey([]byte(accountID), nil)) {
			key, err := getAPIKey(tx.Bucket(bucketAPIKeys), idx.Get(k))
			if err != nil {
				return err
			}
			keys = append(keys, key)
		}
		return nil
	})
	// The index orders by (random) id.
	slices.SortStableFunc(keys, func(a, b APIKey) int { return a.Created.Compare(b.Created) })
	return keys, err
}

// DeleteAPIKey revokes one of the account's keys.
func (db *DB) DeleteAPIKey(accountID, keyID string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketAccountAPIKeys)
		ik := compositeKey([]byte(accountID), []byte(keyID))
		hash := idx.Get(ik)
		if hash == nil {
			return ErrNotFound
		}
		if err := tx.Bucket(bucketAPIKeys).Delete(append([]byte(nil), hash...)); err != nil {
			return err
		}
		return idx.Delete(ik)
	})
}

// deleteAPIKeys revokes every key of the account and reports how many.
func deleteAPIKeys(tx *bolt.Tx, accountID string) (int, error) {
	idx := tx.Bucket(bucketAccountAPIKeys)
	n := 0
	for _, k := range prefixKeys(idx, compositeKey([]byte(accountID), nil)) {
		hash := append([]byte(nil), idx.Get(k)...)
		if err := tx.Bucket(bucketAPIKeys).Delete(hash); err != nil {
			return n, err
		}
		if err := idx.Delete(k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// flagAPIKeys marks every key of the account as kept through a password
// change (by) at now, and reports how many.
func flagAPIKeys(tx *bolt.Tx, accountID, by string, now time.Time) (int, error) {
	idx, keys := tx.Bucket(bucketAccountAPIKeys), tx.Bucket(bucketAPIKeys)
	n := 0
	for _, k := range prefixKeys(idx, compositeKey([]byte(accountID), nil)) {
		hash := append([]byte(nil), idx.Get(k)...)
		var rec APIKey
		if err := getJSON(keys, hash, &rec); err != nil {
			return n, err
		}
		rec.Flagged, rec.FlaggedBy = now, by
		if err := putJSON(keys, hash, rec); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// APIKeyAction is what a change of password does to the account's API
// keys: the user chooses, because a key may be what leaked or may be what
// keeps their integration running.
type APIKeyAction string

// API key actions of a password change or reset.
const (
	// RevokeAPIKeys deletes every key (the default).
	RevokeAPIKeys APIKeyAction = "revoke"
	// FlagAPIKeys keeps every key working and marks it for review.
	FlagAPIKeys APIKeyAction = "flag"
)

// PasswordChange is what setting a password did.
type PasswordChange struct {
	AccountID     string
	SessionsEnded int
	// KeysRevoked and KeysFlagged count the API keys deleted and kept
	// with a flag.
	KeysRevoked, KeysFlagged int
}

// applyKeyAction does keys to the account's API keys within a password
// change (by: "password_change" or "password_reset").
func applyKeyAction(tx *bolt.Tx, ch *PasswordChange, keys APIKeyAction, by string, now time.Time) error {
	var err error
	switch keys {
	case RevokeAPIKeys, "":
		ch.KeysRevoked, err = deleteAPIKeys(tx, ch.AccountID)
	case FlagAPIKeys:
		ch.KeysFlagged, err = flagAPIKeys(tx, ch.AccountID, by, now)
	default:
		err = errors.New("store: unknown API key action")
	}
	return err
}
