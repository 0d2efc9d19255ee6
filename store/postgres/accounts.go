package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// accountRow is an account as stored. Personal fields are sealed with the
// account's key (slot Slot of the key file), as in the bbolt store.
type accountRow struct {
	ID            string
	Slot          int64
	EmailSealed   []byte
	EmailIndex    []byte
	EmailVerified bool
	GoogleSealed  []byte
	GoogleIndex   []byte
	PasswordHash  string
	Plan          string
	Status        store.AccountStatus
	Created       time.Time
	AgeAttested   time.Time
	Settings      store.Settings
	Balance       int64
	Held          int64
	LedgerSeq     int64
	GrantPeriod   string
}

const accountCols = `id, slot, email_sealed, email_index, email_verified, google_sealed, google_index,
	password_hash, plan, status, created, age_attested, settings, balance, held, ledger_seq, grant_period`

func scanAccount(row pgx.Row) (accountRow, error) {
	var r accountRow
	err := row.Scan(&r.ID, &r.Slot, &r.EmailSealed, &r.EmailIndex, &r.EmailVerified, &r.GoogleSealed, &r.GoogleIndex,
		&r.PasswordHash, &r.Plan, &r.Status, &r.Created, &r.AgeAttested, &r.Settings, &r.Balance, &r.Held, &r.LedgerSeq, &r.GrantPeriod)
	return r, notFound(err)
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// getAccount reads an account; lock is "" or a locking clause.
func getAccount(ctx context.Context, q querier, id, lock string) (accountRow, error) {
	return scanAccount(q.QueryRow(ctx, `SELECT `+accountCols+` FROM accounts WHERE id = $1 `+lock, id))
}

// getActiveAccount is getAccount for work only an active account may do:
// a suspended or erasing one is store.ErrAccountInactive.
func getActiveAccount(ctx context.Context, q querier, id, lock string) (accountRow, error) {
	r, err := getAccount(ctx, q, id, lock)
	if err == nil && r.Status != store.StatusActive {
		err = store.ErrAccountInactive
	}
	return r, err
}

// putAccount writes back every mutable column of r.
func putAccount(ctx context.Context, tx pgx.Tx, r accountRow) error {
	_, err := tx.Exec(ctx, `UPDATE accounts SET email_sealed = $2, email_index = $3, email_verified = $4,
		google_sealed = $5, google_index = $6, password_hash = $7, plan = $8, status = $9, settings = $10,
		balance = $11, held = $12, ledger_seq = $13, grant_period = $14 WHERE id = $1`,
		r.ID, r.EmailSealed, r.EmailIndex, r.EmailVerified, r.GoogleSealed, r.GoogleIndex, r.PasswordHash,
		r.Plan, r.Status, r.Settings, r.Balance, r.Held, r.LedgerSeq, r.GrantPeriod)
	if isUnique(err) {
		return store.ErrConflict
	}
	return err
}

// CreateAccount creates an account with its own encryption key. It returns
// store.ErrConflict if the email (or Google subject) already has an
// account: the unique indexes decide, so two gateways racing on one
// address cannot both win.
func (db *DB) CreateAccount(n store.NewAccount) (store.Account, error) {
	email := store.NormalizeEmail(n.Email)
	if email == "" {
		return store.Account{}, errors.New("postgres: account needs an email")
	}
	if n.AgeAttested.IsZero() {
		return store.Account{}, errors.New("postgres: account needs an age attestation")
	}
	ctx, cancel := db.op()
	defer cancel()
	// The slot is taken before any key is written; a failed insert leaves a
	// gap (an orphan key sealing nothing), never a reused slot.
	var slot int64
	if err := db.pool.QueryRow(ctx, `SELECT nextval('account_key_slots')`).Scan(&slot); err != nil {
		return store.Account{}, fmt.Errorf("postgres: key slot: %w", err)
	}
	r := accountRow{
		ID: store.NewID("acct_"), Slot: slot, EmailVerified: n.EmailVerified,
		PasswordHash: n.PasswordHash, Plan: n.Plan, Status: store.StatusActive,
		Created: db.now().UTC(), AgeAttested: n.AgeAttested.UTC(),
	}
	key, err := db.keys.CreateAccountKey(uint64(slot), r.ID)
	if err != nil {
		return store.Account{}, err
	}
	if r.EmailSealed, err = store.Seal(key, "email:"+r.ID, []byte(email)); err != nil {
		return store.Account{}, err
	}
	if n.GoogleSubject != "" {
		if r.GoogleSealed, err = store.Seal(key, "google:"+r.ID, []byte(n.GoogleSubject)); err != nil {
			return store.Account{}, err
		}
	}
	cancel()
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		// The index entries are made under the current lookup-index key,
		// which cannot change before the commit (see RotateIndexKey).
		var err error
		if r.EmailIndex, err = db.lookupKeyIn(ctx, tx, "FOR SHARE", "email", email); err != nil {
			return err
		}
		r.GoogleIndex = nil
		if n.GoogleSubject != "" {
			if r.GoogleIndex, err = db.lookupKeyIn(ctx, tx, "FOR SHARE", "google", n.GoogleSubject); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO accounts (`+accountCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
			r.ID, r.Slot, r.EmailSealed, r.EmailIndex, r.EmailVerified, r.GoogleSealed, r.GoogleIndex,
			r.PasswordHash, r.Plan, r.Status, r.Created, r.AgeAttested, r.Settings, r.Balance, r.Held, r.LedgerSeq, r.GrantPeriod)
		return err
	})
	if isUnique(err) {
		return store.Account{}, store.ErrConflict
	}
	if err != nil {
		return store.Account{}, fmt.Errorf("postgres: create account: %w", err)
	}
	return db.openAccount(r)
}

// Account returns the account with id.
func (db *DB) Account(id string) (store.Account, error) {
	ctx, cancel := db.op()
	defer cancel()
	r, err := getAccount(ctx, db.pool, id, "")
	if err != nil {
		return store.Account{}, err
	}
	return db.openAccount(r)
}

// AccountByEmail returns the account registered under email.
func (db *DB) AccountByEmail(email string) (store.Account, error) {
	return db.accountByIndex("email_index", "email", store.NormalizeEmail(email))
}

// AccountByGoogle returns the account linked to a Google subject.
func (db *DB) AccountByGoogle(subject string) (store.Account, error) {
	return db.accountByIndex("google_index", "google", subject)
}

// accountByIndex looks value up under the lookup-index key this gateway
// last used; on a miss it checks whether another gateway has rotated the
// key since, and looks again under the new one.
func (db *DB) accountByIndex(col, kind, value string) (store.Account, error) {
	ctx, cancel := db.op()
	defer cancel()
	slot, idx := db.cachedLookupKey(kind, value)
	for {
		r, err := scanAccount(db.pool.QueryRow(ctx, `SELECT `+accountCols+` FROM accounts WHERE `+col+` = $1`, idx))
		if err == nil {
			return db.openAccount(r)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Account{}, err
		}
		if idx, err = db.lookupKeyIn(ctx, db.pool, "", kind, value); err != nil {
			return store.Account{}, err
		}
		now, _ := db.cachedLookupKey(kind, value)
		if now == slot {
			return store.Account{}, store.ErrNotFound
		}
		slot = now
	}
}

// LinkGoogle attaches a Google subject to an existing account and marks its
// address verified; see store.DB.LinkGoogle for why an unverified account
// loses every credential in the same transaction.
func (db *DB) LinkGoogle(id, subject string) error {
	return db.updateAccount(id, func(ctx context.Context, tx pgx.Tx, r *accountRow, key []byte) error {
		idx, err := db.lookupKeyIn(ctx, tx, "FOR SHARE", "google", subject)
		if err != nil {
			return err
		}
		var owner string
		err = tx.QueryRow(ctx, `SELECT id FROM accounts WHERE google_index = $1`, idx).Scan(&owner)
		switch {
		case err == nil && owner == id:
			return nil
		case err == nil:
			return store.ErrConflict
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		if r.GoogleIndex != nil {
			return store.ErrConflict // a different subject is linked already
		}
		sealed, err := store.Seal(key, "google:"+id, []byte(subject))
		if err != nil {
			return err
		}
		if !r.EmailVerified {
			r.PasswordHash = ""
			if err := revokeCredentials(ctx, tx, id); err != nil {
				return err
			}
		}
		r.GoogleSealed, r.GoogleIndex, r.EmailVerified = sealed, idx, true
		return nil
	})
}

// SetPassword replaces the password hash, ends every session of the
// account except keep (empty ends them all) and revokes or flags its API
// keys as keys says.
func (db *DB) SetPassword(id, hash, keep string, keys store.APIKeyAction) (store.PasswordChange, error) {
	var ch store.PasswordChange
	err := db.updateAccount(id, func(ctx context.Context, tx pgx.Tx, r *accountRow, _ []byte) error {
		ch = store.PasswordChange{AccountID: id}
		r.PasswordHash = hash
		if err := applyKeyAction(ctx, tx, &ch, keys, "password_change", db.now().UTC()); err != nil {
			return err
		}
		var err error
		ch.SessionsEnded, err = deleteSessions(ctx, tx, id, keep)
		return err
	})
	if err != nil {
		return store.PasswordChange{}, err
	}
	return ch, nil
}

// SetEmail changes the account's email address (already verified by the
// caller). It returns store.ErrConflict if another account has it.
func (db *DB) SetEmail(id, email string) error {
	return db.updateAccount(id, func(ctx context.Context, tx pgx.Tx, r *accountRow, key []byte) error {
		return db.setEmail(ctx, tx, r, key, email)
	})
}

func (db *DB) setEmail(ctx context.Context, tx pgx.Tx, r *accountRow, key []byte, email string) error {
	email = store.NormalizeEmail(email)
	if email == "" {
		return errors.New("postgres: empty email")
	}
	idx, err := db.lookupKeyIn(ctx, tx, "FOR SHARE", "email", email)
	if err != nil {
		return err
	}
	var owner string
	err = tx.QueryRow(ctx, `SELECT id FROM accounts WHERE email_index = $1`, idx).Scan(&owner)
	switch {
	case err == nil && owner == r.ID:
		r.EmailVerified = true
		return nil
	case err == nil:
		return store.ErrConflict
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	sealed, err := store.Seal(key, "email:"+r.ID, []byte(email))
	if err != nil {
		return err
	}
	r.EmailSealed, r.EmailIndex, r.EmailVerified = sealed, idx, true
	return nil
}

// SetSettings replaces the account's settings.
func (db *DB) SetSettings(id string, s store.Settings) error {
	return db.updateAccount(id, func(_ context.Context, _ pgx.Tx, r *accountRow, _ []byte) error {
		r.Settings = s
		return nil
	})
}

// SetPlan moves the account to plan.
func (db *DB) SetPlan(id, plan string) error {
	return db.updateAccount(id, func(_ context.Context, _ pgx.Tx, r *accountRow, _ []byte) error {
		r.Plan = plan
		return nil
	})
}

// SetStatus changes the account's status; any status but active ends
// every session at once, on every gateway (they all read this database).
func (db *DB) SetStatus(id string, status store.AccountStatus) error {
	return db.updateAccount(id, func(ctx context.Context, tx pgx.Tx, r *accountRow, _ []byte) error {
		if r.Status == store.StatusErasing && status != store.StatusErasing {
			return store.ErrAccountInactive // an erasure is never undone
		}
		r.Status = status
		if status != store.StatusActive {
			_, err := deleteSessions(ctx, tx, id, "")
			return err
		}
		return nil
	})
}

// UpdateSettings applies fn to the account's settings under the row lock,
// so concurrent changes of different switches do not undo each other. It
// returns the settings in force and whether fn changed them; unchanged
// settings cost no write.
func (db *DB) UpdateSettings(accountID string, fn func(*store.Settings)) (store.Settings, bool, error) {
	ctx, cancel := db.op()
	defer cancel()
	r, err := getActiveAccount(ctx, db.pool, accountID, "")
	if err != nil {
		return store.Settings{}, false, err
	}
	out := r.Settings
	fn(&out)
	if out == r.Settings {
		return out, false, nil
	}
	var changed bool
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := getActiveAccount(ctx, tx, accountID, "FOR UPDATE")
		if err != nil {
			return err
		}
		out = r.Settings
		fn(&out)
		if changed = out != r.Settings; !changed {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE accounts SET settings = $2 WHERE id = $1`, accountID, out)
		return err
	})
	return out, changed, err
}

// updateAccount runs fn on the account's row, locked FOR UPDATE, and
// writes the result back in the same transaction.
func (db *DB) updateAccount(id string, fn func(ctx context.Context, tx pgx.Tx, r *accountRow, key []byte) error) error {
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := getAccount(ctx, tx, id, "FOR UPDATE")
		if err != nil {
			return err
		}
		key, err := db.keys.AccountKey(uint64(r.Slot), r.ID)
		if err != nil {
			return err
		}
		if err := fn(ctx, tx, &r, key); err != nil {
			return err
		}
		return putAccount(ctx, tx, r)
	})
}

// openAccount decrypts a row into an Account.
func (db *DB) openAccount(r accountRow) (store.Account, error) {
	key, err := db.keys.AccountKey(uint64(r.Slot), r.ID)
	if err != nil {
		return store.Account{}, err
	}
	email, err := store.Unseal(key, "email:"+r.ID, r.EmailSealed)
	if err != nil {
		return store.Account{}, err
	}
	a := store.Account{
		ID: r.ID, Email: string(email), EmailVerified: r.EmailVerified,
		PasswordHash: r.PasswordHash, Plan: r.Plan, Status: r.Status,
		Created: r.Created.UTC(), AgeAttested: r.AgeAttested.UTC(), Settings: r.Settings,
		Credits: r.Balance, Held: r.Held, GrantPeriod: r.GrantPeriod,
	}
	if r.GoogleSealed != nil {
		sub, err := store.Unseal(key, "google:"+r.ID, r.GoogleSealed)
		if err != nil {
			return store.Account{}, fmt.Errorf("postgres: google subject: %w", err)
		}
		a.GoogleSubject = string(sub)
	}
	return a, nil
}

// revokeCredentials ends every session, API key and emailed token of the
// account.
func revokeCredentials(ctx context.Context, tx pgx.Tx, accountID string) error {
	for _, q := range []string{
		`DELETE FROM sessions WHERE account_id = $1`,
		`DELETE FROM api_keys WHERE account_id = $1`,
		`DELETE FROM email_tokens WHERE account_id = $1`,
	} {
		if _, err := tx.Exec(ctx, q, accountID); err != nil {
			return err
		}
	}
	return nil
}
