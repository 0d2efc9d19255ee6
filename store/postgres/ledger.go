package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

const ledgerCols = `seq, time, kind, amount, balance, ref, money_minor, currency`

func scanEntry(row pgx.Row) (store.LedgerEntry, error) {
	var e store.LedgerEntry
	var seq int64
	err := row.Scan(&seq, &e.Time, &e.Kind, &e.Amount, &e.Balance, &e.Ref, &e.MoneyMinor, &e.Currency)
	e.Seq, e.Time = uint64(seq), e.Time.UTC()
	return e, notFound(err)
}

func collectEntries(rows pgx.Rows, err error) ([]store.LedgerEntry, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.LedgerEntry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// AddCredit appends an entry to the account's ledger and updates its
// balance. If the account already has an entry with c.Ref, nothing changes
// and applied is false: callers may retry freely.
func (db *DB) AddCredit(accountID string, c store.Credit) (e store.LedgerEntry, applied bool, err error) {
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := getAccount(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		e, applied, err = db.addCredit(ctx, tx, &r, c)
		if err != nil || !applied {
			return err
		}
		return putAccount(ctx, tx, r)
	})
	return e, applied, err
}

// addCredit appends c to the ledger of r, whose row the caller holds FOR
// UPDATE and writes back.
func (db *DB) addCredit(ctx context.Context, tx pgx.Tx, r *accountRow, c store.Credit) (store.LedgerEntry, bool, error) {
	if c.Ref == "" || c.Kind == "" {
		return store.LedgerEntry{}, false, errors.New("postgres: ledger entry needs a kind and a ref")
	}
	e, err := scanEntry(tx.QueryRow(ctx, `SELECT `+ledgerCols+` FROM ledger WHERE account_id = $1 AND ref = $2`, r.ID, c.Ref))
	if err == nil {
		return e, false, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.LedgerEntry{}, false, err
	}
	r.LedgerSeq++
	r.Balance += c.Amount
	e = store.LedgerEntry{
		Seq: uint64(r.LedgerSeq), Time: db.now().UTC(), Kind: c.Kind, Amount: c.Amount, Balance: r.Balance,
		Ref: c.Ref, MoneyMinor: c.MoneyMinor, Currency: c.Currency,
	}
	_, err = tx.Exec(ctx, `INSERT INTO ledger (account_id, `+ledgerCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.ID, r.LedgerSeq, e.Time, e.Kind, e.Amount, e.Balance, e.Ref, e.MoneyMinor, e.Currency)
	if err != nil {
		return store.LedgerEntry{}, false, err
	}
	return e, true, nil
}

// LedgerEntryByRef returns the account's entry with ref.
func (db *DB) LedgerEntryByRef(accountID, ref string) (store.LedgerEntry, error) {
	ctx, cancel := db.op()
	defer cancel()
	return scanEntry(db.pool.QueryRow(ctx, `SELECT `+ledgerCols+` FROM ledger WHERE account_id = $1 AND ref = $2`, accountID, ref))
}

// ApplyGrant adds the plan allowance for period once: a second call for
// the same period, from any gateway, changes nothing. It reports whether
// the grant was applied now.
func (db *DB) ApplyGrant(accountID, period string, amount int64) (bool, error) {
	var applied bool
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		applied = false
		r, err := getAccount(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		if r.GrantPeriod == period {
			return nil
		}
		if amount > 0 {
			if _, applied, err = db.addCredit(ctx, tx, &r, store.Credit{Kind: store.KindGrant, Amount: amount, Ref: "plan:" + period}); err != nil {
				return err
			}
		}
		r.GrantPeriod = period
		return putAccount(ctx, tx, r)
	})
	return applied, err
}

// Reserve holds amount credits of an active account for a generation, or
// fails with store.ErrInsufficientCredits if the available balance is
// smaller. The account row is locked FOR UPDATE for the check and the
// hold, so reservations from any number of gateways never overspend.
func (db *DB) Reserve(accountID string, amount int64, ref string) (store.Hold, error) {
	return db.ReserveHold(store.Hold{ID: store.NewID("hold_"), AccountID: accountID, Amount: amount, Ref: ref})
}

// ReserveHold is Reserve under the ID h.ID the caller chose, as
// store.DB.ReserveHold; an ID already held is store.ErrConflict (the
// holds table's primary key).
func (db *DB) ReserveHold(h store.Hold) (store.Hold, error) {
	if h.Amount <= 0 {
		return store.Hold{}, errors.New("postgres: reservation must be positive")
	}
	h.Created = db.now().UTC()
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := getActiveAccount(ctx, tx, h.AccountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		if r.Balance-r.Held < h.Amount {
			return store.ErrInsufficientCredits
		}
		if _, err := tx.Exec(ctx, `UPDATE accounts SET held = held + $2 WHERE id = $1`, h.AccountID, h.Amount); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO holds (id, account_id, amount, ref, created) VALUES ($1, $2, $3, $4, $5)`,
			h.ID, h.AccountID, h.Amount, h.Ref, h.Created)
		if isUnique(err) {
			return store.ErrConflict
		}
		return err
	})
	if err != nil {
		return store.Hold{}, err
	}
	return h, nil
}

// CommitHold turns a hold into a charge in one transaction. Committing a
// hold twice (from any gateways) charges once; the second is
// store.ErrNotFound.
func (db *DB) CommitHold(holdID string) (store.LedgerEntry, error) {
	var e store.LedgerEntry
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		h, r, err := takeHold(ctx, tx, holdID)
		if err != nil {
			return err
		}
		if r == nil {
			return store.ErrNotFound // the account was erased meanwhile
		}
		if e, _, err = db.addCredit(ctx, tx, r, store.Credit{Kind: store.KindCharge, Amount: -h.Amount, Ref: "gen:" + h.ID}); err != nil {
			return err
		}
		return putAccount(ctx, tx, *r)
	})
	return e, err
}

// ReleaseHold returns a hold's credits to the available balance. Releasing
// an unknown or already settled hold is not an error.
func (db *DB) ReleaseHold(holdID string) error {
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		_, r, err := takeHold(ctx, tx, holdID)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil || r == nil {
			return err
		}
		return putAccount(ctx, tx, *r)
	})
}

// takeHold deletes a hold (the DELETE's row lock makes a concurrent second
// taker find nothing) and returns its account, locked, with the held
// amount lowered; nil if the account is gone.
func takeHold(ctx context.Context, tx pgx.Tx, holdID string) (store.Hold, *accountRow, error) {
	var h store.Hold
	err := tx.QueryRow(ctx, `DELETE FROM holds WHERE id = $1 RETURNING id, account_id, amount, ref, created`, holdID).
		Scan(&h.ID, &h.AccountID, &h.Amount, &h.Ref, &h.Created)
	if err != nil {
		return store.Hold{}, nil, notFound(err)
	}
	r, err := getAccount(ctx, tx, h.AccountID, "FOR UPDATE")
	if errors.Is(err, store.ErrNotFound) {
		return h, nil, nil
	}
	if err != nil {
		return store.Hold{}, nil, err
	}
	r.Held -= h.Amount
	return h, &r, nil
}

// Ledger returns the account's entries in order.
func (db *DB) Ledger(accountID string) ([]store.LedgerEntry, error) {
	ctx, cancel := db.op()
	defer cancel()
	return collectEntries(db.pool.Query(ctx, `SELECT `+ledgerCols+` FROM ledger WHERE account_id = $1 ORDER BY seq`, accountID))
}

// Reconcile recomputes every account's balance from its ledger and its
// held amount from its open holds; with fix, mismatched accounts are set
// to the recomputed values (the ledger is the truth).
func (db *DB) Reconcile(fix bool) ([]store.Mismatch, error) {
	var out []store.Mismatch
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		lock := ""
		if fix {
			lock = "FOR UPDATE OF a"
		}
		rows, err := tx.Query(ctx, `SELECT a.id, a.balance, a.held,
				coalesce((SELECT sum(amount) FROM ledger l WHERE l.account_id = a.id), 0)::bigint,
				coalesce((SELECT sum(amount) FROM holds h WHERE h.account_id = a.id), 0)::bigint
			FROM accounts a ORDER BY a.id `+lock)
		if err != nil {
			return err
		}
		for rows.Next() {
			var m store.Mismatch
			if err := rows.Scan(&m.AccountID, &m.Balance, &m.Held, &m.LedgerSum, &m.HoldSum); err != nil {
				rows.Close()
				return err
			}
			if m.Balance != m.LedgerSum || m.Held != m.HoldSum {
				out = append(out, m)
			}
		}
		if err := rows.Err(); err != nil || !fix {
			return err
		}
		for _, m := range out {
			if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = $2, held = $3 WHERE id = $1`, m.AccountID, m.LedgerSum, m.HoldSum); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ReleaseStaleHolds releases holds older than maxAge: generations that
// never settled because their gateway died mid-call. It returns how many.
func (db *DB) ReleaseStaleHolds(maxAge time.Duration) (int, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT id FROM holds WHERE created < $1`, db.now().Add(-maxAge))
	if err != nil {
		return 0, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := db.ReleaseHold(id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}
