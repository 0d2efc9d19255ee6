package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

func profileAAD(accountID string) string { return "profile:" + accountID }

// Profile returns the account's profile; an account that never set one
// has the zero Profile. A missing account is store.ErrNotFound.
func (db *DB) Profile(accountID string) (store.Profile, error) {
	ctx, cancel := db.op()
	defer cancel()
	r, err := getAccount(ctx, db.pool, accountID, "")
	if err != nil {
		return store.Profile{}, err
	}
	var sealed []byte
	err = db.pool.QueryRow(ctx, `SELECT display_name FROM profiles WHERE account_id = $1`, accountID).Scan(&sealed)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && sealed == nil) {
		return store.Profile{}, nil
	}
	if err != nil {
		return store.Profile{}, err
	}
	key, err := db.keys.AccountKey(uint64(r.Slot), r.ID)
	if err != nil {
		return store.Profile{}, err
	}
	name, err := store.Unseal(key, profileAAD(accountID), sealed)
	if err != nil {
		return store.Profile{}, err
	}
	return store.Profile{DisplayName: string(name)}, nil
}

// SetProfile replaces the account's profile; an empty one removes it.
func (db *DB) SetProfile(accountID string, p store.Profile) error {
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := getActiveAccount(ctx, tx, accountID, "FOR SHARE")
		if err != nil {
			return err
		}
		if p == (store.Profile{}) {
			_, err := tx.Exec(ctx, `DELETE FROM profiles WHERE account_id = $1`, accountID)
			return err
		}
		key, err := db.keys.AccountKey(uint64(r.Slot), r.ID)
		if err != nil {
			return err
		}
		sealed, err := store.Seal(key, profileAAD(accountID), []byte(p.DisplayName))
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO profiles (account_id, display_name) VALUES ($1, $2)
			ON CONFLICT (account_id) DO UPDATE SET display_name = excluded.display_name`, accountID, sealed)
		return err
	})
}
