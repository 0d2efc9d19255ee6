package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

func testOneOpenSubscriptionCheckout(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "subscriber@example.com")
	expires := clock.Now().Add(30 * time.Minute)
	first, err := db.OpenSubscriptionCheckout(a.ID, store.SubscriptionCheckout{PriceID: "price_pro", Nonce: "nonce-one", Expires: expires})
	if err != nil || first.Nonce != "nonce-one" {
		t.Fatalf("first checkout: %+v %v", first, err)
	}
	// The same plan again: the open checkout, so the same Stripe session.
	again, err := db.OpenSubscriptionCheckout(a.ID, store.SubscriptionCheckout{PriceID: "price_pro", Nonce: "nonce-two", Expires: expires.Add(time.Minute)})
	if err != nil || again != first {
		t.Errorf("second checkout for the same plan: %+v %v, want %+v", again, err, first)
	}
	// Another plan while it is open: refused.
	if _, err := db.OpenSubscriptionCheckout(a.ID, store.SubscriptionCheckout{PriceID: "price_max", Nonce: "nonce-three", Expires: expires}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("another plan while one is open: %v, want store.ErrConflict", err)
	}
	// Once it expired, a new one opens.
	clock.Advance(31 * time.Minute)
	later, err := db.OpenSubscriptionCheckout(a.ID, store.SubscriptionCheckout{PriceID: "price_max", Nonce: "nonce-four", Expires: clock.Now().Add(30 * time.Minute)})
	if err != nil || later.Nonce != "nonce-four" {
		t.Errorf("after expiry: %+v %v", later, err)
	}
}
