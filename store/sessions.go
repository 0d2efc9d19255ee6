package store

import (
	"bytes"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SessionPolicy bounds a session's life.
type SessionPolicy struct {
	// Idle ends a session unused for this long.
	Idle time.Duration
	// Absolute ends a session this long after sign-in, used or not.
	Absolute time.Duration
}

// sessionTouchEvery is how stale LastSeen may get before a validation
// writes it back; it bounds writes to one per session per interval.
const sessionTouchEvery = time.Minute

// Session is a signed-in browser. The token that names it is never stored,
// only its SHA-256.
type Session struct {
	AccountID string
	Created   time.Time
	LastSeen  time.Time
	IdleUntil time.Time
	Expires   time.Time
}

type sessionRecord struct {
	AccountID string        `json:"account"`
	Created   time.Time     `json:"created"`
	LastSeen  time.Time     `json:"last_seen"`
	Idle      time.Duration `json:"idle"`
	Expires   time.Time     `json:"expires"`
}

func (r sessionRecord) session() Session {
	return Session{AccountID: r.AccountID, Created: r.Created, LastSeen: r.LastSeen, IdleUntil: r.LastSeen.Add(r.Idle), Expires: r.Expires}
}

// CreateSession starts a session for an active account and returns its
// token (128 random bits).
func (db *DB) CreateSession(accountID string, p SessionPolicy) (string, Session, error) {
	if p.Idle <= 0 || p.Absolute <= 0 {
		return "", Session{}, errors.New("store: session policy needs idle and absolute timeouts")
	}
	token, hash := newToken("", 16)
	now := db.now().UTC()
	rec := sessionRecord{AccountID: accountID, Created: now, LastSeen: now, Idle: p.Idle, Expires: now.Add(p.Absolute)}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if _, err := getActiveAccount(tx, accountID); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketSessions), hash, rec); err != nil {
			return err
		}
		return tx.Bucket(bucketAccountSessions).Put(compositeKey([]byte(accountID), hash), nil)
	})
	if err != nil {
		return "", Session{}, err
	}
	return token, rec.session(), nil
}

// ValidateSession returns the live session named by token, refreshing its
// idle deadline. An unknown token is ErrNotFound; a session past its idle or
// absolute deadline is ErrExpired (and is deleted).
func (db *DB) ValidateSession(token string) (Session, error) {
	hash := hashToken(token)
	now := db.now().UTC()
	var rec sessionRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketSessions), hash, &rec)
	})
	if err != nil {
		return Session{}, err
	}
	if !now.Before(rec.Expires) || !now.Before(rec.LastSeen.Add(rec.Idle)) {
		_ = db.bolt.Update(func(tx *bolt.Tx) error { return deleteSession(tx, hash) })
		return Session{}, ErrExpired
	}
	if now.Sub(rec.LastSeen) < sessionTouchEvery {
		return rec.session(), nil
	}
	// Refresh LastSeen, re-checking under the write lock: the session may
	// have been revoked since the read.
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		if err := getJSON(b, hash, &rec); err != nil {
			return err
		}
		rec.LastSeen = now
		return putJSON(b, hash, rec)
	})
	if err != nil {
		return Session{}, err
	}
	return rec.session(), nil
}

// DeleteSession ends the session named by token. Ending an unknown session
// is not an error.
func (db *DB) DeleteSession(token string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return deleteSession(tx, hashToken(token)) })
}

// DeleteSessions ends every session of the account except the one named by
// keep (empty: none kept), returning how many ended.
func (db *DB) DeleteSessions(accountID, keep string) (int, error) {
	var n int
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		n, err = deleteSessions(tx, accountID, keep)
		return err
	})
	return n, err
}

func deleteSessions(tx *bolt.Tx, accountID, keep string) (int, error) {
	var keepHash []byte
	if keep != "" {
		keepHash = hashToken(keep)
	}
	prefix := compositeKey([]byte(accountID), nil)
	n := 0
	for _, k := range prefixKeys(tx.Bucket(bucketAccountSessions), prefix) {
		hash := k[len(prefix):]
		if keepHash != nil && bytes.Equal(hash, keepHash) {
			continue
		}
		if err := deleteSession(tx, hash); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func deleteSession(tx *bolt.Tx, hash []byte) error {
	b := tx.Bucket(bucketSessions)
	var rec sessionRecord
	if err := getJSON(b, hash, &rec); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	if err := b.Delete(hash); err != nil {
		return err
	}
	return tx.Bucket(bucketAccountSessions).Delete(compositeKey([]byte(rec.AccountID), hash))
}

// SessionCount returns how many sessions the account has (live or not yet
// swept).
func (db *DB) SessionCount(accountID string) int {
	n := 0
	db.bolt.View(func(tx *bolt.Tx) error {
		n = len(prefixKeys(tx.Bucket(bucketAccountSessions), compositeKey([]byte(accountID), nil)))
		return nil
	})
	return n
}
