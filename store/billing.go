package store

// Billing: the little imagegate keeps about payments (promise M1). Card
// data never reaches imagegate — Stripe Checkout collects it — so what is
// stored is an account's Stripe customer id, its subscriptions' id, status,
// period and price, and the money side of ledger entries (minor units,
// currency, time, Stripe reference).
//
// Webhook events are applied with ApplyStripeEvent: the event id is
// recorded in the same transaction as the event's effect, so a redelivered
// event changes nothing. Stripe delivers events late, twice and in any
// order, so every change is written to converge: subscription and dispute
// states keep the newest information by Stripe's own clock (with a fixed
// tie-break), refunds keep the largest amount refunded, and a payment's
// clawback is recomputed from everything known about it and settled as the
// difference to what was already taken back. The final state is therefore
// the same whatever order the events arrived in.
//
// Layout: bucketBilling holds "account"+NUL+accountID → billingRecord and
// "payment"+NUL+paymentKey → paymentRecord; bucketStripeCustomers maps a
// Stripe customer id to its account; bucketWebhookEvents maps an event id
// to when it was applied; bucketBillingFlags holds operator flags by id.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Stripe subscription statuses, in Stripe's own words.
const (
	SubscriptionIncomplete        = "incomplete"
	SubscriptionIncompleteExpired = "incomplete_expired"
	SubscriptionTrialing          = "trialing"
	SubscriptionActive            = "active"
	SubscriptionPastDue           = "past_due"
	SubscriptionUnpaid            = "unpaid"
	SubscriptionPaused            = "paused"
	SubscriptionCanceled          = "canceled"
)

// SubscriptionLive reports whether a subscription in status keeps its
// account on the subscription's plan. past_due counts: Stripe is still
// retrying the payment, and the plan ends only when the subscription does.
func SubscriptionLive(status string) bool {
	switch status {
	case SubscriptionActive, SubscriptionTrialing, SubscriptionPastDue:
		return true
	}
	return false
}

// subscriptionFinal reports a status a subscription never leaves.
func subscriptionFinal(status string) bool {
	return status == SubscriptionCanceled || status == SubscriptionIncompleteExpired
}

// subscriptionRank orders statuses learned at the same Stripe second: the
// later step of a subscription's usual life wins.
func subscriptionRank(status string) int {
	return slices.Index([]string{
		SubscriptionIncomplete, SubscriptionTrialing, SubscriptionPaused, SubscriptionPastDue,
		SubscriptionUnpaid, SubscriptionActive, SubscriptionIncompleteExpired, SubscriptionCanceled,
	}, status)
}

// Stripe dispute statuses imagegate acts on.
const (
	DisputeNeedsResponse = "needs_response"
	DisputeUnderReview   = "under_review"
	DisputeWon           = "won"
	DisputeLost          = "lost"
	DisputeWarningClosed = "warning_closed"
)

// disputeClaws reports whether a dispute in status takes its payment's
// credits back: the money is withdrawn while the dispute is open and kept
// by the customer when it is lost. Inquiries (warning_*) move no money.
func disputeClaws(status string) bool {
	return status == DisputeNeedsResponse || status == DisputeUnderReview || status == DisputeLost
}

func disputeFinal(status string) bool {
	return status == DisputeWon || status == DisputeLost || status == DisputeWarningClosed
}

func disputeRank(status string) int {
	return slices.Index([]string{
		"warning_needs_response", "warning_under_review", DisputeNeedsResponse, DisputeUnderReview,
		DisputeWarningClosed, DisputeWon, DisputeLost,
	}, status)
}

// Subscription is one Stripe subscription of an account as imagegate last
// learned it.
type Subscription struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// PriceID is the subscribed Stripe price; Plan the imagegate plan the
	// catalogue maps it to (empty when the catalogue does not know it).
	PriceID           string    `json:"price_id,omitempty"`
	Plan              string    `json:"plan,omitempty"`
	PeriodStart       time.Time `json:"period_start"`
	PeriodEnd         time.Time `json:"period_end"`
	CancelAtPeriodEnd bool      `json:"cancel_at_period_end,omitempty"`
	// StatusAt and DetailsAt are Stripe's times of the information the
	// status and the other fields come from; older information is ignored.
	StatusAt  time.Time `json:"status_at"`
	DetailsAt time.Time `json:"details_at"`
}

// Billing is an account's Stripe state.
type Billing struct {
	AccountID  string `json:"account"`
	CustomerID string `json:"customer,omitempty"`
	// Subscriptions are every subscription imagegate heard of, by id.
	Subscriptions []Subscription `json:"subscriptions,omitempty"`
	// Checkout is the subscription checkout opened last, while it can
	// still be completed (see OpenSubscriptionCheckout).
	Checkout *SubscriptionCheckout `json:"checkout,omitempty"`
}

// SubscriptionCheckout is an open subscription checkout: its price, the
// nonce of its idempotency key, and when its session expires.
type SubscriptionCheckout struct {
	PriceID string    `json:"price"`
	Nonce   string    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// Current is the subscription that decides the account's plan: the newest
// live one, or else the newest of all. ok is false when there is none.
func (b Billing) Current() (s Subscription, ok bool) {
	for _, c := range b.Subscriptions {
		if !ok || subscriptionBefore(s, c) {
			s, ok = c, true
		}
	}
	return s, ok
}

// subscriptionBefore orders subscriptions for Current: live over not,
// then by the newest information, then by id (a fixed tie-break).
func subscriptionBefore(a, b Subscription) bool {
	if la, lb := SubscriptionLive(a.Status), SubscriptionLive(b.Status); la != lb {
		return lb
	}
	ta, tb := laterOf(a.StatusAt, a.DetailsAt), laterOf(b.StatusAt, b.DetailsAt)
	if !ta.Equal(tb) {
		return ta.Before(tb)
	}
	return a.ID < b.ID
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// maxSubscriptions bounds the subscriptions kept per account; the oldest
// ended ones are dropped first.
const maxSubscriptions = 20

// BillingFlag is something about an account's payments an operator should
// look at: a dispute, or a clawback that took back credits already spent.
type BillingFlag struct {
	ID        string `json:"id"`
	AccountID string `json:"account,omitempty"`
	// Reason is FlagDispute or FlagShortfall.
	Reason string `json:"reason"`
	// Ref is the Stripe reference: the dispute id, or for a shortfall the
	// ledger ref of the clawback entry.
	Ref string `json:"ref"`
	// Status is a dispute's Stripe status.
	Status string `json:"status,omitempty"`
	// Credits is, for a dispute, the credits at stake; for a shortfall,
	// the credits the clawback took that were no longer available (the
	// account's available balance went this far below zero because of it).
	Credits    int64     `json:"credits"`
	MoneyMinor int64     `json:"money_minor,omitempty"`
	Currency   string    `json:"currency,omitempty"`
	Time       time.Time `json:"time"`
}

// Billing flag reasons.
const (
	FlagDispute   = "dispute"
	FlagShortfall = "clawback_shortfall"
)

// StripeEvent identifies a verified Stripe webhook event.
type StripeEvent struct {
	ID   string
	Type string
	// Created is Stripe's time of the event: the clock every change of the
	// event is ordered by.
	Created time.Time
}

type eventRecord struct {
	Type     string    `json:"type"`
	Created  time.Time `json:"created"`
	Received time.Time `json:"received"`
}

// BillingChange is one effect of a Stripe event: PaymentGrant,
// RefundUpdate, DisputeUpdate or SubscriptionUpdate.
type BillingChange interface {
	apply(t *billingTx) error
}

// BillingTx is what applying Stripe events needs of one write
// transaction of a store. The bbolt store and store/postgres implement it,
// so both run the same convergence logic (ApplyBillingChanges).
type BillingTx interface {
	// AccountExists reports whether the account exists.
	AccountExists(id string) (bool, error)
	// CustomerAccount returns the account a Stripe customer is linked to,
	// or "" when none is.
	CustomerAccount(customerID string) (string, error)
	// Payment returns the stored record of a payment (opaque bytes), or
	// nil when there is none; PutPayment replaces it.
	Payment(key string) ([]byte, error)
	PutPayment(key string, record []byte) error
	// Billing returns the account's billing state (empty when none);
	// PutBilling replaces it.
	Billing(accountID string) (Billing, error)
	PutBilling(Billing) error
	// AddCredit appends a ledger entry (a no-op for a ref already there).
	AddCredit(accountID string, c Credit) error
	// Available is the account's balance minus its held credits.
	Available(accountID string) (int64, error)
	// SetPlan moves the account to plan.
	SetPlan(accountID, plan string) error
	// PutFlag stores (or replaces, by id) an operator flag.
	PutFlag(BillingFlag) error
}

// ApplyBillingChanges applies the changes of ev inside tx, at now. The
// caller records the event id in the same transaction.
func ApplyBillingChanges(tx BillingTx, ev StripeEvent, now time.Time, changes ...BillingChange) error {
	t := &billingTx{b: tx, event: ev, now: now}
	for _, c := range changes {
		if err := c.apply(t); err != nil {
			return err
		}
	}
	return nil
}

// PaymentGrant credits a payment: a credit pack bought (KindPurchase) or a
// subscription period paid (KindGrant). A payment is granted once, whatever
// events report it.
type PaymentGrant struct {
	// AccountID is the account that paid, when the event names it (our own
	// client_reference_id or metadata); otherwise CustomerID is resolved.
	AccountID  string
	CustomerID string
	// PaymentKey identifies the payment across events: the payment
	// intent, or the invoice/session when nothing was charged.
	PaymentKey string
	// Ref is the ledger ref: the Stripe object that pays (pi_…, in_…).
	Ref        string
	Kind       string
	Credits    int64
	MoneyMinor int64
	Currency   string
}

// RefundUpdate reports a charge's refunded amount so far.
type RefundUpdate struct {
	AccountID     string
	CustomerID    string
	PaymentKey    string
	ChargeID      string
	ChargeMinor   int64 // the charge's amount
	RefundedMinor int64 // refunded so far, cumulative
	Currency      string
}

// DisputeUpdate reports a dispute's state as of the event.
type DisputeUpdate struct {
	PaymentKey  string
	DisputeID   string
	Status      string
	AmountMinor int64
	Currency    string
}

// SubscriptionUpdate reports a subscription's state as of the event.
// Full says whether the report carries the whole subscription (price,
// plan, period) or only its status (from an invoice event).
type SubscriptionUpdate struct {
	AccountID    string
	CustomerID   string
	Subscription Subscription
	Full         bool
	// DefaultPlan is the plan the account returns to when it has no live
	// subscription.
	DefaultPlan string
}

// ErrBadBillingChange reports a change that cannot be applied as given: a
// missing id, or a Stripe status this version does not know.
var ErrBadBillingChange = errors.New("store: invalid billing change")

// billingTx is one event's write transaction.
type billingTx struct {
	b     BillingTx
	event StripeEvent
	now   time.Time
}

// boltBilling is BillingTx on a bbolt write transaction.
type boltBilling struct {
	db *DB
	tx *bolt.Tx
}

func (b boltBilling) AccountExists(id string) (bool, error) {
	return b.tx.Bucket(bucketAccounts).Get([]byte(id)) != nil, nil
}

func (b boltBilling) CustomerAccount(customerID string) (string, error) {
	return string(b.tx.Bucket(bucketStripeCustomers).Get([]byte(customerID))), nil
}

func (b boltBilling) Payment(key string) ([]byte, error) {
	v := b.tx.Bucket(bucketBilling).Get(compositeKey(billingPaymentPrefix, []byte(key)))
	return bytes.Clone(v), nil
}

func (b boltBilling) PutPayment(key string, record []byte) error {
	return b.tx.Bucket(bucketBilling).Put(compositeKey(billingPaymentPrefix, []byte(key)), record)
}

func (b boltBilling) Billing(accountID string) (Billing, error) { return getBilling(b.tx, accountID) }

func (b boltBilling) PutBilling(rec Billing) error { return putBilling(b.tx, rec) }

func (b boltBilling) AddCredit(accountID string, c Credit) error {
	_, _, err := b.db.addCredit(b.tx, accountID, c)
	return err
}

func (b boltBilling) Available(accountID string) (int64, error) {
	rec, err := getAccount(b.tx, accountID)
	return rec.Balance - rec.Held, err
}

func (b boltBilling) SetPlan(accountID, plan string) error {
	acct, err := getAccount(b.tx, accountID)
	if err != nil || acct.Plan == plan {
		return err
	}
	acct.Plan = plan
	return putJSON(b.tx.Bucket(bucketAccounts), []byte(acct.ID), acct)
}

func (b boltBilling) PutFlag(f BillingFlag) error {
	return putJSON(b.tx.Bucket(bucketBillingFlags), []byte(f.ID), f)
}

var (
	billingAccountPrefix = []byte("account")
	billingPaymentPrefix = []byte("payment")
)

// StripeEventSeen reports whether the event was already applied: a cheap
// read that lets a redelivery skip decoding. ApplyStripeEvent checks again
// inside its transaction.
func (db *DB) StripeEventSeen(eventID string) (bool, error) {
	var seen bool
	err := db.bolt.View(func(tx *bolt.Tx) error {
		seen = tx.Bucket(bucketWebhookEvents).Get([]byte(eventID)) != nil
		return nil
	})
	return seen, err
}

// ApplyStripeEvent applies the changes of one verified event and records
// its id, in one transaction. An event already recorded changes nothing
// and applied is false. When a change's account cannot be found (a customer
// imagegate does not know, an erased account) nothing is written and the
// error is ErrNotFound, so the event can be applied later if it becomes
// known. Concurrent calls share transactions (bbolt Batch).
func (db *DB) ApplyStripeEvent(ev StripeEvent, changes ...BillingChange) (applied bool, err error) {
	if ev.ID == "" || ev.Created.IsZero() {
		return false, errors.New("store: a Stripe event needs an id and a time")
	}
	err = db.bolt.Batch(func(tx *bolt.Tx) error {
		applied = false // Batch may run this function more than once
		events := tx.Bucket(bucketWebhookEvents)
		if events.Get([]byte(ev.ID)) != nil {
			return nil
		}
		now := db.now().UTC()
		if err := ApplyBillingChanges(boltBilling{db: db, tx: tx}, ev, now, changes...); err != nil {
			return err
		}
		rec := eventRecord{Type: ev.Type, Created: ev.Created.UTC(), Received: now}
		if err := putJSON(events, []byte(ev.ID), rec); err != nil {
			return err
		}
		applied = true
		return nil
	})
	return applied, err
}

// PruneStripeEvents forgets the ids of events applied before cutoff. Stripe
// stops redelivering after three days; keeping ids for longer (30 days is
// plenty) only guards against manual resends. It returns how many it
// removed.
func (db *DB) PruneStripeEvents(cutoff time.Time) (int, error) {
	var n int
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhookEvents)
		var old [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var rec eventRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if rec.Received.Before(cutoff) {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// Billing returns the account's Stripe state; an account that never
// checked out has an empty one.
func (db *DB) Billing(accountID string) (Billing, error) {
	b := Billing{AccountID: accountID}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		err := getJSON(tx.Bucket(bucketBilling), compositeKey(billingAccountPrefix, []byte(accountID)), &b)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	})
	return b, err
}

// LinkStripeCustomer records customerID as the account's Stripe customer,
// unless the account already has one: the customer linked first stays, and
// its id is returned, so racing checkouts converge on one customer. It
// returns ErrConflict if customerID belongs to another account.
func (db *DB) LinkStripeCustomer(accountID, customerID string) (string, error) {
	if customerID == "" {
		return "", errors.New("store: empty Stripe customer id")
	}
	var linked string
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if _, err := getAccount(tx, accountID); err != nil {
			return err
		}
		customers := tx.Bucket(bucketStripeCustomers)
		if owner := customers.Get([]byte(customerID)); owner != nil && string(owner) != accountID {
			return ErrConflict
		}
		rec, err := getBilling(tx, accountID)
		if err != nil {
			return err
		}
		if rec.CustomerID != "" {
			linked = rec.CustomerID
			return nil
		}
		rec.CustomerID, linked = customerID, customerID
		if err := customers.Put([]byte(customerID), []byte(accountID)); err != nil {
			return err
		}
		return putBilling(tx, rec)
	})
	return linked, err
}

// OpenSubscriptionCheckout lets one subscription checkout per account be
// open at a time, so two racing checkouts cannot both end in a
// subscription. With none open (or the open one expired) it records c and
// returns it. With one open for the same price it returns that one: the
// caller reuses its nonce, so Stripe answers with the same session. With
// one open for another price it is ErrConflict until that one expires.
func (db *DB) OpenSubscriptionCheckout(accountID string, c SubscriptionCheckout) (SubscriptionCheckout, error) {
	if c.PriceID == "" || c.Nonce == "" || c.Expires.IsZero() {
		return SubscriptionCheckout{}, errors.New("store: subscription checkout needs a price, a nonce and an expiry")
	}
	var out SubscriptionCheckout
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if _, err := getActiveAccount(tx, accountID); err != nil {
			return err
		}
		rec, err := getBilling(tx, accountID)
		if err != nil {
			return err
		}
		if open := rec.Checkout; open != nil && db.now().Before(open.Expires) {
			if open.PriceID != c.PriceID {
				return ErrConflict
			}
			out = *open
			return nil
		}
		c.Expires = c.Expires.UTC()
		rec.Checkout, out = &c, c
		return putBilling(tx, rec)
	})
	return out, err
}

// UnlinkStripeCustomer forgets the account's Stripe customer and
// subscriptions (account erasure). Ledger entries stay: they are the
// transaction records the law requires keeping. Later events about the
// customer are ignored. Unlinking an account without billing is not an
// error.
func (db *DB) UnlinkStripeCustomer(accountID string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error { return unlinkStripeCustomer(tx, accountID) })
}

func unlinkStripeCustomer(tx *bolt.Tx, accountID string) error {
	rec, err := getBilling(tx, accountID)
	if err != nil {
		return err
	}
	if rec.CustomerID != "" {
		if err := tx.Bucket(bucketStripeCustomers).Delete([]byte(rec.CustomerID)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketBilling).Delete(compositeKey(billingAccountPrefix, []byte(accountID)))
}

// Transactions returns up to limit of the account's ledger entries other
// than generation charges (purchases, grants, refunds, reversals,
// adjustments), newest first.
func (db *DB) Transactions(accountID string, limit int) ([]LedgerEntry, error) {
	var out []LedgerEntry
	err := db.bolt.View(func(tx *bolt.Tx) error {
		prefix := compositeKey([]byte(accountID), nil)
		c := tx.Bucket(bucketLedger).Cursor()
		k, v := c.Seek(compositeKey([]byte(accountID), bytes.Repeat([]byte{0xff}, 8)))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
				break
			}
			var e LedgerEntry
			if err := decodeRecord(v, &e); err != nil {
				return err
			}
			if e.Kind != KindCharge {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}

// BillingFlags returns every billing flag, ordered by id.
func (db *DB) BillingFlags() ([]BillingFlag, error) {
	var out []BillingFlag
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBillingFlags).ForEach(func(_, v []byte) error {
			var f BillingFlag
			if err := decodeRecord(v, &f); err != nil {
				return err
			}
			out = append(out, f)
			return nil
		})
	})
	return out, err
}

func getBilling(tx *bolt.Tx, accountID string) (Billing, error) {
	b := Billing{AccountID: accountID}
	err := getJSON(tx.Bucket(bucketBilling), compositeKey(billingAccountPrefix, []byte(accountID)), &b)
	if errors.Is(err, ErrNotFound) {
		err = nil
	}
	return b, err
}

func putBilling(tx *bolt.Tx, b Billing) error {
	return putJSON(tx.Bucket(bucketBilling), compositeKey(billingAccountPrefix, []byte(b.AccountID)), b)
}

// resolve finds the account a change is about: the account the event
// names, if it exists, else the owner of the Stripe customer.
func (t *billingTx) resolve(accountID, customerID string) (string, error) {
	if accountID != "" {
		ok, err := t.b.AccountExists(accountID)
		if err != nil {
			return "", err
		}
		if ok {
			return accountID, nil
		}
	}
	if customerID != "" {
		owner, err := t.b.CustomerAccount(customerID)
		if err != nil {
			return "", err
		}
		if owner != "" {
			return owner, nil
		}
	}
	return "", ErrNotFound
}

// paymentRecord is everything known about one payment: who paid and what
// it granted, how much of it was refunded or disputed, and how many of its
// credits are currently clawed back. Events about it may arrive in any
// order; a refund or dispute seen before the grant is kept and settled
// when the grant arrives.
type paymentRecord struct {
	Key           string         `json:"key"`
	AccountID     string         `json:"account,omitempty"`
	GrantRef      string         `json:"grant_ref,omitempty"`
	Kind          string         `json:"kind,omitempty"`
	Credits       int64          `json:"credits,omitempty"`
	MoneyMinor    int64          `json:"money_minor,omitempty"`
	Currency      string         `json:"currency,omitempty"`
	ChargeID      string         `json:"charge,omitempty"`
	ChargeMinor   int64          `json:"charge_minor,omitempty"`
	RefundedMinor int64          `json:"refunded_minor,omitempty"`
	Disputes      []disputeState `json:"disputes,omitempty"`
	// Clawed is the credits currently taken back (clawbacks minus
	// reversals); Adjustments counts those entries, for unique refs.
	Clawed      int64 `json:"clawed,omitempty"`
	Adjustments int   `json:"adjustments,omitempty"`
}

type disputeState struct {
	ID          string    `json:"id"`
	Status      string    `json:"status"`
	AmountMinor int64     `json:"amount_minor"`
	Currency    string    `json:"currency,omitempty"`
	At          time.Time `json:"at"`
}

// share is the part of the payment's credits that minor units of its
// money stand for (all of them when the money is unknown).
func (p *paymentRecord) share(minor int64) int64 {
	base := p.MoneyMinor
	if p.ChargeMinor > 0 {
		base = p.ChargeMinor
	}
	if minor <= 0 {
		return 0
	}
	if base <= 0 || minor >= base {
		return p.Credits
	}
	return mulDiv(p.Credits, minor, base)
}

// mulDiv is a×b/c rounded down, for 0 ≤ a, 0 ≤ b ≤ c, 0 < c, without
// overflowing: the result is at most a.
func mulDiv(a, b, c int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, _ := bits.Div64(hi, lo, uint64(c))
	return int64(q)
}

// clawTarget is how many of the payment's credits should be taken back
// given everything known: the refunded share plus the share of every
// dispute that withdrew money, never more than the payment granted.
func (p *paymentRecord) clawTarget() int64 {
	if p.GrantRef == "" || p.Credits <= 0 {
		return 0
	}
	want := p.share(p.RefundedMinor)
	for _, d := range p.Disputes {
		if disputeClaws(d.Status) {
			want += p.share(d.AmountMinor)
		}
	}
	return min(want, p.Credits)
}

func (t *billingTx) payment(key string) (paymentRecord, error) {
	p := paymentRecord{Key: key}
	v, err := t.b.Payment(key)
	if err != nil || v == nil {
		return p, err
	}
	return p, decodeRecord(v, &p)
}

func (t *billingTx) putPayment(p paymentRecord) error {
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("store: encode payment: %w", err)
	}
	return t.b.PutPayment(p.Key, v)
}

// settle brings the payment's clawback to its target with one ledger
// entry (KindRefund taking credits, KindReversal returning them), whose
// ref is cause — the Stripe object whose event moved the target — and a
// sequence number. A clawback that leaves the available balance below
// zero (credits already spent) raises a shortfall flag.
func (t *billingTx) settle(p *paymentRecord, cause string) error {
	if p.AccountID == "" || p.GrantRef == "" {
		return nil
	}
	want := p.clawTarget()
	delta := want - p.Clawed
	if delta == 0 {
		return nil
	}
	if ok, err := t.b.AccountExists(p.AccountID); err != nil || !ok {
		return err // erased: nothing left to take back
	}
	p.Adjustments++
	c := Credit{Kind: KindRefund, Amount: -delta, Ref: fmt.Sprintf("%s#%d", cause, p.Adjustments), Currency: p.Currency}
	if delta < 0 {
		c.Kind, c.Amount = KindReversal, -delta
	}
	// The money the moved credits stand for: |delta| ≤ Credits.
	c.MoneyMinor = mulDiv(max(p.MoneyMinor, 0), max(delta, -delta), p.Credits)
	if delta > 0 {
		c.MoneyMinor = -c.MoneyMinor
	}
	if err := t.b.AddCredit(p.AccountID, c); err != nil {
		return err
	}
	p.Clawed = want
	if delta < 0 {
		return nil
	}
	avail, err := t.b.Available(p.AccountID)
	if err != nil {
		return err
	}
	if avail < 0 {
		return t.flag(BillingFlag{
			ID: "shortfall:" + c.Ref, AccountID: p.AccountID, Reason: FlagShortfall, Ref: c.Ref,
			Credits: min(delta, -avail), MoneyMinor: c.MoneyMinor, Currency: p.Currency,
		})
	}
	return nil
}

// flagDisputes writes the payment's disputes to the operator flags.
func (t *billingTx) flagDisputes(p *paymentRecord) error {
	for _, d := range p.Disputes {
		f := BillingFlag{
			ID: "dispute:" + d.ID, AccountID: p.AccountID, Reason: FlagDispute, Ref: d.ID, Status: d.Status,
			MoneyMinor: d.AmountMinor, Currency: d.Currency,
		}
		if p.GrantRef != "" {
			f.Credits = p.share(d.AmountMinor)
		}
		if err := t.flag(f); err != nil {
			return err
		}
	}
	return nil
}

func (t *billingTx) flag(f BillingFlag) error {
	f.Time = t.now
	return t.b.PutFlag(f)
}

func (g PaymentGrant) apply(t *billingTx) error {
	if g.PaymentKey == "" || g.Ref == "" || g.Credits <= 0 || (g.Kind != KindPurchase && g.Kind != KindGrant) {
		return fmt.Errorf("%w: payment grant %q", ErrBadBillingChange, g.Ref)
	}
	acct, err := t.resolve(g.AccountID, g.CustomerID)
	if err != nil {
		return err
	}
	p, err := t.payment(g.PaymentKey)
	if err != nil {
		return err
	}
	if p.GrantRef != "" {
		return nil // already granted, by this or another event about the payment
	}
	p.AccountID, p.GrantRef, p.Kind, p.Credits = acct, g.Ref, g.Kind, g.Credits
	p.MoneyMinor, p.Currency = g.MoneyMinor, g.Currency
	err = t.b.AddCredit(acct, Credit{
		Kind: g.Kind, Amount: g.Credits, Ref: g.Ref, MoneyMinor: g.MoneyMinor, Currency: g.Currency,
	})
	if err != nil {
		return err
	}
	// A refund or dispute may have arrived first.
	if err := t.settle(&p, g.Ref); err != nil {
		return err
	}
	if err := t.flagDisputes(&p); err != nil {
		return err
	}
	return t.putPayment(p)
}

func (u RefundUpdate) apply(t *billingTx) error {
	if u.PaymentKey == "" || u.ChargeID == "" {
		return fmt.Errorf("%w: a refund update needs a payment and a charge", ErrBadBillingChange)
	}
	acct, err := t.resolve(u.AccountID, u.CustomerID)
	if err != nil {
		return err
	}
	p, err := t.payment(u.PaymentKey)
	if err != nil {
		return err
	}
	if p.AccountID == "" {
		p.AccountID = acct
	}
	p.ChargeID = u.ChargeID
	p.ChargeMinor = max(p.ChargeMinor, u.ChargeMinor)
	p.RefundedMinor = max(p.RefundedMinor, u.RefundedMinor) // refunds only grow
	if err := t.settle(&p, u.ChargeID); err != nil {
		return err
	}
	return t.putPayment(p)
}

func (u DisputeUpdate) apply(t *billingTx) error {
	if u.PaymentKey == "" || u.DisputeID == "" || disputeRank(u.Status) < 0 {
		return fmt.Errorf("%w: dispute %q with status %q", ErrBadBillingChange, u.DisputeID, u.Status)
	}
	p, err := t.payment(u.PaymentKey)
	if err != nil {
		return err
	}
	in := disputeState{ID: u.DisputeID, Status: u.Status, AmountMinor: u.AmountMinor, Currency: u.Currency, At: t.event.Created.UTC()}
	i := slices.IndexFunc(p.Disputes, func(d disputeState) bool { return d.ID == u.DisputeID })
	switch {
	case i < 0:
		p.Disputes = append(p.Disputes, in)
	case disputeBefore(p.Disputes[i], in):
		p.Disputes[i] = in
	}
	if err := t.settle(&p, u.DisputeID); err != nil {
		return err
	}
	if err := t.flagDisputes(&p); err != nil {
		return err
	}
	return t.putPayment(p)
}

// disputeBefore orders what is known of one dispute: a closed state wins
// over an open one, then newer over older, then the later status.
func disputeBefore(a, b disputeState) bool {
	if fa, fb := disputeFinal(a.Status), disputeFinal(b.Status); fa != fb {
		return fb
	}
	if !a.At.Equal(b.At) {
		return a.At.Before(b.At)
	}
	if ra, rb := disputeRank(a.Status), disputeRank(b.Status); ra != rb {
		return ra < rb
	}
	return a.AmountMinor < b.AmountMinor
}

func (u SubscriptionUpdate) apply(t *billingTx) error {
	in := u.Subscription
	if in.ID == "" || subscriptionRank(in.Status) < 0 {
		return fmt.Errorf("%w: subscription %q with status %q", ErrBadBillingChange, in.ID, in.Status)
	}
	acct, err := t.resolve(u.AccountID, u.CustomerID)
	if err != nil {
		return err
	}
	rec, err := t.b.Billing(acct)
	if err != nil {
		return err
	}
	at := t.event.Created.UTC()
	i := slices.IndexFunc(rec.Subscriptions, func(s Subscription) bool { return s.ID == in.ID })
	if i < 0 {
		rec.Subscriptions = append(rec.Subscriptions, Subscription{ID: in.ID})
		i = len(rec.Subscriptions) - 1
	}
	cur := &rec.Subscriptions[i]
	if cur.Status == "" || statusBefore(*cur, in.Status, at) {
		cur.Status, cur.StatusAt = in.Status, at
	}
	if u.Full && (cur.DetailsAt.IsZero() || detailsBefore(*cur, in, at)) {
		cur.PriceID, cur.Plan = in.PriceID, in.Plan
		cur.PeriodStart, cur.PeriodEnd = in.PeriodStart.UTC(), in.PeriodEnd.UTC()
		cur.CancelAtPeriodEnd, cur.DetailsAt = in.CancelAtPeriodEnd, at
	}
	slices.SortFunc(rec.Subscriptions, func(a, b Subscription) int { return strings.Compare(a.ID, b.ID) })
	rec.Subscriptions = pruneSubscriptions(rec.Subscriptions)
	if err := t.b.PutBilling(rec); err != nil {
		return err
	}
	return t.applyPlan(rec, u.DefaultPlan)
}

// statusBefore reports whether status learned at at is newer than cur's:
// a final status wins over any other, then the newer time, then the later
// step of the usual life.
func statusBefore(cur Subscription, status string, at time.Time) bool {
	if fc, fi := subscriptionFinal(cur.Status), subscriptionFinal(status); fc != fi {
		return fi
	}
	if !cur.StatusAt.Equal(at) {
		return cur.StatusAt.Before(at)
	}
	return subscriptionRank(cur.Status) < subscriptionRank(status)
}

// detailsBefore reports whether in's details, learned at at, are newer
// than cur's; at the same second the later period wins, then a fixed
// order of the rest, so the result never depends on arrival order.
func detailsBefore(cur, in Subscription, at time.Time) bool {
	if !cur.DetailsAt.Equal(at) {
		return cur.DetailsAt.Before(at)
	}
	if !cur.PeriodEnd.Equal(in.PeriodEnd) {
		return cur.PeriodEnd.Before(in.PeriodEnd)
	}
	if cur.PriceID != in.PriceID {
		return cur.PriceID < in.PriceID
	}
	return !cur.CancelAtPeriodEnd && in.CancelAtPeriodEnd
}

// pruneSubscriptions drops the oldest ended subscriptions beyond the cap.
func pruneSubscriptions(subs []Subscription) []Subscription {
	for len(subs) > maxSubscriptions {
		oldest := -1
		for i, s := range subs {
			if SubscriptionLive(s.Status) {
				continue
			}
			if oldest < 0 || subscriptionBefore(s, subs[oldest]) {
				oldest = i
			}
		}
		if oldest < 0 {
			break
		}
		subs = slices.Delete(subs, oldest, oldest+1)
	}
	return subs
}

// applyPlan puts the account on its current subscription's plan while that
// subscription is live, and back on defaultPlan once it is not. A live
// subscription whose price the catalogue does not know leaves the plan as
// it is.
func (t *billingTx) applyPlan(rec Billing, defaultPlan string) error {
	cur, ok := rec.Current()
	if !ok {
		return nil
	}
	plan := defaultPlan
	if SubscriptionLive(cur.Status) {
		plan = cur.Plan
	}
	if plan == "" {
		return nil
	}
	return t.b.SetPlan(rec.AccountID, plan)
}
