package store

import (
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/text/unicode/norm"
)

// AccountStatus is where an account is in its life.
type AccountStatus string

// Account statuses.
const (
	StatusActive    AccountStatus = "active"
	StatusSuspended AccountStatus = "suspended"
	StatusErasing   AccountStatus = "erasing"
)

// Settings are the account's own switches (promise R4). Non-essential
// email is opt-in; analytics and model-improvement use are opt-outs (both
// only ever see aggregated, anonymized data). The zero value is the
// default: no product email, analytics and model improvement not opted
// out. A Sec-GPC: 1 signal sets both opt-outs.
type Settings struct {
	ProductEmail       bool `json:"product_email"`
	NoAnalytics        bool `json:"no_analytics"`
	NoModelImprovement bool `json:"no_model_improvement"`
}

// Account is a user account. Email and GoogleSubject are decrypted for the
// caller; in the file they exist only sealed with the account's own key.
type Account struct {
	ID            string
	Email         string
	EmailVerified bool
	GoogleSubject string
	// PasswordHash is an argon2id PHC string, or empty for an account that
	// signs in with Google only. It never leaves the gateway.
	PasswordHash string
	Plan         string
	Status       AccountStatus
	Created      time.Time
	// AgeAttested is when the user declared being 18 or older.
	AgeAttested time.Time
	Settings    Settings
	// Credits is the balance: always the sum of the ledger.
	Credits int64
	// Held is the part of Credits reserved by generations in flight.
	Held int64
	// GrantPeriod names the last plan grant applied (e.g. "2026-11").
	GrantPeriod string
}

// Available is the balance a new reservation may use.
func (a Account) Available() int64 { return a.Credits - a.Held }

// accountRecord is an account as stored. Personal fields are sealed with
// the account's key (slot Slot of the key file).
type accountRecord struct {
	ID            string        `json:"id"`
	Slot          uint64        `json:"slot"`
	EmailSealed   []byte        `json:"email"`
	EmailIndex    []byte        `json:"email_index"`
	EmailVerified bool          `json:"email_verified"`
	GoogleSealed  []byte        `json:"google,omitempty"`
	GoogleIndex   []byte        `json:"google_index,omitempty"`
	PasswordHash  string        `json:"password_hash,omitempty"`
	Plan          string        `json:"plan"`
	Status        AccountStatus `json:"status"`
	Created       time.Time     `json:"created"`
	AgeAttested   time.Time     `json:"age_attested"`
	Settings      Settings      `json:"settings"`
	Balance       int64         `json:"balance"`
	Held          int64         `json:"held"`
	LedgerSeq     uint64        `json:"ledger_seq"`
	GrantPeriod   string        `json:"grant_period,omitempty"`
}

// NewAccount is what creating an account needs.
type NewAccount struct {
	Email         string
	EmailVerified bool
	PasswordHash  string
	GoogleSubject string
	Plan          string
	AgeAttested   time.Time
}

// NormalizeEmail is the form under which an address is unique: Unicode
// NFC, trimmed, lower-cased.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(norm.NFC.String(email)))
}

// CreateAccount creates an account with its own encryption key. It returns
// ErrConflict if the email (or Google subject) already has an account.
func (db *DB) CreateAccount(n NewAccount) (Account, error) {
	email := NormalizeEmail(n.Email)
	if email == "" {
		return Account{}, errors.New("store: account needs an email")
	}
	if n.AgeAttested.IsZero() {
		return Account{}, errors.New("store: account needs an age attestation")
	}
	slot, err := db.reserveSlot(bucketAccounts)
	if err != nil {
		return Account{}, err
	}
	var acct Account
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		emailIdx, err := db.lookupKey(tx, "email", email)
		if err != nil {
			return err
		}
		if tx.Bucket(bucketAccountEmails).Get(emailIdx) != nil {
			return ErrConflict
		}
		var googleIdx []byte
		if n.GoogleSubject != "" {
			if googleIdx, err = db.lookupKey(tx, "google", n.GoogleSubject); err != nil {
				return err
			}
			if tx.Bucket(bucketAccountGoogle).Get(googleIdx) != nil {
				return ErrConflict
			}
		}
		accounts := tx.Bucket(bucketAccounts)
		rec := accountRecord{
			ID: newID("acct_"), Slot: slot, EmailIndex: emailIdx, EmailVerified: n.EmailVerified,
			PasswordHash: n.PasswordHash, Plan: n.Plan, Status: StatusActive,
			Created: db.now().UTC(), AgeAttested: n.AgeAttested.UTC(),
		}
		key, err := db.keys.create(slot, ownerTag(rec.ID))
		if err != nil {
			return err
		}
		if rec.EmailSealed, err = seal(key, "email:"+rec.ID, []byte(email)); err != nil {
			return err
		}
		if n.GoogleSubject != "" {
			rec.GoogleIndex = googleIdx
			if rec.GoogleSealed, err = seal(key, "google:"+rec.ID, []byte(n.GoogleSubject)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketAccountGoogle).Put(googleIdx, []byte(rec.ID)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketAccountEmails).Put(emailIdx, []byte(rec.ID)); err != nil {
			return err
		}
		if err := putJSON(accounts, []byte(rec.ID), rec); err != nil {
			return err
		}
		acct, err = db.openAccount(rec)
		return err
	})
	return acct, err
}

// Account returns the account with id.
func (db *DB) Account(id string) (Account, error) {
	var acct Account
	err := db.bolt.View(func(tx *bolt.Tx) error {
		rec, err := getAccount(tx, id)
		if err != nil {
			return err
		}
		acct, err = db.openAccount(rec)
		return err
	})
	return acct, err
}

// AccountByEmail returns the account registered under email.
func (db *DB) AccountByEmail(email string) (Account, error) {
	return db.accountByIndex(bucketAccountEmails, "email", NormalizeEmail(email))
}

// AccountByGoogle returns the account linked to a Google subject.
func (db *DB) AccountByGoogle(subject string) (Account, error) {
	return db.accountByIndex(bucketAccountGoogle, "google", subject)
}

func (db *DB) accountByIndex(bucket []byte, kind, value string) (Account, error) {
	var acct Account
	err := db.bolt.View(func(tx *bolt.Tx) error {
		idx, err := db.lookupKey(tx, kind, value)
		if err != nil {
			return err
		}
		id := tx.Bucket(bucket).Get(idx)
		if id == nil {
			return ErrNotFound
		}
		rec, err := getAccount(tx, string(id))
		if err != nil {
			return err
		}
		acct, err = db.openAccount(rec)
		return err
	})
	return acct, err
}

// LinkGoogle attaches a Google subject to an existing account and marks its
// address verified (Google vouches for it). An account keeps the first
// subject linked to it: linking another is ErrConflict.
//
// If the account never proved it owns its address, whoever signed up with
// it may not be the address's owner. The link hands the account to the
// owner Google vouches for, so in the same transaction every credential
// the signer-up could still hold dies: the password, every session, every
// API key and every emailed token.
func (db *DB) LinkGoogle(id, subject string) error {
	return db.updateAccount(id, func(tx *bolt.Tx, rec *accountRecord, key []byte) error {
		idx, err := db.lookupKey(tx, "google", subject)
		if err != nil {
			return err
		}
		if owner := tx.Bucket(bucketAccountGoogle).Get(idx); owner != nil {
			if string(owner) == id {
				return nil
			}
			return ErrConflict
		}
		if rec.GoogleIndex != nil {
			return ErrConflict // a different subject is linked already
		}
		sealed, err := seal(key, "google:"+id, []byte(subject))
		if err != nil {
			return err
		}
		if !rec.EmailVerified {
			rec.PasswordHash = ""
			if err := revokeCredentials(tx, id); err != nil {
				return err
			}
		}
		// Google vouches for the address the link was made through.
		rec.GoogleSealed, rec.GoogleIndex, rec.EmailVerified = sealed, idx, true
		return tx.Bucket(bucketAccountGoogle).Put(idx, []byte(id))
	})
}

// SetPassword replaces the password hash, ends every session of the
// account except keep (the caller's own, when it changed its password;
// empty ends them all) and revokes or flags the API keys as keys says.
func (db *DB) SetPassword(id, hash, keep string, keys APIKeyAction) (PasswordChange, error) {
	ch := PasswordChange{AccountID: id}
	err := db.updateAccount(id, func(tx *bolt.Tx, rec *accountRecord, _ []byte) error {
		rec.PasswordHash = hash
		if err := applyKeyAction(tx, &ch, keys, "password_change", db.now().UTC()); err != nil {
			return err
		}
		var err error
		ch.SessionsEnded, err = deleteSessions(tx, id, keep)
		return err
	})
	if err != nil {
		return PasswordChange{}, err
	}
	return ch, nil
}

// SetEmail changes the account's email address (already verified by the
// caller). It returns ErrConflict if another account has it.
func (db *DB) SetEmail(id, email string) error {
	return db.updateAccount(id, func(tx *bolt.Tx, rec *accountRecord, key []byte) error {
		return db.setEmail(tx, rec, key, email)
	})
}

func (db *DB) setEmail(tx *bolt.Tx, rec *accountRecord, key []byte, email string) error {
	email = NormalizeEmail(email)
	if email == "" {
		return errors.New("store: empty email")
	}
	idx, err := db.lookupKey(tx, "email", email)
	if err != nil {
		return err
	}
	emails := tx.Bucket(bucketAccountEmails)
	if owner := emails.Get(idx); owner != nil {
		if string(owner) == rec.ID {
			rec.EmailVerified = true
			return nil
		}
		return ErrConflict
	}
	sealed, err := seal(key, "email:"+rec.ID, []byte(email))
	if err != nil {
		return err
	}
	if err := emails.Delete(rec.EmailIndex); err != nil {
		return err
	}
	rec.EmailSealed, rec.EmailIndex, rec.EmailVerified = sealed, idx, true
	return emails.Put(idx, []byte(rec.ID))
}

// SetSettings replaces the account's settings.
func (db *DB) SetSettings(id string, s Settings) error {
	return db.updateAccount(id, func(_ *bolt.Tx, rec *accountRecord, _ []byte) error {
		rec.Settings = s
		return nil
	})
}

// SetPlan moves the account to plan.
func (db *DB) SetPlan(id, plan string) error {
	return db.updateAccount(id, func(_ *bolt.Tx, rec *accountRecord, _ []byte) error {
		rec.Plan = plan
		return nil
	})
}

// SetStatus changes the account's status.
func (db *DB) SetStatus(id string, status AccountStatus) error {
	return db.updateAccount(id, func(tx *bolt.Tx, rec *accountRecord, _ []byte) error {
		if rec.Status == StatusErasing && status != StatusErasing {
			return ErrAccountInactive // an erasure is never undone
		}
		rec.Status = status
		if status != StatusActive {
			_, err := deleteSessions(tx, id, "")
			return err
		}
		return nil
	})
}

// updateAccount runs fn on the stored account in one write transaction and
// stores the result. fn gets the account's key for sealing.
func (db *DB) updateAccount(id string, fn func(tx *bolt.Tx, rec *accountRecord, key []byte) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		rec, err := getAccount(tx, id)
		if err != nil {
			return err
		}
		key, err := db.keys.get(rec.Slot, ownerTag(rec.ID))
		if err != nil {
			return err
		}
		if err := fn(tx, &rec, key); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketAccounts), []byte(id), rec)
	})
}

func getAccount(tx *bolt.Tx, id string) (accountRecord, error) {
	var rec accountRecord
	err := getJSON(tx.Bucket(bucketAccounts), []byte(id), &rec)
	return rec, err
}

// getActiveAccount is getAccount for work only an active account may do:
// a suspended or erasing one is ErrAccountInactive.
func getActiveAccount(tx *bolt.Tx, id string) (accountRecord, error) {
	rec, err := getAccount(tx, id)
	if err == nil && rec.Status != StatusActive {
		err = ErrAccountInactive
	}
	return rec, err
}

// openAccount decrypts a record into an Account.
func (db *DB) openAccount(rec accountRecord) (Account, error) {
	key, err := db.keys.get(rec.Slot, ownerTag(rec.ID))
	if err != nil {
		return Account{}, err
	}
	email, err := unseal(key, "email:"+rec.ID, rec.EmailSealed)
	if err != nil {
		return Account{}, err
	}
	a := Account{
		ID: rec.ID, Email: string(email), EmailVerified: rec.EmailVerified,
		PasswordHash: rec.PasswordHash, Plan: rec.Plan, Status: rec.Status,
		Created: rec.Created, AgeAttested: rec.AgeAttested, Settings: rec.Settings,
		Credits: rec.Balance, Held: rec.Held, GrantPeriod: rec.GrantPeriod,
	}
	if rec.GoogleSealed != nil {
		sub, err := unseal(key, "google:"+rec.ID, rec.GoogleSealed)
		if err != nil {
			return Account{}, fmt.Errorf("store: google subject: %w", err)
		}
		a.GoogleSubject = string(sub)
	}
	return a, nil
}
