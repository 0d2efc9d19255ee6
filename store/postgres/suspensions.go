package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// SuspendedAccounts returns the ids of suspended accounts, in id order.
func (db *DB) SuspendedAccounts() ([]string, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT id FROM accounts WHERE status = $1 ORDER BY id`, store.StatusSuspended)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// LiftSuspension makes a suspended account active again under its row
// lock, so a lift racing an erasure or another lift changes it at most
// once; its sessions stay ended. store.ErrNotSuspended for an account in
// any other state, store.ErrNotFound for none.
func (db *DB) LiftSuspension(id string) error {
	return db.updateAccount(id, func(_ context.Context, _ pgx.Tx, r *accountRow, _ []byte) error {
		if r.Status != store.StatusSuspended {
			return store.ErrNotSuspended
		}
		r.Status = store.StatusActive
		return nil
	})
}
