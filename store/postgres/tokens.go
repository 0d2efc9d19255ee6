package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// Purposes of emailed single-use tokens (the bbolt store's values).
const (
	purposeReset  = "reset"
	purposeVerify = "verify"
)

// CreatePasswordReset issues a single-use reset token for the account,
// valid for ttl.
func (db *DB) CreatePasswordReset(accountID string, ttl time.Duration) (string, error) {
	return db.createEmailToken(accountID, purposeReset, "", ttl)
}

// CreateEmailVerification issues a single-use token proving an address:
// the account's current one (newEmail empty) or a new one. Only the latest
// verification token of an account stays valid.
func (db *DB) CreateEmailVerification(accountID, newEmail string, ttl time.Duration) (string, error) {
	return db.createEmailToken(accountID, purposeVerify, store.NormalizeEmail(newEmail), ttl)
}

func (db *DB) createEmailToken(accountID, purpose, newEmail string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", errors.New("postgres: token lifetime must be positive")
	}
	token, hash := store.NewToken("", 32)
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		// FOR UPDATE serialises issuers, so "only the latest verification
		// token" holds across gateways too.
		acct, err := getActiveAccount(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		var sealed []byte
		if newEmail != "" {
			key, err := db.keys.AccountKey(uint64(acct.Slot), acct.ID)
			if err != nil {
				return err
			}
			if sealed, err = store.Seal(key, "new-email:"+string(hash), []byte(newEmail)); err != nil {
				return err
			}
		}
		if purpose == purposeVerify {
			if err := deleteTokens(ctx, tx, accountID, purposeVerify); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO email_tokens (hash, account_id, purpose, expires, new_email) VALUES ($1, $2, $3, $4, $5)`,
			hash, accountID, purpose, db.now().UTC().Add(ttl), sealed)
		return err
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

type tokenRow struct {
	AccountID string
	Purpose   string
	Expires   time.Time
	NewEmail  []byte
}

// liveToken reads the token stored under hash: store.ErrNotFound if there
// is none of purpose, store.ErrExpired if it is past its time.
func (db *DB) liveToken(ctx context.Context, q querier, hash []byte, purpose, lock string) (tokenRow, error) {
	var t tokenRow
	err := q.QueryRow(ctx, `SELECT account_id, purpose, expires, new_email FROM email_tokens WHERE hash = $1 `+lock, hash).
		Scan(&t.AccountID, &t.Purpose, &t.Expires, &t.NewEmail)
	if err != nil {
		return t, notFound(err)
	}
	if t.Purpose != purpose {
		return t, store.ErrNotFound
	}
	if !db.now().Before(t.Expires) {
		return t, store.ErrExpired
	}
	return t, nil
}

// CheckPasswordReset reports whether token is a live reset token of an
// active account, without spending it.
func (db *DB) CheckPasswordReset(token string) error {
	ctx, cancel := db.op()
	defer cancel()
	t, err := db.liveToken(ctx, db.pool, store.HashToken(token), purposeReset, "")
	if err != nil {
		return err
	}
	_, err = getActiveAccount(ctx, db.pool, t.AccountID, "")
	return err
}

// ConsumePasswordReset spends a reset token: the new password hash, every
// reset and verification token of the account gone, every session ended,
// the API keys revoked or flagged as keys says; an unverified account
// becomes verified and loses its API keys whatever keys says.
func (db *DB) ConsumePasswordReset(token, newHash string, keys store.APIKeyAction) (store.PasswordChange, error) {
	var ch store.PasswordChange
	id, err := db.consumeEmailToken(token, purposeReset, func(ctx context.Context, tx pgx.Tx, r *accountRow, _ tokenRow, _ []byte) error {
		ch = store.PasswordChange{AccountID: r.ID}
		action := keys
		r.PasswordHash = newHash
		if !r.EmailVerified {
			r.EmailVerified = true
			action = store.RevokeAPIKeys
		}
		if err := applyKeyAction(ctx, tx, &ch, action, "password_reset", db.now().UTC()); err != nil {
			return err
		}
		if err := deleteTokens(ctx, tx, r.ID, purposeVerify); err != nil {
			return err
		}
		var err error
		ch.SessionsEnded, err = deleteSessions(ctx, tx, r.ID, "")
		return err
	})
	if err != nil {
		return store.PasswordChange{}, err
	}
	ch.AccountID = id
	return ch, nil
}

// ConfirmEmail spends a verification token: the address is marked
// verified, or replaced by the new one the token was issued for
// (store.ErrConflict if another account took it meanwhile).
func (db *DB) ConfirmEmail(token string) (string, error) {
	return db.consumeEmailToken(token, purposeVerify, func(ctx context.Context, tx pgx.Tx, r *accountRow, t tokenRow, key []byte) error {
		if t.NewEmail == nil {
			r.EmailVerified = true
			return nil
		}
		email, err := store.Unseal(key, "new-email:"+string(store.HashToken(token)), t.NewEmail)
		if err != nil {
			return err
		}
		return db.setEmail(ctx, tx, r, key, string(email))
	})
}

// consumeEmailToken checks and deletes a token (and its siblings of the
// same purpose), then applies fn to the account, in one transaction. The
// token row is locked first, so two gateways spending one token at once
// cannot both succeed.
func (db *DB) consumeEmailToken(token, purpose string, fn func(ctx context.Context, tx pgx.Tx, r *accountRow, t tokenRow, key []byte) error) (string, error) {
	hash := store.HashToken(token)
	var accountID string
	expired := false
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		expired = false
		t, err := db.liveToken(ctx, tx, hash, purpose, "FOR UPDATE")
		if errors.Is(err, store.ErrExpired) {
			expired = true
			_, err := tx.Exec(ctx, `DELETE FROM email_tokens WHERE hash = $1`, hash)
			return err // committed: expired tokens go away
		}
		if err != nil {
			return err
		}
		if err := deleteTokens(ctx, tx, t.AccountID, purpose); err != nil {
			return err
		}
		r, err := getActiveAccount(ctx, tx, t.AccountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		key, err := db.keys.AccountKey(uint64(r.Slot), r.ID)
		if err != nil {
			return err
		}
		if err := fn(ctx, tx, &r, t, key); err != nil {
			return err
		}
		accountID = r.ID
		return putAccount(ctx, tx, r)
	})
	if err == nil && expired {
		return "", store.ErrExpired
	}
	return accountID, err
}

// CancelEmailChange revokes the account's pending change of address. It
// reports whether a change was pending.
func (db *DB) CancelEmailChange(accountID string) (bool, error) {
	ctx, cancel := db.op()
	defer cancel()
	tag, err := db.pool.Exec(ctx, `DELETE FROM email_tokens WHERE account_id = $1 AND purpose = $2 AND new_email IS NOT NULL`,
		accountID, purposeVerify)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// deleteTokens deletes the account's tokens of purpose (all if empty).
func deleteTokens(ctx context.Context, tx pgx.Tx, accountID, purpose string) error {
	_, err := tx.Exec(ctx, `DELETE FROM email_tokens WHERE account_id = $1 AND ($2 = '' OR purpose = $2)`, accountID, purpose)
	return err
}
