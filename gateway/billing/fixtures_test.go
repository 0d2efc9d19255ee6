package billing

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/imagegate/imagegate/internal/testpeer"
)

const (
	testWebhookSecret = "whsec_test_current"
	pricePackSmall    = "price_pack_small"
	pricePackBig      = "price_pack_big"
	priceProMonthly   = "price_pro_monthly"
)

// testConfig is a catalogue of two packs and one subscription, with
// Stripe at apiURL (nothing listens there for the webhook tests).
func testConfig(apiURL string) Config {
	return Config{
		SecretKey:      testpeer.StripeTestKey,
		WebhookSecrets: []string{testWebhookSecret, "whsec_test_previous"},
		APIURL:         apiURL,
		Packs: map[string]CreditPack{
			"small": {PriceID: pricePackSmall, Credits: 100},
			"big":   {PriceID: pricePackBig, Credits: 1000},
		},
		Subscriptions:     map[string]SubscriptionPlan{"pro-monthly": {PriceID: priceProMonthly, Plan: "pro", Credits: 2000}},
		MaxNetworkRetries: -1,
	}
}

// noStripe is an API URL nothing listens on: webhook tests make no calls.
const noStripe = "http://127.0.0.1:9"

// Stripe objects as the 2023-10-16 API renders them in events (the fields
// imagegate reads, and a few it must not care about).
type obj = map[string]any

func eventJSON(t testing.TB, id string, typ stripe.EventType, created int64, object obj) []byte {
	t.Helper()
	data, err := json.Marshal(obj{
		"id": id, "object": "event", "api_version": stripe.APIVersion, "created": created, "type": string(typ),
		"livemode": false, "pending_webhooks": 1, "request": obj{"id": nil, "idempotency_key": nil},
		"data": obj{"object": object},
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func sessionObj(id, account, customer, pi, paymentStatus string, credits, amount int64) obj {
	return obj{
		"id": id, "object": "checkout.session", "mode": "payment", "status": "complete", "payment_status": paymentStatus,
		"client_reference_id": account, "customer": customer, "payment_intent": pi,
		"amount_total": amount, "currency": "usd", "livemode": false,
		"metadata": obj{MetaAccount: account, MetaPack: "small", MetaCredits: fmt.Sprint(credits)},
	}
}

func invoiceObj(id, account, customer, sub, pi, reason string, amountPaid, periodStart, periodEnd int64) obj {
	status := "paid"
	if amountPaid == 0 {
		status = "open"
	}
	return obj{
		"id": id, "object": "invoice", "customer": customer, "subscription": sub, "payment_intent": pi,
		"billing_reason": reason, "amount_paid": amountPaid, "currency": "usd", "status": status, "paid": amountPaid > 0,
		"subscription_details": obj{"metadata": obj{MetaAccount: account}},
		"lines": obj{"object": "list", "has_more": false, "data": []obj{{
			"id": "il_" + id, "object": "line_item", "type": "subscription", "proration": false, "quantity": 1,
			"price":  obj{"id": priceProMonthly, "object": "price"},
			"period": obj{"start": periodStart, "end": periodEnd},
		}}},
	}
}

func subscriptionObj(id, account, customer, status string, periodStart, periodEnd int64, cancelAtEnd bool) obj {
	return obj{
		"id": id, "object": "subscription", "customer": customer, "status": status,
		"current_period_start": periodStart, "current_period_end": periodEnd, "cancel_at_period_end": cancelAtEnd,
		"metadata": obj{MetaAccount: account, MetaPlan: "pro-monthly"},
		"items": obj{"object": "list", "has_more": false, "data": []obj{{
			"id": "si_" + id, "object": "subscription_item", "quantity": 1, "price": obj{"id": priceProMonthly, "object": "price"},
		}}},
	}
}

func chargeObj(id, customer, pi string, amount, refunded int64) obj {
	return obj{
		"id": id, "object": "charge", "customer": customer, "payment_intent": pi, "amount": amount,
		"amount_refunded": refunded, "refunded": refunded >= amount, "currency": "usd", "metadata": obj{},
	}
}

func disputeObj(id, charge, pi, status string, amount int64) obj {
	return obj{"id": id, "object": "dispute", "charge": charge, "payment_intent": pi, "amount": amount, "currency": "usd", "status": status}
}

// signHeader is the Stripe-Signature header Stripe would send.
func signHeader(payload []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at}).Header
}
