package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// apiKeyTouchEvery bounds LastUsed writes to one per key per interval.
const apiKeyTouchEvery = time.Hour

const apiKeyCols = `id, account_id, name, hint, created, last_used, scopes, flagged, flagged_by`

func scanAPIKey(row pgx.Row) (store.APIKey, error) {
	var k store.APIKey
	var flagged *time.Time
	err := row.Scan(&k.ID, &k.AccountID, &k.Name, &k.Hint, &k.Created, &k.LastUsed, &k.Scopes, &flagged, &k.FlaggedBy)
	k.Created, k.LastUsed = k.Created.UTC(), k.LastUsed.UTC()
	if flagged != nil {
		k.Flagged = flagged.UTC()
	}
	if len(k.Scopes) == 0 {
		k.Scopes = slices.Clone(store.DefaultAPIKeyScopes)
	}
	return k, notFound(err)
}

// grantScopes is what a key asked for scopes gets, as in the bbolt store:
// nil is store.DefaultAPIKeyScopes; each must be one of store.Scopes;
// duplicates go and the order is store.Scopes'.
func grantScopes(scopes []string) ([]string, error) {
	if scopes == nil {
		scopes = store.DefaultAPIKeyScopes
	}
	for _, s := range scopes {
		if !slices.Contains(store.Scopes, s) {
			return nil, fmt.Errorf("postgres: unknown API key scope %q", s)
		}
	}
	var granted []string
	for _, s := range store.Scopes {
		if slices.Contains(scopes, s) {
			granted = append(granted, s)
		}
	}
	if len(granted) == 0 {
		return nil, errors.New("postgres: an API key needs at least one scope")
	}
	return granted, nil
}

// CreateAPIKey issues a key with scopes for an active account and returns
// its secret.
func (db *DB) CreateAPIKey(accountID, name string, scopes []string) (string, store.APIKey, error) {
	granted, err := grantScopes(scopes)
	if err != nil {
		return "", store.APIKey{}, err
	}
	secret, hash := store.NewToken(store.APIKeyPrefix, 24)
	k := store.APIKey{ID: store.NewID("key_"), AccountID: accountID, Name: name,
		Hint: secret[:len(store.APIKeyPrefix)+4], Created: db.now().UTC(), Scopes: granted}
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := getActiveAccount(ctx, tx, accountID, "FOR SHARE"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO api_keys (hash, `+apiKeyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, '')`,
			hash, k.ID, k.AccountID, k.Name, k.Hint, k.Created, k.LastUsed, k.Scopes)
		return err
	})
	if err != nil {
		return "", store.APIKey{}, err
	}
	return secret, k, nil
}

// ValidateAPIKey returns the key named by secret, noting its use at most
// once an hour.
func (db *DB) ValidateAPIKey(secret string) (store.APIKey, error) {
	hash := store.HashToken(secret)
	ctx, cancel := db.op()
	defer cancel()
	k, err := scanAPIKey(db.pool.QueryRow(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE hash = $1`, hash))
	if err != nil {
		return store.APIKey{}, err
	}
	now := db.now().UTC()
	if now.Sub(k.LastUsed) < apiKeyTouchEvery {
		return k, nil
	}
	return scanAPIKey(db.pool.QueryRow(ctx, `UPDATE api_keys SET last_used = $2 WHERE hash = $1 RETURNING `+apiKeyCols, hash, now))
}

// APIKeys lists the account's keys, oldest first.
func (db *DB) APIKeys(accountID string) ([]store.APIKey, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE account_id = $1 ORDER BY created, id`, accountID)
	if err != nil {
		return nil, err
	}
	var keys []store.APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// DeleteAPIKey revokes one of the account's keys.
func (db *DB) DeleteAPIKey(accountID, keyID string) error {
	ctx, cancel := db.op()
	defer cancel()
	tag, err := db.pool.Exec(ctx, `DELETE FROM api_keys WHERE account_id = $1 AND id = $2`, accountID, keyID)
	if err != nil {
		return notFound(err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// applyKeyAction does keys to the account's API keys within a password
// change (by: "password_change" or "password_reset").
func applyKeyAction(ctx context.Context, tx pgx.Tx, ch *store.PasswordChange, keys store.APIKeyAction, by string, now time.Time) error {
	switch keys {
	case store.RevokeAPIKeys, "":
		tag, err := tx.Exec(ctx, `DELETE FROM api_keys WHERE account_id = $1`, ch.AccountID)
		ch.KeysRevoked = int(tag.RowsAffected())
		return err
	case store.FlagAPIKeys:
		tag, err := tx.Exec(ctx, `UPDATE api_keys SET flagged = $2, flagged_by = $3 WHERE account_id = $1`, ch.AccountID, now, by)
		ch.KeysFlagged = int(tag.RowsAffected())
		return err
	}
	return errors.New("postgres: unknown API key action")
}
