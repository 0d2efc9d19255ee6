package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// apiKeyTouchEvery bounds LastUsed writes to one per key per interval.
const apiKeyTouchEvery = time.Hour

const apiKeyCols = `id, account_id, name, hint, created, last_used`

func scanAPIKey(row pgx.Row) (store.APIKey, error) {
	var k store.APIKey
	err := row.Scan(&k.ID, &k.AccountID, &k.Name, &k.Hint, &k.Created, &k.LastUsed)
	k.Created, k.LastUsed = k.Created.UTC(), k.LastUsed.UTC()
	return k, notFound(err)
}

// CreateAPIKey issues a key for an active account and returns its secret.
func (db *DB) CreateAPIKey(accountID, name string) (string, store.APIKey, error) {
	secret, hash := store.NewToken(store.APIKeyPrefix, 24)
	k := store.APIKey{ID: store.NewID("key_"), AccountID: accountID, Name: name,
		Hint: secret[:len(store.APIKeyPrefix)+4], Created: db.now().UTC()}
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := getActiveAccount(ctx, tx, accountID, "FOR SHARE"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO api_keys (hash, `+apiKeyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			hash, k.ID, k.AccountID, k.Name, k.Hint, k.Created, k.LastUsed)
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
