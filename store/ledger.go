package store

import (
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Ledger entry kinds. Every change to a balance is one of these.
const (
	KindGrant    = "grant"    // plan allowance (free monthly, subscription period)
	KindPurchase = "purchase" // a paid credit pack
	KindCharge   = "charge"   // a generation that ran
	KindRefund   = "refund"   // credits returned (money refunded or dispute lost)
	KindReversal = "reversal" // a reversed refund or won dispute
	KindAdjust   = "adjust"   // an operator correction
)

// LedgerEntry is one immutable change to an account's credits. The balance
// is always the sum of Amount over the account's entries, and both change
// in the same transaction.
type LedgerEntry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Amount  int64     `json:"amount"`
	Balance int64     `json:"balance"` // after this entry
	// Ref names what caused the entry (a Stripe object id, a content key,
	// "plan:2026-11"); an account never has two entries with one Ref.
	Ref string `json:"ref"`
	// Money, for entries caused by a payment: minor units and ISO currency.
	MoneyMinor int64  `json:"money_minor,omitempty"`
	Currency   string `json:"currency,omitempty"`
}

// Hold is credits reserved for a generation in flight: they count against
// the available balance until committed (charged) or released.
type Hold struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account"`
	Amount    int64     `json:"amount"`
	Ref       string    `json:"ref"`
	Created   time.Time `json:"created"`
}

// Credit is a ledger change to apply.
type Credit struct {
	Kind       string
	Amount     int64
	Ref        string
	MoneyMinor int64
	Currency   string
}

// AddCredit appends an entry to the account's ledger and updates its
// balance. If the account already has an entry with c.Ref, nothing changes
// and applied is false: callers may retry freely.
func (db *DB) AddCredit(accountID string, c Credit) (e LedgerEntry, applied bool, err error) {
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		e, applied, err = db.addCredit(tx, accountID, c)
		return err
	})
	return e, applied, err
}

func (db *DB) addCredit(tx *bolt.Tx, accountID string, c Credit) (LedgerEntry, bool, error) {
	if c.Ref == "" || c.Kind == "" {
		return LedgerEntry{}, false, errors.New("store: ledger entry needs a kind and a ref")
	}
	refs := tx.Bucket(bucketLedgerRefs)
	refKey := compositeKey([]byte(accountID), []byte(c.Ref))
	if seq := refs.Get(refKey); seq != nil {
		var e LedgerEntry
		err := getJSON(tx.Bucket(bucketLedger), compositeKey([]byte(accountID), seq), &e)
		return e, false, err
	}
	rec, err := getAccount(tx, accountID)
	if err != nil {
		return LedgerEntry{}, false, err
	}
	rec.LedgerSeq++
	rec.Balance += c.Amount
	e := LedgerEntry{
		Seq: rec.LedgerSeq, Time: db.now().UTC(), Kind: c.Kind, Amount: c.Amount, Balance: rec.Balance,
		Ref: c.Ref, MoneyMinor: c.MoneyMinor, Currency: c.Currency,
	}
	seq := u64(e.Seq)
	if err := putJSON(tx.Bucket(bucketLedger), compositeKey([]byte(accountID), seq), e); err != nil {
		return LedgerEntry{}, false, err
	}
	if err := refs.Put(refKey, seq); err != nil {
		return LedgerEntry{}, false, err
	}
	return e, true, putJSON(tx.Bucket(bucketAccounts), []byte(accountID), rec)
}

// LedgerEntryByRef returns the account's entry with ref.
func (db *DB) LedgerEntryByRef(accountID, ref string) (LedgerEntry, error) {
	var e LedgerEntry
	err := db.bolt.View(func(tx *bolt.Tx) error {
		seq := tx.Bucket(bucketLedgerRefs).Get(compositeKey([]byte(accountID), []byte(ref)))
		if seq == nil {
			return ErrNotFound
		}
		return getJSON(tx.Bucket(bucketLedger), compositeKey([]byte(accountID), seq), &e)
	})
	return e, err
}

// ApplyGrant adds the plan allowance for period (e.g. "2026-11") once: a
// second call for the same period changes nothing. It reports whether the
// grant was applied now.
func (db *DB) ApplyGrant(accountID, period string, amount int64) (bool, error) {
	var applied bool
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		rec, err := getAccount(tx, accountID)
		if err != nil {
			return err
		}
		if rec.GrantPeriod == period {
			return nil
		}
		if amount > 0 {
			if _, applied, err = db.addCredit(tx, accountID, Credit{Kind: KindGrant, Amount: amount, Ref: "plan:" + period}); err != nil {
				return err
			}
			if rec, err = getAccount(tx, accountID); err != nil {
				return err
			}
		}
		rec.GrantPeriod = period
		return putJSON(tx.Bucket(bucketAccounts), []byte(accountID), rec)
	})
	return applied, err
}

// Reserve holds amount credits of an active account for a generation, or
// fails with ErrInsufficientCredits if the available balance (credits not
// already held) is smaller. Concurrent reservations never overspend: each
// checks and holds in one write transaction.
func (db *DB) Reserve(accountID string, amount int64, ref string) (Hold, error) {
	return db.ReserveHold(Hold{ID: newID("hold_"), AccountID: accountID, Amount: amount, Ref: ref})
}

// ReserveHold is Reserve under the ID h.ID the caller chose (from NewID),
// so the caller can record the ID before the hold exists: a crash between
// the two then leaves a recorded ID without a hold (releasing it is a
// no-op), never a hold nobody recorded. An ID already held is
// ErrConflict. Created is set here.
func (db *DB) ReserveHold(h Hold) (Hold, error) {
	if h.Amount <= 0 {
		return Hold{}, errors.New("store: reservation must be positive")
	}
	h.Created = db.now().UTC()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		rec, err := getActiveAccount(tx, h.AccountID)
		if err != nil {
			return err
		}
		if rec.Balance-rec.Held < h.Amount {
			return ErrInsufficientCredits
		}
		if tx.Bucket(bucketHolds).Get([]byte(h.ID)) != nil {
			return ErrConflict
		}
		rec.Held += h.Amount
		if err := putJSON(tx.Bucket(bucketHolds), []byte(h.ID), h); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketAccounts), []byte(h.AccountID), rec)
	})
	if err != nil {
		return Hold{}, err
	}
	return h, nil
}

// CommitHold turns a hold into a charge: the hold is removed and a charge
// entry appended, in one transaction. Committing a hold twice is an error
// (ErrNotFound) and charges nothing.
func (db *DB) CommitHold(holdID string) (LedgerEntry, error) {
	var e LedgerEntry
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		h, err := takeHold(tx, holdID)
		if err != nil {
			return err
		}
		e, _, err = db.addCredit(tx, h.AccountID, Credit{Kind: KindCharge, Amount: -h.Amount, Ref: "gen:" + h.ID})
		return err
	})
	return e, err
}

// ReleaseHold returns a hold's credits to the available balance. Releasing
// an unknown or already settled hold is not an error.
func (db *DB) ReleaseHold(holdID string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		_, err := takeHold(tx, holdID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
}

// takeHold deletes a hold and lowers its account's held amount.
func takeHold(tx *bolt.Tx, holdID string) (Hold, error) {
	var h Hold
	holds := tx.Bucket(bucketHolds)
	if err := getJSON(holds, []byte(holdID), &h); err != nil {
		return Hold{}, err
	}
	if err := holds.Delete([]byte(holdID)); err != nil {
		return Hold{}, err
	}
	rec, err := getAccount(tx, h.AccountID)
	if errors.Is(err, ErrNotFound) {
		return h, nil // the account was erased meanwhile
	}
	if err != nil {
		return Hold{}, err
	}
	rec.Held -= h.Amount
	return h, putJSON(tx.Bucket(bucketAccounts), []byte(h.AccountID), rec)
}

// Ledger returns the account's entries in order.
func (db *DB) Ledger(accountID string) ([]LedgerEntry, error) {
	var entries []LedgerEntry
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		entries, err = ledgerOf(tx, accountID)
		return err
	})
	return entries, err
}

func ledgerOf(tx *bolt.Tx, accountID string) ([]LedgerEntry, error) {
	var entries []LedgerEntry
	b := tx.Bucket(bucketLedger)
	prefix := compositeKey([]byte(accountID), nil)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
		var e LedgerEntry
		if err := decodeRecord(v, &e); err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// Mismatch is an account whose stored balance differs from its ledger.
type Mismatch struct {
	AccountID string
	Balance   int64 // stored
	LedgerSum int64 // recomputed
	Held      int64 // stored
	HoldSum   int64 // recomputed from open holds
}

// Reconcile recomputes every account's balance from its ledger and its
// held amount from its open holds. With fix, mismatched accounts are set to
// the recomputed values (the ledger is the truth). It returns the
// mismatches found.
func (db *DB) Reconcile(fix bool) ([]Mismatch, error) {
	var out []Mismatch
	run := db.bolt.View
	if fix {
		run = db.bolt.Update
	}
	err := run(func(tx *bolt.Tx) error {
		held := map[string]int64{}
		err := tx.Bucket(bucketHolds).ForEach(func(_, v []byte) error {
			var h Hold
			if err := decodeRecord(v, &h); err != nil {
				return err
			}
			held[h.AccountID] += h.Amount
			return nil
		})
		if err != nil {
			return err
		}
		var fixes []accountRecord
		err = tx.Bucket(bucketAccounts).ForEach(func(k, v []byte) error {
			var rec accountRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			entries, err := ledgerOf(tx, rec.ID)
			if err != nil {
				return err
			}
			var sum int64
			for _, e := range entries {
				sum += e.Amount
			}
			if sum != rec.Balance || held[rec.ID] != rec.Held {
				out = append(out, Mismatch{AccountID: rec.ID, Balance: rec.Balance, LedgerSum: sum, Held: rec.Held, HoldSum: held[rec.ID]})
				rec.Balance, rec.Held = sum, held[rec.ID]
				fixes = append(fixes, rec)
			}
			return nil
		})
		if err != nil || !fix {
			return err
		}
		for _, rec := range fixes {
			if err := putJSON(tx.Bucket(bucketAccounts), []byte(rec.ID), rec); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// ReleaseStaleHolds releases holds older than maxAge: generations that
// never settled because the process died mid-call. It returns how many.
func (db *DB) ReleaseStaleHolds(maxAge time.Duration) (int, error) {
	cutoff := db.now().Add(-maxAge)
	var stale []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHolds).ForEach(func(k, v []byte) error {
			var h Hold
			if err := decodeRecord(v, &h); err != nil {
				return err
			}
			if h.Created.Before(cutoff) {
				stale = append(stale, h.ID)
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	for _, id := range stale {
		if err := db.ReleaseHold(id); err != nil {
			return 0, err
		}
	}
	return len(stale), nil
}
