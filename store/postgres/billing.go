package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// StripeEventSeen reports whether the event was already applied: a cheap
// read before decoding. ApplyStripeEvent decides again in its transaction.
func (db *DB) StripeEventSeen(eventID string) (bool, error) {
	ctx, cancel := db.op()
	defer cancel()
	var seen bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_events WHERE id = $1)`, eventID).Scan(&seen)
	return seen, err
}

// ApplyStripeEvent applies the changes of one verified event and records
// its id in one transaction. The event's row is inserted first: a
// concurrent delivery of the same event to another gateway waits on the
// primary key, then conflicts and changes nothing (applied false). When a
// change's account cannot be found nothing is written and the error is
// store.ErrNotFound, as in the bbolt store.
func (db *DB) ApplyStripeEvent(ev store.StripeEvent, changes ...store.BillingChange) (applied bool, err error) {
	if ev.ID == "" || ev.Created.IsZero() {
		return false, errors.New("postgres: a Stripe event needs an id and a time")
	}
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		applied = false
		now := db.now().UTC()
		tag, err := tx.Exec(ctx, `INSERT INTO webhook_events (id, type, created, received) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO NOTHING`, ev.ID, ev.Type, ev.Created.UTC(), now)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		if err := store.ApplyBillingChanges(&billingTx{ctx: ctx, tx: tx, db: db}, ev, now, changes...); err != nil {
			return err
		}
		applied = true
		return nil
	})
	return applied, err
}

// PruneStripeEvents forgets the ids of events applied before cutoff.
func (db *DB) PruneStripeEvents(cutoff time.Time) (int, error) {
	ctx, cancel := db.op()
	defer cancel()
	tag, err := db.pool.Exec(ctx, `DELETE FROM webhook_events WHERE received < $1`, cutoff)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// Billing returns the account's Stripe state; an account that never
// checked out has an empty one.
func (db *DB) Billing(accountID string) (store.Billing, error) {
	ctx, cancel := db.op()
	defer cancel()
	return getBilling(ctx, db.pool, accountID, "")
}

func getBilling(ctx context.Context, q querier, accountID, lock string) (store.Billing, error) {
	b := store.Billing{AccountID: accountID}
	var state []byte
	err := q.QueryRow(ctx, `SELECT state FROM billing WHERE account_id = $1 `+lock, accountID).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && state == nil) {
		return b, nil
	}
	if err != nil {
		return b, err
	}
	if err := json.Unmarshal(state, &b); err != nil {
		return b, fmt.Errorf("postgres: decode billing: %w", err)
	}
	return b, nil
}

func putBilling(ctx context.Context, tx pgx.Tx, b store.Billing) error {
	state, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("postgres: encode billing: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO billing (account_id, customer_id, state) VALUES ($1, nullif($2, ''), $3)
		ON CONFLICT (account_id) DO UPDATE SET customer_id = excluded.customer_id, state = excluded.state`,
		b.AccountID, b.CustomerID, state)
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

// LinkStripeCustomer records customerID as the account's Stripe customer
// unless it already has one (whose id is returned), so racing checkouts on
// any gateways converge on one customer. It returns store.ErrConflict if
// customerID belongs to another account.
func (db *DB) LinkStripeCustomer(accountID, customerID string) (string, error) {
	if customerID == "" {
		return "", errors.New("postgres: empty Stripe customer id")
	}
	var linked string
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		// The account row lock serialises links of one account.
		if _, err := getAccount(ctx, tx, accountID, "FOR UPDATE"); err != nil {
			return err
		}
		var owner string
		err := tx.QueryRow(ctx, `SELECT account_id FROM billing WHERE customer_id = $1`, customerID).Scan(&owner)
		if err == nil && owner != accountID {
			return store.ErrConflict
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		b, err := getBilling(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		if b.CustomerID != "" {
			linked = b.CustomerID
			return nil
		}
		b.CustomerID, linked = customerID, customerID
		return putBilling(ctx, tx, b)
	})
	return linked, err
}

// UnlinkStripeCustomer forgets the account's Stripe customer and
// subscriptions (account erasure); ledger entries stay.
func (db *DB) UnlinkStripeCustomer(accountID string) error {
	ctx, cancel := db.op()
	defer cancel()
	_, err := db.pool.Exec(ctx, `DELETE FROM billing WHERE account_id = $1`, accountID)
	return err
}

// Transactions returns up to limit of the account's ledger entries other
// than generation charges, newest first.
func (db *DB) Transactions(accountID string, limit int) ([]store.LedgerEntry, error) {
	ctx, cancel := db.op()
	defer cancel()
	return collectEntries(db.pool.Query(ctx, `SELECT `+ledgerCols+` FROM ledger
		WHERE account_id = $1 AND kind <> $2 ORDER BY seq DESC LIMIT $3`, accountID, store.KindCharge, limit))
}

// BillingFlags returns every billing flag, ordered by id.
func (db *DB) BillingFlags() ([]store.BillingFlag, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT flag FROM billing_flags ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.BillingFlag, error) {
		var v []byte
		var f store.BillingFlag
		if err := row.Scan(&v); err != nil {
			return f, err
		}
		return f, json.Unmarshal(v, &f)
	})
}

// billingTx is store.BillingTx on a PostgreSQL transaction. Rows an event
// changes are locked as they are read; a payment or billing row that does
// not exist yet is inserted empty first, so two events about one new
// payment queue on its row instead of both creating it.
type billingTx struct {
	ctx context.Context
	tx  pgx.Tx
	db  *DB
}

func (b *billingTx) AccountExists(id string) (bool, error) {
	var ok bool
	err := b.tx.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)`, id).Scan(&ok)
	return ok, err
}

func (b *billingTx) CustomerAccount(customerID string) (string, error) {
	var id string
	err := b.tx.QueryRow(b.ctx, `SELECT account_id FROM billing WHERE customer_id = $1`, customerID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return id, err
}

func (b *billingTx) Payment(key string) ([]byte, error) {
	if _, err := b.tx.Exec(b.ctx, `INSERT INTO stripe_payments (key) VALUES ($1) ON CONFLICT (key) DO NOTHING`, key); err != nil {
		return nil, err
	}
	var v []byte
	err := b.tx.QueryRow(b.ctx, `SELECT record FROM stripe_payments WHERE key = $1 FOR UPDATE`, key).Scan(&v)
	return v, err
}

func (b *billingTx) PutPayment(key string, record []byte) error {
	_, err := b.tx.Exec(b.ctx, `UPDATE stripe_payments SET record = $2 WHERE key = $1`, key, record)
	return err
}

func (b *billingTx) Billing(accountID string) (store.Billing, error) {
	if _, err := b.tx.Exec(b.ctx, `INSERT INTO billing (account_id) VALUES ($1) ON CONFLICT (account_id) DO NOTHING`, accountID); err != nil {
		return store.Billing{}, err
	}
	return getBilling(b.ctx, b.tx, accountID, "FOR UPDATE")
}

func (b *billingTx) PutBilling(rec store.Billing) error { return putBilling(b.ctx, b.tx, rec) }

func (b *billingTx) AddCredit(accountID string, c store.Credit) error {
	r, err := getAccount(b.ctx, b.tx, accountID, "FOR UPDATE")
	if err != nil {
		return err
	}
	_, applied, err := b.db.addCredit(b.ctx, b.tx, &r, c)
	if err != nil || !applied {
		return err
	}
	return putAccount(b.ctx, b.tx, r)
}

func (b *billingTx) Available(accountID string) (int64, error) {
	var avail int64
	err := b.tx.QueryRow(b.ctx, `SELECT balance - held FROM accounts WHERE id = $1`, accountID).Scan(&avail)
	return avail, notFound(err)
}

func (b *billingTx) SetPlan(accountID, plan string) error {
	_, err := b.tx.Exec(b.ctx, `UPDATE accounts SET plan = $2 WHERE id = $1 AND plan <> $2`, accountID, plan)
	return err
}

func (b *billingTx) PutFlag(f store.BillingFlag) error {
	v, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("postgres: encode flag: %w", err)
	}
	_, err = b.tx.Exec(b.ctx, `INSERT INTO billing_flags (id, flag) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET flag = excluded.flag`, f.ID, v)
	return err
}

// OpenSubscriptionCheckout lets one subscription checkout per account be
// open at a time, as store.DB.OpenSubscriptionCheckout: the billing row is
// locked, so racing checkouts on any gateways get one answer.
func (db *DB) OpenSubscriptionCheckout(accountID string, c store.SubscriptionCheckout) (store.SubscriptionCheckout, error) {
	if c.PriceID == "" || c.Nonce == "" || c.Expires.IsZero() {
		return store.SubscriptionCheckout{}, errors.New("postgres: subscription checkout needs a price, a nonce and an expiry")
	}
	var out store.SubscriptionCheckout
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := getActiveAccount(ctx, tx, accountID, "FOR UPDATE"); err != nil {
			return err
		}
		b, err := getBilling(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		if open := b.Checkout; open != nil && db.now().Before(open.Expires) {
			if open.PriceID != c.PriceID {
				return store.ErrConflict
			}
			out = *open
			return nil
		}
		c.Expires = c.Expires.UTC()
		b.Checkout, out = &c, c
		return putBilling(ctx, tx, b)
	})
	return out, err
}
