package gateway

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/imagegate/imagegate/gateway/billing"
	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

const (
	testWebhookSecret     = "whsec_test_current"
	testWebhookSecretPrev = "whsec_test_previous"
	pricePackSmall        = "price_pack_small"
	pricePackBig          = "price_pack_big"
	priceProMonthly       = "price_pro_monthly"
)

// billingConfig is a catalogue of two packs and one subscription, with
// Stripe at apiURL (stripe-mock, or nothing for webhook-only tests).
func billingConfig(apiURL string) BillingConfig {
	return BillingConfig{
		SecretKey:      testpeer.StripeTestKey,
		WebhookSecrets: []string{testWebhookSecret, testWebhookSecretPrev},
		APIURL:         apiURL,
		Packs: map[string]CreditPack{
			"small": {PriceID: pricePackSmall, Credits: 100},
			"big":   {PriceID: pricePackBig, Credits: 1000},
		},
		Subscriptions:     map[string]SubscriptionPlan{"pro-monthly": {PriceID: priceProMonthly, Plan: "pro", Credits: 2000}},
		MaxNetworkRetries: -1,
	}
}

// TestConcurrentSubscriptionCheckoutsMakeOneSession starts eight
// subscription checkouts for one account at once, each with its own
// Idempotency-Key, against stripe-mock: every one is answered, and every
// session request carries one idempotency key, so Stripe makes a single
// session and at most one subscription can follow. A checkout for another
// plan while it is open is refused.
func TestConcurrentSubscriptionCheckoutsMakeOneSession(t *testing.T) {
	t.Parallel()
	sm := testpeer.StripeMock(t)
	cfg := billingConfig(sm.URL)
	cfg.Subscriptions["pro-yearly"] = SubscriptionPlan{PriceID: "price_pro_yearly", Plan: "pro", Credits: 24000}
	e := newEnv(t, envOptions{cfg: Config{Billing: cfg}})
	b, _ := e.signedIn("racer@example.com")
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	start := make(chan struct{})
	for i := range 8 {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest("POST", e.url+"/v1/billing/checkout", strings.NewReader(`{"plan":"pro-monthly"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", fmt.Sprintf("racing-attempt-%02d", i))
			for k, v := range b.header {
				req.Header[k] = v
			}
			resp, err := b.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	close(start)
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Errorf("a racing checkout answered %d", st)
		}
	}
	sessions := sm.RequestsTo("POST", "/v1/checkout/sessions")
	keys := map[string]bool{}
	for _, s := range sessions {
		keys[s.IdempotencyKey] = true
	}
	if len(sessions) == 0 || len(keys) != 1 {
		t.Fatalf("%d session requests with %d idempotency keys, want one key", len(sessions), len(keys))
	}
	var eb errorBody
	want(t, b.call("POST", "/v1/billing/checkout", `{"plan":"pro-yearly"}`, &eb), http.StatusConflict)
	if eb.Error.Code != "checkout_in_progress" {
		t.Errorf("another plan while one checkout is open: code %q", eb.Error.Code)
	}
	if n := len(sm.RequestsTo("POST", "/v1/checkout/sessions")); n != len(sessions) {
		t.Errorf("the refused checkout reached Stripe")
	}
}

// noStripe is an API URL nothing listens on: webhook tests make no calls.
const noStripe = "http://127.0.0.1:9"

func billingEnv(t *testing.T, apiURL string) *env {
	return newEnv(t, envOptions{cfg: Config{Billing: billingConfig(apiURL)}})
}

// customerAccount creates an account linked to a Stripe customer, as its
// first checkout would.
func customerAccount(t *testing.T, db *store.DB, email, customerID string) store.Account {
	t.Helper()
	acct, err := db.CreateAccount(store.NewAccount{Email: email, PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.LinkStripeCustomer(acct.ID, customerID); err != nil {
		t.Fatal(err)
	}
	return acct
}

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
		"metadata": obj{billing.MetaAccount: account, billing.MetaPack: "small", billing.MetaCredits: fmt.Sprint(credits)},
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
		"subscription_details": obj{"metadata": obj{billing.MetaAccount: account}},
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
		"metadata": obj{billing.MetaAccount: account, billing.MetaPlan: "pro-monthly"},
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

// deliver posts payload to the webhook with header as its signature
// (none when empty).
func (e *env) deliver(payload []byte, header string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.url+"/v1/billing/webhook", bytes.NewReader(payload))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if header != "" {
		req.Header.Set("Stripe-Signature", header)
	}
	return e.do(req)
}

// deliverSigned delivers payload signed now with the current secret and
// requires a 200.
func (e *env) deliverSigned(payload []byte) {
	e.t.Helper()
	resp, body := e.deliver(payload, signHeader(payload, testWebhookSecret, time.Now()))
	if resp.StatusCode != 200 {
		e.t.Fatalf("webhook: status %d: %s", resp.StatusCode, body)
	}
}

func balance(t *testing.T, db *store.DB, id string) int64 {
	t.Helper()
	a, err := db.Account(id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Credits
}

// TestBillingPlansDefined: a subscription may only put accounts on a plan
// the gateway defines for accounts (not the anonymous visitors' plan).
func TestBillingPlansDefined(t *testing.T) {
	t.Parallel()
	ok := billingConfig("https://api.stripe.com")
	c := ok
	c.Subscriptions = map[string]SubscriptionPlan{"gold": {PriceID: "price_gold", Plan: "gold"}, "anon": {PriceID: "price_a", Plan: planAnonymous}}
	var plans PlansConfig
	plans.setDefaults()
	err := c.CheckPlans(plans.accountPlan)
	if err == nil || !strings.Contains(err.Error(), `"gold"`) || !strings.Contains(err.Error(), `"anonymous"`) {
		t.Errorf("checkPlans = %v, want both gold and anonymous refused", err)
	}
	if err := ok.CheckPlans(plans.accountPlan); err != nil {
		t.Errorf("checkPlans(valid) = %v", err)
	}
}

// TestBillingOff: with no Stripe key every billing route answers 503
// "payments not configured" with Retry-After, and the rest of the service
// works (issue 4, item 6).
func TestBillingOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	if e.gw.billing != nil {
		t.Fatal("billing is on without a key")
	}
	b, _ := e.signedIn("nobilling@example.com")
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/billing", ""},
		{"POST", "/v1/billing/checkout", `{"pack":"small"}`},
		{"POST", "/v1/billing/portal", ""},
	} {
		var got errorBody
		resp := b.call(r.method, r.path, r.body, &got)
		want(t, resp, http.StatusServiceUnavailable)
		if got.Error.Code != "payments_not_configured" || got.Error.Message != "payments not configured" || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: %+v, Retry-After %q", r.method, r.path, got, resp.Header.Get("Retry-After"))
		}
	}
	payload := eventJSON(t, "evt_off", stripe.EventTypeCheckoutSessionCompleted, time.Now().Unix(), obj{})
	if resp, _ := e.deliver(payload, signHeader(payload, testWebhookSecret, time.Now())); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("webhook with billing off: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	want(t, b.call("GET", "/v1/account", "", nil), http.StatusOK)
	resp, body := e.postJSON(`{"prompt":"works without payments","size":"256x256"}`)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("generation with billing off: %d %s", resp.StatusCode, body)
	}
}

// TestCheckoutAgainstStripeMock checks every outgoing Stripe call against
// stripe-mock, which refuses any request that does not match Stripe's API.
func TestCheckoutAgainstStripeMock(t *testing.T) {
	t.Parallel()
	sm := testpeer.StripeMock(t)
	e := billingEnv(t, sm.URL)
	const email = "buyer@example.com"
	b, acct := e.signedIn(email)

	var got struct {
		URL string `json:"url"`
	}
	b.header.Set("Idempotency-Key", "attempt-0001")
	want(t, b.call("POST", "/v1/billing/checkout", `{"pack":"small"}`, &got), 200)
	if !strings.HasPrefix(got.URL, "https://checkout.stripe.com/") {
		t.Errorf("checkout URL %q", got.URL)
	}
	rec, err := e.db.Billing(acct.ID)
	if err != nil || !strings.HasPrefix(rec.CustomerID, "cus_") {
		t.Fatalf("stored customer %+v, %v", rec, err)
	}
	customers := sm.RequestsTo("POST", "/v1/customers")
	if len(customers) != 1 {
		t.Fatalf("%d customer creations, want 1", len(customers))
	}
	if c := customers[0]; c.IdempotencyKey != "customer:"+acct.ID || c.Form.Get("metadata["+billing.MetaAccount+"]") != acct.ID || len(c.Form) != 1 {
		t.Errorf("customer creation: key %q, form %v; want key customer:<account> and only our account id", c.IdempotencyKey, c.Form)
	}
	sessions := sm.RequestsTo("POST", "/v1/checkout/sessions")
	if len(sessions) != 1 {
		t.Fatalf("%d checkout sessions, want 1", len(sessions))
	}
	wantPack := map[string]string{
		"mode": "payment", "customer": rec.CustomerID, "client_reference_id": acct.ID,
		"line_items[0][price]": pricePackSmall, "line_items[0][quantity]": "1",
		"metadata[imagegate_account]": acct.ID, "metadata[imagegate_pack]": "small", "metadata[imagegate_credits]": "100",
		"payment_intent_data[metadata][imagegate_account]": acct.ID,
		"success_url": e.url + "/?checkout=success", "cancel_url": e.url + "/?checkout=cancel",
	}
	if diff := cmp.Diff(wantPack, flatForm(sessions[0].Form)); diff != "" {
		t.Errorf("pack checkout session (-want +got):\n%s", diff)
	}
	if k := sessions[0].IdempotencyKey; k != "checkout:"+acct.ID+":"+pricePackSmall+":attempt-0001" {
		t.Errorf("checkout idempotency key %q", k)
	}
	if v := sessions[0].StripeVersion; v != stripe.APIVersion {
		t.Errorf("Stripe-Version %q, want %q", v, stripe.APIVersion)
	}

	// The client's retry of the same attempt reuses the key (Stripe answers
	// it with the same session) and creates no second customer.
	want(t, b.call("POST", "/v1/billing/checkout", `{"pack":"small"}`, nil), 200)
	b.header.Del("Idempotency-Key")
	want(t, b.call("POST", "/v1/billing/checkout", `{"plan":"pro-monthly"}`, nil), 200)
	want(t, b.call("POST", "/v1/billing/checkout", `{"plan":"pro-monthly"}`, nil), 200)
	if n := len(sm.RequestsTo("POST", "/v1/customers")); n != 1 {
		t.Errorf("%d customer creations after four checkouts, want 1", n)
	}
	sessions = sm.RequestsTo("POST", "/v1/checkout/sessions")
	if len(sessions) != 4 {
		t.Fatalf("%d checkout sessions, want 4", len(sessions))
	}
	if sessions[1].IdempotencyKey != sessions[0].IdempotencyKey {
		t.Errorf("retry used key %q, first %q", sessions[1].IdempotencyKey, sessions[0].IdempotencyKey)
	}
	// Two subscription attempts without a client key: the second reuses the
	// open checkout's key, so Stripe answers with the one session.
	if sessions[2].IdempotencyKey != sessions[3].IdempotencyKey || !strings.HasPrefix(sessions[2].IdempotencyKey, "checkout:"+acct.ID+":"+priceProMonthly+":") {
		t.Errorf("subscription attempts without a client key: %q and %q; want one checkout:<account>:<price>:<nonce>", sessions[2].IdempotencyKey, sessions[3].IdempotencyKey)
	}
	billingRec, _ := e.db.Billing(acct.ID)
	if billingRec.Checkout == nil || sessions[2].Form.Get("expires_at") != strconv.FormatInt(billingRec.Checkout.Expires.Unix(), 10) {
		t.Errorf("subscription session expires_at %q, open checkout %+v", sessions[2].Form.Get("expires_at"), billingRec.Checkout)
	}
	wantSub := map[string]string{
		"mode": "subscription", "customer": rec.CustomerID, "client_reference_id": acct.ID,
		"line_items[0][price]": priceProMonthly, "line_items[0][quantity]": "1",
		"metadata[imagegate_account]": acct.ID, "metadata[imagegate_plan]": "pro-monthly",
		"subscription_data[metadata][imagegate_account]": acct.ID, "subscription_data[metadata][imagegate_plan]": "pro-monthly",
		"success_url": e.url + "/?checkout=success", "cancel_url": e.url + "/?checkout=cancel",
		"expires_at": sessions[2].Form.Get("expires_at"),
	}
	if diff := cmp.Diff(wantSub, flatForm(sessions[2].Form)); diff != "" {
		t.Errorf("subscription checkout session (-want +got):\n%s", diff)
	}

	want(t, b.call("POST", "/v1/billing/portal", "", &got), 200)
	if got.URL == "" {
		t.Error("portal: no URL")
	}
	// A key that may read the account sees billing, but never opens the
	// portal: that needs a browser session.
	api, _ := e.keyClient(b, `["account:read","images:write"]`)
	var eb errorBody
	want(t, api.call("POST", "/v1/billing/portal", "", &eb), http.StatusForbidden)
	if eb.Error.Code != "session_required" {
		t.Errorf("portal with an API key: code %q", eb.Error.Code)
	}
	want(t, api.call("GET", "/v1/billing", "", nil), http.StatusOK)
	portals := sm.RequestsTo("POST", "/v1/billing_portal/sessions")
	if len(portals) != 1 || portals[0].Form.Get("customer") != rec.CustomerID || portals[0].Form.Get("return_url") != e.url+"/" {
		t.Errorf("portal sessions %+v", portals)
	}

	// Promise M1, C4: the email address never leaves for Stripe.
	for _, r := range sm.Requests() {
		for k, vs := range r.Form {
			for _, v := range vs {
				if strings.Contains(strings.ToLower(v), "example.com") || strings.Contains(k, "email") {
					t.Errorf("%s %s sent %s=%s", r.Method, r.Path, k, v)
				}
			}
		}
	}

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			body, key string
			status    int
			code      string
		}{
			{`{}`, "", 400, "invalid_request"},
			{`{"pack":"small","plan":"pro-monthly"}`, "", 400, "invalid_request"},
			{`{"pack":"huge"}`, "", 400, "unknown_pack"},
			{`{"plan":"gold"}`, "", 400, "unknown_plan"},
			{`{"pack":"small","price":"price_x"}`, "", 400, "unknown_field"},
			{`{"pack":"small"}`, "short", 400, "invalid_idempotency_key"},
		} {
			var eb errorBody
			b.header.Set("Idempotency-Key", tc.key)
			if tc.key == "" {
				b.header.Del("Idempotency-Key")
			}
			want(t, b.call("POST", "/v1/billing/checkout", tc.body, &eb), tc.status)
			if eb.Error.Code != tc.code {
				t.Errorf("%s: code %q, want %q", tc.body, eb.Error.Code, tc.code)
			}
		}
		b.header.Del("Idempotency-Key")
		anon := e.browser()
		want(t, anon.call("POST", "/v1/billing/checkout", `{"pack":"small"}`, nil), http.StatusUnauthorized)
		want(t, anon.call("GET", "/v1/billing", "", nil), http.StatusUnauthorized)
	})

	t.Run("already subscribed", func(t *testing.T) {
		_, err := e.db.ApplyStripeEvent(store.StripeEvent{ID: "evt_live", Type: "customer.subscription.updated", Created: time.Now()},
			store.SubscriptionUpdate{AccountID: acct.ID, Full: true, DefaultPlan: "free",
				Subscription: store.Subscription{ID: "sub_live", Status: store.SubscriptionActive, PriceID: priceProMonthly, Plan: "pro"}})
		if err != nil {
			t.Fatal(err)
		}
		var eb errorBody
		want(t, b.call("POST", "/v1/billing/checkout", `{"plan":"pro-monthly"}`, &eb), http.StatusConflict)
		if eb.Error.Code != "already_subscribed" {
			t.Errorf("code %q", eb.Error.Code)
		}
		want(t, b.call("POST", "/v1/billing/checkout", `{"pack":"big"}`, nil), 200) // packs still on sale
	})

	t.Run("portal before any checkout", func(t *testing.T) {
		fresh, _ := e.signedIn("fresh@example.com")
		var eb errorBody
		want(t, fresh.call("POST", "/v1/billing/portal", "", &eb), http.StatusConflict)
		if eb.Error.Code != "no_billing_account" {
			t.Errorf("code %q", eb.Error.Code)
		}
	})

	t.Run("concurrent first checkouts make one customer", func(t *testing.T) {
		racer, racerAcct := e.signedIn("racer@example.com")
		const n = 8
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := range n {
			wg.Go(func() {
				req, _ := http.NewRequest("POST", e.url+"/v1/billing/checkout", strings.NewReader(`{"pack":"small"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Sec-Fetch-Site", "same-origin")
				resp, err := racer.client.Do(req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			})
		}
		wg.Wait()
		for i, s := range statuses {
			if s != 200 {
				t.Errorf("checkout %d: status %d", i, s)
			}
		}
		var mine int
		for _, r := range sm.RequestsTo("POST", "/v1/customers") {
			if r.Form.Get("metadata["+billing.MetaAccount+"]") == racerAcct.ID {
				mine++
			}
		}
		if mine != 1 {
			t.Errorf("%d customers created for one account, want 1", mine)
		}
	})
}

// flatForm turns a form into one value per key.
func flatForm(f map[string][]string) map[string]string {
	out := map[string]string{}
	for k, v := range f {
		out[k] = strings.Join(v, ",")
	}
	return out
}

func TestCheckoutStripeUnreachable(t *testing.T) {
	t.Parallel()
	e := billingEnv(t, "http://"+testpeer.Addr(testpeer.RefusedPort(t)))
	b, acct := e.signedIn("offline@example.com")
	var eb errorBody
	resp := b.call("POST", "/v1/billing/checkout", `{"pack":"small"}`, &eb)
	want(t, resp, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" || eb.Error.Message != "the payment provider is unavailable; retry shortly" {
		t.Errorf("answer %+v, Retry-After %q", eb, resp.Header.Get("Retry-After"))
	}
	if rec, _ := e.db.Billing(acct.ID); rec.CustomerID != "" {
		t.Errorf("customer %q stored though Stripe never answered", rec.CustomerID)
	}
}

// TestWebhookRefusals: every delivery that fails verification is a 400
// with its own code, and nothing changes: not the balance, and not the
// record of seen events (the genuine delivery afterwards still applies).
func TestWebhookRefusals(t *testing.T) {
	t.Parallel()
	e := billingEnv(t, noStripe)
	acct := customerAccount(t, e.db, "refusals@example.com", "cus_refusals")
	now := time.Now()
	payload := eventJSON(t, "evt_refusals", stripe.EventTypeCheckoutSessionCompleted, now.Unix(),
		sessionObj("cs_refusals", acct.ID, "cus_refusals", "pi_refusals", "paid", 100, 500))
	oldVersion := bytes.Replace(payload, []byte(`"api_version":"`+stripe.APIVersion+`"`), []byte(`"api_version":"2024-06-20"`), 1)
	if bytes.Equal(oldVersion, payload) {
		t.Fatal("fixture has no api_version to change")
	}
	tampered := bytes.Replace(payload, []byte(`"imagegate_credits":"100"`), []byte(`"imagegate_credits":"999"`), 1)
	good := signHeader(payload, testWebhookSecret, now)
	tests := []struct {
		name    string
		payload []byte
		header  string
		code    string
	}{
		{"wrong secret", payload, signHeader(payload, "whsec_somebody_else", now), "invalid_signature"},
		{"tampered body", tampered, good, "invalid_signature"},
		{"missing header", payload, "", "missing_signature"},
		{"malformed header", payload, "sha256=" + hex.EncodeToString(make([]byte, 32)), "invalid_signature_header"},
		{"header without timestamp", payload, strings.Split(good, ",")[1], "invalid_signature_header"},
		{"old timestamp", payload, signHeader(payload, testWebhookSecret, now.Add(-6*time.Minute)), "signature_too_old"},
		{"future timestamp", payload, signHeader(payload, testWebhookSecret, now.Add(5*time.Minute)), "signature_in_future"},
		{"wrong API version", oldVersion, signHeader(oldVersion, testWebhookSecret, now), "api_version_mismatch"},
		{"not an event", []byte(`{"hello":"world"}`), signHeader([]byte(`{"hello":"world"}`), testWebhookSecret, now), "malformed_event"},
	}
	for _, tt := range tests {
		resp, body := e.deliver(tt.payload, tt.header)
		var eb errorBody
		json.Unmarshal(body, &eb)
		if resp.StatusCode != http.StatusBadRequest || eb.Error.Code != tt.code {
			t.Errorf("%s: %d %s, want 400 %s", tt.name, resp.StatusCode, body, tt.code)
		}
	}
	var eb errorBody
	_, body := e.deliver(oldVersion, signHeader(oldVersion, testWebhookSecret, now))
	json.Unmarshal(body, &eb)
	if !strings.Contains(eb.Error.Message, `"2024-06-20"`) || !strings.Contains(eb.Error.Message, stripe.APIVersion) {
		t.Errorf("API version refusal %q does not name both versions", eb.Error.Message)
	}
	if !strings.Contains(e.logs.String(), "wrong API version") {
		t.Error("API version mismatch not logged as an error for the operator")
	}
	if n := balance(t, e.db, acct.ID); n != 0 {
		t.Fatalf("balance %d after refused deliveries", n)
	}
	if seen, _ := e.db.StripeEventSeen("evt_refusals"); seen {
		t.Fatal("a refused delivery recorded the event id")
	}
	for _, secret := range []string{testWebhookSecretPrev, testWebhookSecret} { // rotation: either secret
		resp, body := e.deliver(payload, signHeader(payload, secret, now))
		if resp.StatusCode != 200 {
			t.Fatalf("genuine delivery signed with %s: %d %s", secret, resp.StatusCode, body)
		}
	}
	// Stripe during a secret roll: one v1 per secret; an unknown scheme is ignored.
	rolled := fmt.Sprintf("t=%d,v1=%s,v1=%s,v0=zz", now.Unix(),
		hex.EncodeToString(webhook.ComputeSignature(now, payload, "whsec_new_unknown")),
		hex.EncodeToString(webhook.ComputeSignature(now, payload, testWebhookSecret)))
	if resp, body := e.deliver(payload, rolled); resp.StatusCode != 200 {
		t.Fatalf("header with two v1 signatures: %d %s", resp.StatusCode, body)
	}
	if n := balance(t, e.db, acct.ID); n != 100 {
		t.Errorf("balance %d after the genuine delivery (three times), want 100", n)
	}
}

// TestWebhookEvents delivers a signed payload of every handled event type
// through HTTP, each twice (Stripe redelivers), and checks its effect.
func TestWebhookEvents(t *testing.T) {
	t.Parallel()
	e := billingEnv(t, noStripe)
	const (
		p1s, p1e = 1_780_000_000, 1_782_592_000 // a first and a second period
		p2e      = 1_785_184_000
	)
	type step struct {
		typ stripe.EventType
		at  int64
		obj obj
	}
	type check struct {
		balance int64
		plan    string
		status  string // current subscription's; "" for none
		refs    []string
		flags   []string // "reason status credits"
	}
	tests := []struct {
		name  string
		steps func(acct, cus string) []step
		want  check
	}{
		{"completed and paid grants the pack once", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
				{stripe.EventTypeCheckoutSessionAsyncPaymentSucceeded, 101, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
			}
		}, check{balance: 100, plan: "free", refs: []string{"pi_1"}}},
		{"completed unpaid waits for async_payment_succeeded", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "unpaid", 100, 500)},
				{stripe.EventTypeCheckoutSessionAsyncPaymentSucceeded, 200, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
			}
		}, check{balance: 100, plan: "free", refs: []string{"pi_1"}}},
		{"async_payment_failed grants nothing", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "unpaid", 100, 500)},
				{stripe.EventTypeCheckoutSessionAsyncPaymentFailed, 200, sessionObj("cs_1", a, c, "pi_1", "unpaid", 100, 500)},
			}
		}, check{balance: 0, plan: "free"}},
		{"subscription created, first invoice paid, activated", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCustomerSubscriptionCreated, 100, subscriptionObj("sub_1", a, c, "incomplete", p1s, p1e, false)},
				{stripe.EventTypeInvoicePaid, 101, invoiceObj("in_1", a, c, "sub_1", "pi_in_1", "subscription_create", 2000, p1s, p1e)},
				{stripe.EventTypeCustomerSubscriptionUpdated, 101, subscriptionObj("sub_1", a, c, "active", p1s, p1e, false)},
			}
		}, check{balance: 2000, plan: "pro", status: "active", refs: []string{"in_1"}}},
		{"renewal fails: past due, plan kept, nothing granted", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCustomerSubscriptionUpdated, 100, subscriptionObj("sub_1", a, c, "active", p1s, p1e, false)},
				{stripe.EventTypeInvoicePaymentFailed, p1e, invoiceObj("in_2", a, c, "sub_1", "pi_in_2", "subscription_cycle", 0, p1e, p2e)},
			}
		}, check{balance: 0, plan: "pro", status: "past_due"}},
		{"first invoice fails: incomplete, no plan", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCustomerSubscriptionCreated, 100, subscriptionObj("sub_1", a, c, "incomplete", p1s, p1e, false)},
				{stripe.EventTypeInvoicePaymentFailed, 101, invoiceObj("in_1", a, c, "sub_1", "pi_in_1", "subscription_create", 0, p1s, p1e)},
			}
		}, check{balance: 0, plan: "free", status: "incomplete"}},
		{"renewal paid grants the next period", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCustomerSubscriptionUpdated, 100, subscriptionObj("sub_1", a, c, "active", p1s, p1e, false)},
				{stripe.EventTypeInvoicePaid, p1e, invoiceObj("in_2", a, c, "sub_1", "pi_in_2", "subscription_cycle", 2000, p1e, p2e)},
				{stripe.EventTypeCustomerSubscriptionUpdated, p1e, subscriptionObj("sub_1", a, c, "active", p1e, p2e, false)},
			}
		}, check{balance: 2000, plan: "pro", status: "active", refs: []string{"in_2"}}},
		{"deleted returns to the default plan, delivered before the update", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCustomerSubscriptionDeleted, 300, subscriptionObj("sub_1", a, c, "canceled", p1s, p1e, false)},
				{stripe.EventTypeCustomerSubscriptionUpdated, 200, subscriptionObj("sub_1", a, c, "active", p1s, p1e, true)},
			}
		}, check{balance: 0, plan: "free", status: "canceled"}},
		{"refund claws back the pack", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
				{stripe.EventTypeChargeRefunded, 200, chargeObj("ch_1", c, "pi_1", 500, 200)},
				{stripe.EventTypeChargeRefunded, 300, chargeObj("ch_1", c, "pi_1", 500, 500)},
			}
		}, check{balance: 0, plan: "free", refs: []string{"ch_1#1", "ch_1#2", "pi_1"}}},
		{"refund delivered before the purchase", func(a, c string) []step {
			return []step{
				{stripe.EventTypeChargeRefunded, 200, chargeObj("ch_1", c, "pi_1", 500, 500)},
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
			}
		}, check{balance: 0, plan: "free", refs: []string{"pi_1", "pi_1#1"}}},
		{"dispute claws back and is flagged; won reverses", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
				{stripe.EventTypeChargeDisputeCreated, 200, disputeObj("dp_1", "ch_1", "pi_1", "needs_response", 500)},
				{stripe.EventTypeChargeDisputeClosed, 300, disputeObj("dp_1", "ch_1", "pi_1", "won", 500)},
			}
		}, check{balance: 100, plan: "free", refs: []string{"dp_1#1", "dp_1#2", "pi_1"}, flags: []string{"dispute won 100"}}},
		{"dispute lost keeps the clawback", func(a, c string) []step {
			return []step{
				{stripe.EventTypeCheckoutSessionCompleted, 100, sessionObj("cs_1", a, c, "pi_1", "paid", 100, 500)},
				{stripe.EventTypeChargeDisputeCreated, 200, disputeObj("dp_1", "ch_1", "pi_1", "needs_response", 500)},
				{stripe.EventTypeChargeDisputeClosed, 300, disputeObj("dp_1", "ch_1", "pi_1", "lost", 500)},
			}
		}, check{balance: 0, plan: "free", refs: []string{"dp_1#1", "pi_1"}, flags: []string{"dispute lost 100"}}},
		{"subscriptions imagegate did not sell are ignored", func(a, c string) []step {
			other := obj{"object": "list", "data": []obj{{"id": "si_other", "object": "subscription_item", "price": obj{"id": "price_other", "object": "price"}}}}
			sub := subscriptionObj("sub_1", a, c, "active", p1s, p1e, false)
			sub["metadata"], sub["items"] = obj{}, other
			inv := invoiceObj("in_1", a, c, "sub_1", "pi_in_1", "subscription_create", 900, p1s, p1e)
			inv["subscription_details"], inv["lines"] = obj{"metadata": obj{}}, other
			return []step{{stripe.EventTypeCustomerSubscriptionUpdated, 100, sub}, {stripe.EventTypeInvoicePaid, 101, inv}}
		}, check{balance: 0, plan: "free"}},
		{"unknown event types are ignored", func(a, c string) []step {
			return []step{{"customer.tax_id.created", 100, obj{"id": "txi_1", "object": "tax_id"}}}
		}, check{balance: 0, plan: "free"}},
		{"events about an unknown customer are ignored", func(a, c string) []step {
			return []step{{stripe.EventTypeCustomerSubscriptionUpdated, 100, subscriptionObj("sub_1", "", "cus_stranger", "active", p1s, p1e, false)}}
		}, check{balance: 0, plan: "free"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Stripe ids are global, so each case gets its own.
			cus := fmt.Sprintf("cus_case%d", i)
			acct := customerAccount(t, e.db, fmt.Sprintf("events%d@example.com", i), cus)
			for j, s := range tt.steps(acct.ID, cus) {
				payload := eventJSON(t, fmt.Sprintf("evt_case%d_%d", i, j), s.typ, s.at, s.obj)
				// Stripe ids are global: the cases' "…_1" and "…_2" become
				// "…_c<case>" and "…_d<case>" (and back, in the check).
				payload = bytes.ReplaceAll(payload, []byte(`_1"`), []byte(fmt.Sprintf(`_c%d"`, i)))
				payload = bytes.ReplaceAll(payload, []byte(`_2"`), []byte(fmt.Sprintf(`_d%d"`, i)))
				e.deliverSigned(payload)
				e.deliverSigned(payload) // redelivery: a no-op 200
			}
			got := check{balance: balance(t, e.db, acct.ID)}
			a, _ := e.db.Account(acct.ID)
			got.plan = a.Plan
			rec, _ := e.db.Billing(acct.ID)
			if s, ok := rec.Current(); ok {
				got.status = s.Status
			}
			entries, _ := e.db.Ledger(acct.ID)
			for _, le := range entries {
				ref := strings.ReplaceAll(strings.ReplaceAll(le.Ref, fmt.Sprintf("_c%d", i), "_1"), fmt.Sprintf("_d%d", i), "_2")
				got.refs = append(got.refs, ref)
				if le.Kind == store.KindPurchase && (le.MoneyMinor != 500 || le.Currency != "usd") {
					t.Errorf("purchase entry %+v: want 500 usd", le)
				}
			}
			slices.Sort(got.refs)
			flags, _ := e.db.BillingFlags()
			for _, f := range flags {
				if f.AccountID == acct.ID {
					got.flags = append(got.flags, fmt.Sprintf("%s %s %d", f.Reason, f.Status, f.Credits))
				}
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(check{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			checkLedger(t, e.db, acct.ID)
		})
	}
}

// TestClawbackShortfallFlagged: a refund of credits already spent takes
// them back anyway — the balance goes below zero, so the next generation
// is refused — and flags the shortfall for an operator.
func TestClawbackShortfallFlagged(t *testing.T) {
	t.Parallel()
	e := billingEnv(t, noStripe)
	acct := customerAccount(t, e.db, "spender@example.com", "cus_spender")
	e.deliverSigned(eventJSON(t, "evt_sf_1", stripe.EventTypeCheckoutSessionCompleted, 100,
		sessionObj("cs_sf", acct.ID, "cus_spender", "pi_sf", "paid", 100, 500)))
	h, err := e.db.Reserve(acct.ID, 60, "gen")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.CommitHold(h.ID); err != nil {
		t.Fatal(err)
	}
	e.deliverSigned(eventJSON(t, "evt_sf_2", stripe.EventTypeChargeRefunded, 200, chargeObj("ch_sf", "cus_spender", "pi_sf", 500, 500)))
	if n := balance(t, e.db, acct.ID); n != -60 {
		t.Errorf("balance %d, want -60 (100 bought, 60 spent, 100 refunded)", n)
	}
	flags, _ := e.db.BillingFlags()
	var got []store.BillingFlag
	for _, f := range flags {
		if f.AccountID == acct.ID {
			got = append(got, f)
		}
	}
	wantFlags := []store.BillingFlag{{ID: "shortfall:ch_sf#1", AccountID: acct.ID, Reason: store.FlagShortfall, Ref: "ch_sf#1",
		Credits: 60, MoneyMinor: -500, Currency: "usd"}}
	if diff := cmp.Diff(wantFlags, got, cmpopts.IgnoreFields(store.BillingFlag{}, "Time")); diff != "" {
		t.Errorf("flags (-want +got):\n%s", diff)
	}
	if _, err := e.db.Reserve(acct.ID, 1, "more"); !errors.Is(err, store.ErrInsufficientCredits) {
		t.Errorf("reserve after the shortfall: %v, want ErrInsufficientCredits", err)
	}
	checkLedger(t, e.db, acct.ID)
}

func TestGetBilling(t *testing.T) {
	t.Parallel()
	e := billingEnv(t, noStripe)
	b, acct := e.signedIn("viewer@example.com")
	if _, err := e.db.LinkStripeCustomer(acct.ID, "cus_viewer"); err != nil {
		t.Fatal(err)
	}
	e.deliverSigned(eventJSON(t, "evt_v1", stripe.EventTypeCheckoutSessionCompleted, 100,
		sessionObj("cs_v", acct.ID, "cus_viewer", "pi_v", "paid", 100, 500)))
	e.deliverSigned(eventJSON(t, "evt_v2", stripe.EventTypeInvoicePaid, 200,
		invoiceObj("in_v", acct.ID, "cus_viewer", "sub_v", "pi_in_v", "subscription_create", 2000, 1_780_000_000, 1_782_592_000)))
	e.deliverSigned(eventJSON(t, "evt_v3", stripe.EventTypeCustomerSubscriptionUpdated, 200,
		subscriptionObj("sub_v", acct.ID, "cus_viewer", "active", 1_780_000_000, 1_782_592_000, true)))

	var got billingJSON
	want(t, b.call("GET", "/v1/billing", "", &got), 200)
	a, _ := e.db.Account(acct.ID)
	paid, _ := e.db.LedgerEntryByRef(acct.ID, "pi_v")
	period, _ := e.db.LedgerEntryByRef(acct.ID, "in_v")
	if got.Plan != "pro" || !got.Portal || got.Credits.Balance != a.Credits || got.Credits.Available != a.Available() || paid.Amount+period.Amount != 2100 {
		t.Errorf("plan %q portal %v credits %+v (stored %d, paid %d+%d); want pro, true, the stored balance with 2100 paid",
			got.Plan, got.Portal, got.Credits, a.Credits, paid.Amount, period.Amount)
	}
	wantSub := &subscriptionJSON{ID: "sub_v", Status: "active", Plan: "pro", CurrentPeriodStart: 1_780_000_000, CurrentPeriodEnd: 1_782_592_000, CancelAtPeriodEnd: true}
	if diff := cmp.Diff(wantSub, got.Subscription); diff != "" {
		t.Errorf("subscription (-want +got):\n%s", diff)
	}
	var money []string
	for _, tx := range got.Transactions {
		if tx.AmountMinor != 0 {
			money = append(money, fmt.Sprintf("%s %d %s %d %s", tx.Kind, tx.Credits, tx.Reference, tx.AmountMinor, tx.Currency))
		}
	}
	if diff := cmp.Diff([]string{"grant 2000 in_v 2000 usd", "purchase 100 pi_v 500 usd"}, money); diff != "" {
		t.Errorf("paid transactions, newest first (-want +got):\n%s", diff)
	}
	wantCat := catalogueJSON{
		Packs:         []packJSON{{Name: "big", Credits: 1000}, {Name: "small", Credits: 100}},
		Subscriptions: []subscriptionPlan{{Name: "pro-monthly", Plan: "pro", CreditsPerPeriod: 2000}},
	}
	if diff := cmp.Diff(wantCat, got.Catalogue); diff != "" {
		t.Errorf("catalogue (-want +got):\n%s", diff)
	}
}
