package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/imagegate/imagegate/store"
)

// billingStore is the part of the store Stripe billing needs.
type billingStore interface {
	StripeEventSeen(eventID string) (bool, error)
	ApplyStripeEvent(ev store.StripeEvent, changes ...store.BillingChange) (bool, error)
	PruneStripeEvents(cutoff time.Time) (int, error)
	Billing(accountID string) (store.Billing, error)
	LinkStripeCustomer(accountID, customerID string) (string, error)
	UnlinkStripeCustomer(accountID string) error
	Transactions(accountID string, limit int) ([]store.LedgerEntry, error)
	BillingFlags() ([]store.BillingFlag, error)
	LedgerEntryByRef(accountID, ref string) (store.LedgerEntry, error)
}

func stripeEvent(id string, at int64) store.StripeEvent {
	return store.StripeEvent{ID: id, Type: "test", Created: time.Unix(at, 0)}
}

func testLinkStripeCustomer(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "link@example.com")
	b := mustAccount(t, db, "other@example.com")
	if got, err := db.LinkStripeCustomer(a.ID, "cus_a"); err != nil || got != "cus_a" {
		t.Fatalf("first link = %q, %v", got, err)
	}
	// A racing second creation keeps the first customer.
	if got, err := db.LinkStripeCustomer(a.ID, "cus_a2"); err != nil || got != "cus_a" {
		t.Errorf("second link = %q, %v; want the first customer kept", got, err)
	}
	if _, err := db.LinkStripeCustomer(b.ID, "cus_a"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("linking a's customer to b: %v, want ErrConflict", err)
	}
	if _, err := db.LinkStripeCustomer("acct_missing", "cus_x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("linking a missing account: %v, want ErrNotFound", err)
	}
	rec, err := db.Billing(a.ID)
	if err != nil || rec.CustomerID != "cus_a" {
		t.Errorf("Billing = %+v, %v", rec, err)
	}
	if rec, err := db.Billing(b.ID); err != nil || rec.CustomerID != "" || rec.AccountID != b.ID {
		t.Errorf("Billing of an account that never checked out = %+v, %v", rec, err)
	}
}

// TestUnlinkStripeCustomer: erasure drops the customer link and the
// subscription state but keeps the ledger; later events about the customer
// are refused as unknown.
func testUnlinkStripeCustomer(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "erase@example.com")
	db.LinkStripeCustomer(a.ID, "cus_e")
	grant := store.PaymentGrant{CustomerID: "cus_e", PaymentKey: "pi_e", Ref: "pi_e", Kind: store.KindPurchase, Credits: 10, MoneyMinor: 100, Currency: "eur"}
	if _, err := db.ApplyStripeEvent(stripeEvent("evt_e1", 1), grant); err != nil {
		t.Fatal(err)
	}
	sub := store.SubscriptionUpdate{CustomerID: "cus_e", Full: true, DefaultPlan: "free", Subscription: store.Subscription{ID: "sub_e", Status: "active", Plan: "pro"}}
	if _, err := db.ApplyStripeEvent(stripeEvent("evt_e2", 2), sub); err != nil {
		t.Fatal(err)
	}
	if err := db.UnlinkStripeCustomer(a.ID); err != nil {
		t.Fatal(err)
	}
	if rec, _ := db.Billing(a.ID); rec.CustomerID != "" || len(rec.Subscriptions) != 0 {
		t.Errorf("after unlink: %+v", rec)
	}
	if e, err := db.LedgerEntryByRef(a.ID, "pi_e"); err != nil || e.MoneyMinor != 100 {
		t.Errorf("purchase entry after unlink: %+v, %v", e, err)
	}
	if _, err := db.ApplyStripeEvent(stripeEvent("evt_e3", 3), sub); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("event for the unlinked customer: %v, want ErrNotFound", err)
	}
	if err := db.UnlinkStripeCustomer(a.ID); err != nil {
		t.Errorf("second unlink: %v", err)
	}
	if _, err := db.LinkStripeCustomer(mustAccount(t, db, "next@example.com").ID, "cus_e"); err != nil {
		t.Errorf("the customer id is free again: %v", err)
	}
}

func testApplyStripeEventOnce(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "once@example.com")
	db.LinkStripeCustomer(a.ID, "cus_o")
	grant := store.PaymentGrant{AccountID: a.ID, PaymentKey: "pi_o", Ref: "pi_o", Kind: store.KindPurchase, Credits: 100, MoneyMinor: 500, Currency: "usd"}
	for i, wantApplied := range []bool{true, false, false} {
		applied, err := db.ApplyStripeEvent(stripeEvent("evt_o", 10), grant)
		if err != nil || applied != wantApplied {
			t.Fatalf("delivery %d: applied %v, %v; want %v", i, applied, err, wantApplied)
		}
	}
	// Another event about the same payment (async_payment_succeeded after
	// completed) grants nothing more.
	if applied, err := db.ApplyStripeEvent(stripeEvent("evt_o2", 11), grant); err != nil || !applied {
		t.Fatalf("second event: %v, %v", applied, err)
	}
	if seen, _ := db.StripeEventSeen("evt_o"); !seen {
		t.Error("event not recorded")
	}
	acct, _ := db.Account(a.ID)
	if acct.Credits != 100 {
		t.Errorf("credits %d, want 100", acct.Credits)
	}
	// An unknown customer: nothing is written, not even the event id.
	stranger := store.RefundUpdate{CustomerID: "cus_stranger", PaymentKey: "pi_s", ChargeID: "ch_s", ChargeMinor: 5, RefundedMinor: 5}
	if _, err := db.ApplyStripeEvent(stripeEvent("evt_s", 12), stranger); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown customer: %v, want ErrNotFound", err)
	}
	if seen, _ := db.StripeEventSeen("evt_s"); seen {
		t.Error("a refused event was recorded")
	}
	// A change that cannot apply rolls back the whole event.
	bad := store.DisputeUpdate{PaymentKey: "pi_o", DisputeID: "dp_x", Status: "mystery"}
	if _, err := db.ApplyStripeEvent(stripeEvent("evt_bad", 13), grant, bad); !errors.Is(err, store.ErrBadBillingChange) {
		t.Errorf("unknown dispute status: %v, want ErrBadBillingChange", err)
	}
	if seen, _ := db.StripeEventSeen("evt_bad"); seen {
		t.Error("a failed event was recorded")
	}
	if _, err := db.ApplyStripeEvent(store.StripeEvent{ID: "evt_no_time"}, grant); err == nil {
		t.Error("an event without a time was accepted")
	}
}

// permutations calls fn with every order of n items.
func permutations(n int, fn func(order []int)) {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	var gen func(k int)
	gen = func(k int) {
		if k == n {
			fn(order)
			return
		}
		for i := k; i < n; i++ {
			order[k], order[i] = order[i], order[k]
			gen(k + 1)
			order[k], order[i] = order[i], order[k]
		}
	}
	gen(0)
}

type billingStep struct {
	ev     store.StripeEvent
	change store.BillingChange
}

// converge applies steps in every order, each on a fresh account, and
// returns what the orders ended in after checking that they all ended the
// same. Orders run concurrently, so their transactions share batches.
func converge[T any](t *testing.T, h Harness, steps []billingStep, state func(db Store, accountID string) T) T {
	t.Helper()
	db, _ := h.open(t)
	var orders [][]int
	permutations(len(steps), func(order []int) { orders = append(orders, slices.Clone(order)) })
	results := make([]T, len(orders))
	errs := make([]error, len(orders))
	var wg sync.WaitGroup
	for run, order := range orders {
		wg.Go(func() {
			a, err := db.CreateAccount(store.NewAccount{Email: fmt.Sprintf("order%d@example.com", run), PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: time.Now()})
			if err != nil {
				errs[run] = err
				return
			}
			sfx := fmt.Sprintf("_%d", run)
			if _, err := db.LinkStripeCustomer(a.ID, "cus"+sfx); err != nil {
				errs[run] = err
				return
			}
			for _, i := range order {
				ev := steps[i].ev
				ev.ID += sfx
				if _, err := db.ApplyStripeEvent(ev, suffixed(steps[i].change, sfx)); err != nil {
					errs[run] = fmt.Errorf("event %s: %w", ev.ID, err)
					return
				}
			}
			results[run] = state(db, a.ID)
		})
	}
	wg.Wait()
	for run, order := range orders {
		if errs[run] != nil {
			t.Fatalf("order %v: %v", order, errs[run])
		}
		if diff := cmp.Diff(results[0], results[run], cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("order %v ends differently from %v (-first +this):\n%s", order, orders[0], diff)
		}
	}
	return results[0]
}

// suffixed gives a change's Stripe ids a per-order suffix (ids are global).
func suffixed(c store.BillingChange, sfx string) store.BillingChange {
	switch c := c.(type) {
	case store.PaymentGrant:
		c.CustomerID, c.PaymentKey, c.Ref = "cus"+sfx, c.PaymentKey+sfx, c.Ref+sfx
		return c
	case store.RefundUpdate:
		c.CustomerID, c.PaymentKey, c.ChargeID = "cus"+sfx, c.PaymentKey+sfx, c.ChargeID+sfx
		return c
	case store.DisputeUpdate:
		c.PaymentKey, c.DisputeID = c.PaymentKey+sfx, c.DisputeID+sfx
		return c
	case store.SubscriptionUpdate:
		c.CustomerID = "cus" + sfx
		c.Subscription.ID += sfx
		return c
	}
	panic("unknown change")
}

func testSubscriptionUpdatesConverge(t *testing.T, h Harness) {
	at := func(sec int64) time.Time { return time.Unix(sec, 0).UTC() }
	full := func(id, status string, periodEnd int64, cancel bool) store.SubscriptionUpdate {
		return store.SubscriptionUpdate{Full: true, DefaultPlan: "free", Subscription: store.Subscription{
			ID: id, Status: status, PriceID: "price_pro", Plan: "pro", PeriodStart: at(periodEnd - 100), PeriodEnd: at(periodEnd), CancelAtPeriodEnd: cancel,
		}}
	}
	statusOnly := func(id, status string) store.SubscriptionUpdate {
		return store.SubscriptionUpdate{DefaultPlan: "free", Subscription: store.Subscription{ID: id, Status: status}}
	}
	type state struct {
		Plan    string
		Current store.Subscription
		Subs    int
	}
	read := func(db Store, id string) state {
		a, _ := db.Account(id)
		rec, _ := db.Billing(id)
		cur, _ := rec.Current()
		cur.ID, _, _ = strings.Cut(cur.ID, "_")
		return state{Plan: a.Plan, Current: cur, Subs: len(rec.Subscriptions)}
	}
	t.Run("life of one subscription", func(t *testing.T) {
		t.Parallel()
		got := converge(t, h, []billingStep{
			{stripeEvent("evt_1", 100), full("sub", "incomplete", 200, false)},
			{stripeEvent("evt_2", 101), statusOnly("sub", "active")}, // invoice.paid
			{stripeEvent("evt_3", 101), full("sub", "active", 200, false)},
			{stripeEvent("evt_4", 200), statusOnly("sub", "past_due")}, // invoice.payment_failed
			{stripeEvent("evt_5", 250), full("sub", "active", 300, true)},
		}, read)
		want := state{Plan: "pro", Subs: 1, Current: store.Subscription{ID: "sub", Status: "active", PriceID: "price_pro", Plan: "pro",
			PeriodStart: at(200), PeriodEnd: at(300), CancelAtPeriodEnd: true, StatusAt: at(250), DetailsAt: at(250)}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("cancellation is final", func(t *testing.T) {
		t.Parallel()
		got := converge(t, h, []billingStep{
			{stripeEvent("evt_1", 100), full("sub", "active", 200, false)},
			{stripeEvent("evt_2", 150), full("sub", "canceled", 200, false)},
			{stripeEvent("evt_3", 150), statusOnly("sub", "active")}, // a paid invoice in the same second
			{stripeEvent("evt_4", 120), full("sub", "past_due", 200, false)},
		}, read)
		if got.Plan != "free" || got.Current.Status != "canceled" {
			t.Errorf("plan %q status %q, want free and canceled", got.Plan, got.Current.Status)
		}
	})
	t.Run("a new subscription after a cancelled one", func(t *testing.T) {
		t.Parallel()
		got := converge(t, h, []billingStep{
			{stripeEvent("evt_1", 100), full("old", "active", 200, false)},
			{stripeEvent("evt_2", 300), full("new", "incomplete", 400, false)},
			{stripeEvent("evt_3", 301), full("new", "active", 400, false)},
			{stripeEvent("evt_4", 350), full("old", "canceled", 200, false)}, // the old one ends later
		}, read)
		if got.Plan != "pro" || got.Current.ID != "new" || got.Current.Status != "active" || got.Subs != 2 {
			t.Errorf("got %+v, want the new subscription active and the plan pro", got)
		}
	})
}

// TestPaymentClawbacksConverge: refunds and disputes of a payment, in any
// order and before or after its grant, take back the same credits.
func testPaymentClawbacksConverge(t *testing.T, h Harness) {
	grant := store.PaymentGrant{PaymentKey: "pi", Ref: "pi", Kind: store.KindPurchase, Credits: 100, MoneyMinor: 500, Currency: "usd"}
	refund := func(refunded int64) store.RefundUpdate {
		return store.RefundUpdate{PaymentKey: "pi", ChargeID: "ch", ChargeMinor: 500, RefundedMinor: refunded, Currency: "usd"}
	}
	dispute := func(status string, amount int64) store.DisputeUpdate {
		return store.DisputeUpdate{PaymentKey: "pi", DisputeID: "dp", Status: status, AmountMinor: amount, Currency: "usd"}
	}
	credits := func(db Store, id string) int64 {
		a, _ := db.Account(id)
		entries, _ := db.Ledger(id)
		var sum int64
		for _, e := range entries {
			sum += e.Amount
		}
		if sum != a.Credits {
			t.Errorf("ledger %d ≠ balance %d", sum, a.Credits)
		}
		return a.Credits
	}
	tests := []struct {
		name  string
		steps []billingStep
		want  int64
	}{
		{"partial refunds are proportional and only grow", []billingStep{
			{stripeEvent("evt_g", 1), grant},
			{stripeEvent("evt_r1", 2), refund(100)},
			{stripeEvent("evt_r2", 3), refund(300)},
		}, 40},
		{"dispute won gives back", []billingStep{
			{stripeEvent("evt_g", 1), grant},
			{stripeEvent("evt_d1", 2), dispute("needs_response", 500)},
			{stripeEvent("evt_d2", 3), dispute("won", 500)},
		}, 100},
		{"refund and lost dispute never take more than was granted", []billingStep{
			{stripeEvent("evt_g", 1), grant},
			{stripeEvent("evt_r", 2), refund(300)},
			{stripeEvent("evt_d1", 3), dispute("needs_response", 500)},
			{stripeEvent("evt_d2", 4), dispute("lost", 500)},
		}, 0},
		{"partial refund, then a dispute won", []billingStep{
			{stripeEvent("evt_g", 1), grant},
			{stripeEvent("evt_r", 2), refund(250)},
			{stripeEvent("evt_d1", 3), dispute("under_review", 250)},
			{stripeEvent("evt_d2", 4), dispute("won", 250)},
		}, 50},
		{"an inquiry takes nothing", []billingStep{
			{stripeEvent("evt_g", 1), grant},
			{stripeEvent("evt_d1", 2), dispute("warning_needs_response", 500)},
			{stripeEvent("evt_d2", 3), dispute("warning_closed", 500)},
		}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := converge(t, h, tt.steps, credits); got != tt.want {
				t.Errorf("credits %d, want %d", got, tt.want)
			}
		})
	}
}

func testClawbackEntriesAndFlags(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "flags@example.com")
	db.LinkStripeCustomer(a.ID, "cus_f")
	steps := []billingStep{
		{stripeEvent("evt_1", 1), store.PaymentGrant{AccountID: a.ID, PaymentKey: "pi_f", Ref: "pi_f", Kind: store.KindPurchase, Credits: 100, MoneyMinor: 500, Currency: "usd"}},
		{stripeEvent("evt_2", 2), store.DisputeUpdate{PaymentKey: "pi_f", DisputeID: "dp_f", Status: "needs_response", AmountMinor: 500, Currency: "usd"}},
		{stripeEvent("evt_3", 3), store.DisputeUpdate{PaymentKey: "pi_f", DisputeID: "dp_f", Status: "won", AmountMinor: 500, Currency: "usd"}},
	}
	for _, s := range steps {
		if _, err := db.ApplyStripeEvent(s.ev, s.change); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := db.Ledger(a.ID)
	var got []string
	for _, e := range entries {
		got = append(got, fmt.Sprintf("%s %+d %s %+d %s", e.Kind, e.Amount, e.Ref, e.MoneyMinor, e.Currency))
	}
	want := []string{"purchase +100 pi_f +500 usd", "refund -100 dp_f#1 -500 usd", "reversal +100 dp_f#2 +500 usd"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ledger (-want +got):\n%s", diff)
	}
	flags, _ := db.BillingFlags()
	wantFlags := []store.BillingFlag{{ID: "dispute:dp_f", AccountID: a.ID, Reason: store.FlagDispute, Ref: "dp_f", Status: "won", Credits: 100, MoneyMinor: 500, Currency: "usd"}}
	if diff := cmp.Diff(wantFlags, flags, cmpopts.IgnoreFields(store.BillingFlag{}, "Time")); diff != "" {
		t.Errorf("flags (-want +got):\n%s", diff)
	}
	if mm, err := db.Reconcile(false); err != nil || len(mm) != 0 {
		t.Errorf("Reconcile = %+v, %v", mm, err)
	}
}

func testTransactionsNewestFirst(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "tx@example.com")
	b := mustAccount(t, db, "tx2@example.com")
	db.AddCredit(b.ID, store.Credit{Kind: store.KindGrant, Amount: 1, Ref: "other"})
	db.AddCredit(a.ID, store.Credit{Kind: store.KindPurchase, Amount: 100, Ref: "pi_1", MoneyMinor: 500, Currency: "usd"})
	for i := range 5 {
		clock.Advance(time.Second)
		h, _ := db.Reserve(a.ID, 1, "gen")
		db.CommitHold(h.ID)
		if i == 2 {
			db.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: 50, Ref: "plan:2026-11"})
		}
	}
	got, err := db.Transactions(a.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, e := range got {
		refs = append(refs, e.Ref)
	}
	if diff := cmp.Diff([]string{"plan:2026-11", "pi_1"}, refs); diff != "" {
		t.Errorf("transactions (-want +got):\n%s", diff)
	}
	if got, _ := db.Transactions(a.ID, 1); len(got) != 1 || got[0].Ref != "plan:2026-11" {
		t.Errorf("limit 1: %+v", got)
	}
	if got, _ := db.Transactions("acct_none", 10); len(got) != 0 {
		t.Errorf("unknown account: %+v", got)
	}
}

func testPruneStripeEvents(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "prune@example.com")
	db.LinkStripeCustomer(a.ID, "cus_p")
	sub := func(id string) store.SubscriptionUpdate {
		return store.SubscriptionUpdate{CustomerID: "cus_p", Subscription: store.Subscription{ID: id, Status: "active"}}
	}
	db.ApplyStripeEvent(stripeEvent("evt_old", 1), sub("sub_1"))
	clock.Advance(40 * 24 * time.Hour)
	db.ApplyStripeEvent(stripeEvent("evt_new", 2), sub("sub_2"))
	n, err := db.PruneStripeEvents(clock.Now().Add(-30 * 24 * time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneStripeEvents = %d, %v; want 1", n, err)
	}
	if seen, _ := db.StripeEventSeen("evt_old"); seen {
		t.Error("old event id kept")
	}
	if seen, _ := db.StripeEventSeen("evt_new"); !seen {
		t.Error("recent event id pruned")
	}
}
