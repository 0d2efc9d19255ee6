package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// sessionTouchEvery is how stale LastSeen may get before a validation
// writes it back, as in the bbolt store.
const sessionTouchEvery = time.Minute

type sessionRow struct {
	AccountID string
	Created   time.Time
	LastSeen  time.Time
	Idle      time.Duration
	Expires   time.Time
}

func (r sessionRow) session() store.Session {
	return store.Session{AccountID: r.AccountID, Created: r.Created.UTC(), LastSeen: r.LastSeen.UTC(),
		IdleUntil: r.LastSeen.Add(r.Idle).UTC(), Expires: r.Expires.UTC()}
}

// CreateSession starts a session for an active account and returns its
// token (128 random bits); only its SHA-256 is stored.
func (db *DB) CreateSession(accountID string, p store.SessionPolicy) (string, store.Session, error) {
	if p.Idle <= 0 || p.Absolute <= 0 {
		return "", store.Session{}, errors.New("postgres: session policy needs idle and absolute timeouts")
	}
	token, hash := store.NewToken("", 16)
	now := db.now().UTC()
	r := sessionRow{AccountID: accountID, Created: now, LastSeen: now, Idle: p.Idle, Expires: now.Add(p.Absolute)}
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		// FOR SHARE: a concurrent suspension or erasure (FOR UPDATE, then
		// deleting sessions) waits for this insert or sees it.
		if _, err := getActiveAccount(ctx, tx, accountID, "FOR SHARE"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO sessions (hash, account_id, created, last_seen, idle_ns, expires)
			VALUES ($1, $2, $3, $4, $5, $6)`, hash, accountID, r.Created, r.LastSeen, int64(r.Idle), r.Expires)
		return err
	})
	if err != nil {
		return "", store.Session{}, err
	}
	return token, r.session(), nil
}

// ValidateSession returns the live session named by token, refreshing its
// idle deadline at most once a minute. An unknown token is
// store.ErrNotFound; a session past its idle or absolute deadline is
// store.ErrExpired (and is deleted). Every call reads the database, so a
// sign-out on one gateway is effective on all of them at once.
func (db *DB) ValidateSession(token string) (store.Session, error) {
	hash := store.HashToken(token)
	now := db.now().UTC()
	ctx, cancel := db.op()
	defer cancel()
	var r sessionRow
	var idle int64
	err := db.pool.QueryRow(ctx, `SELECT account_id, created, last_seen, idle_ns, expires FROM sessions WHERE hash = $1`, hash).
		Scan(&r.AccountID, &r.Created, &r.LastSeen, &idle, &r.Expires)
	if err != nil {
		return store.Session{}, notFound(err)
	}
	r.Idle = time.Duration(idle)
	if !now.Before(r.Expires) || !now.Before(r.LastSeen.Add(r.Idle)) {
		_, _ = db.pool.Exec(ctx, `DELETE FROM sessions WHERE hash = $1`, hash)
		return store.Session{}, store.ErrExpired
	}
	if now.Sub(r.LastSeen) < sessionTouchEvery {
		return r.session(), nil
	}
	// The update matches nothing if the session was revoked since the read.
	tag, err := db.pool.Exec(ctx, `UPDATE sessions SET last_seen = $2 WHERE hash = $1`, hash, now)
	if err != nil {
		return store.Session{}, err
	}
	if tag.RowsAffected() == 0 {
		return store.Session{}, store.ErrNotFound
	}
	r.LastSeen = now
	return r.session(), nil
}

// DeleteSession ends the session named by token. Ending an unknown session
// is not an error.
func (db *DB) DeleteSession(token string) error {
	ctx, cancel := db.op()
	defer cancel()
	_, err := db.pool.Exec(ctx, `DELETE FROM sessions WHERE hash = $1`, store.HashToken(token))
	return err
}

// DeleteSessions ends every session of the account except the one named by
// keep (empty: none kept), returning how many ended.
func (db *DB) DeleteSessions(accountID, keep string) (int, error) {
	var n int
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		n, err = deleteSessions(ctx, tx, accountID, keep)
		return err
	})
	return n, err
}

func deleteSessions(ctx context.Context, tx pgx.Tx, accountID, keep string) (int, error) {
	var keepHash []byte
	if keep != "" {
		keepHash = store.HashToken(keep)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM sessions WHERE account_id = $1 AND ($2::bytea IS NULL OR hash <> $2)`, accountID, keepHash)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// SessionCount returns how many sessions the account has (live or not yet
// swept).
func (db *DB) SessionCount(accountID string) int {
	ctx, cancel := db.op()
	defer cancel()
	var n int
	db.pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE account_id = $1`, accountID).Scan(&n)
	return n
}
