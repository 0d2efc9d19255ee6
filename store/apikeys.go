package store

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// APIKeyPrefix starts every API key, so leaked keys are recognisable to
// secret scanners.
const APIKeyPrefix = "sk_"

// apiKeyTouchEvery bounds LastUsed writes to one per key per interval.
const apiKeyTouchEvery = time.Hour

// APIKey describes a server-to-server credential. The secret is shown once
// at creation and stored only as its SHA-256.
type APIKey struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account"`
	Name      string    `json:"name"`
	Hint      string    `json:"hint"` // the first characters, to tell keys apart
	Created   time.Time `json:"created"`
	LastUsed  time.Time `json:"last_used"`
}

// CreateAPIKey issues a key for an active account and returns its secret.
func (db *DB) CreateAPIKey(accountID, name string) (string, APIKey, error) {
	secret, hash := newToken(APIKeyPrefix, 24)
	k := APIKey{ID: newID("key_"), AccountID: accountID, Name: name, Hint: secret[:len(APIKeyPrefix)+4], Created: db.now().UTC()}
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
	err := db.bolt.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketAPIKeys), hash, &k) })
	if err != nil {
		return APIKey{}, err
	}
	now := db.now().UTC()
	if now.Sub(k.LastUsed) >= apiKeyTouchEvery {
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAPIKeys)
			if err := getJSON(b, hash, &k); err != nil {
				return err
			}
			k.LastUsed = now
			return putJSON(b, hash, k)
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
			var key APIKey
			if err := getJSON(tx.Bucket(bucketAPIKeys), idx.Get(k), &key); err != nil {
				return err
			}
			keys = append(keys, key)
		}
		return nil
	})
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

func deleteAPIKeys(tx *bolt.Tx, accountID string) error {
	idx := tx.Bucket(bucketAccountAPIKeys)
	for _, k := range prefixKeys(idx, compositeKey([]byte(accountID), nil)) {
		hash := append([]byte(nil), idx.Get(k)...)
		if err := tx.Bucket(bucketAPIKeys).Delete(hash); err != nil {
			return err
		}
		if err := idx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
