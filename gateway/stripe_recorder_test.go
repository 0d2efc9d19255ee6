package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/imagegate/imagegate/gateway/billing"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// stripeRecorder stands in for Stripe's API where stripe-mock may not be
// installed, so promise M1 is checked by every `go test`. It answers the
// three calls imagegate makes (create a customer, a checkout session, a
// portal session) with the objects Stripe returns, refuses what Stripe
// would (wrong key or API version, a body that is not a form, a missing
// required parameter, an unknown path), and fails the test on any form
// field, query parameter or header whose value holds the address.
type stripeRecorder struct {
	t       *testing.T
	address string
	URL     string

	mu    sync.Mutex
	calls map[string]int // "POST /v1/customers": count
}

func newStripeRecorder(t *testing.T, address string) *stripeRecorder {
	r := &stripeRecorder{t: t, address: strings.ToLower(address), calls: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// required are the parameters Stripe refuses each call without.
var stripeRequired = map[string][]string{
	"/v1/customers":               nil,
	"/v1/checkout/sessions":       {"mode", "success_url", "line_items[0][price]"},
	"/v1/billing_portal/sessions": {"customer"},
}

func (r *stripeRecorder) serve(w http.ResponseWriter, req *http.Request) {
	fail := func(status int, typ, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"type": typ, "message": msg}})
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		fail(400, "invalid_request_error", "unreadable body")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		r.t.Errorf("%s %s: body is not a form: %v", req.Method, req.URL.Path, err)
		fail(400, "invalid_request_error", "body is not application/x-www-form-urlencoded")
		return
	}
	// The address, in any field, in any case, encoded or not.
	r.check(req, "body", string(body))
	for k, vs := range form {
		for _, v := range vs {
			r.check(req, "form field "+k, k+"="+v)
		}
	}
	for k, vs := range req.URL.Query() {
		r.check(req, "query "+k, k+"="+strings.Join(vs, ","))
	}
	for k, vs := range req.Header {
		r.check(req, "header "+k, strings.Join(vs, ","))
	}

	switch {
	case req.Header.Get("Authorization") != "Bearer "+testpeer.StripeTestKey:
		fail(401, "invalid_request_error", "Invalid API Key provided")
		return
	case req.Header.Get("Stripe-Version") != stripe.APIVersion:
		fail(400, "invalid_request_error", "Invalid Stripe API version")
		return
	case req.Method != http.MethodPost || !strings.HasPrefix(req.Header.Get("Content-Type"), "application/x-www-form-urlencoded"):
		fail(400, "invalid_request_error", "expected a form POST")
		return
	}
	need, known := stripeRequired[req.URL.Path]
	if !known {
		fail(404, "invalid_request_error", "Unrecognized request URL (POST: "+req.URL.Path+")")
		return
	}
	for _, p := range need {
		if form.Get(p) == "" {
			fail(400, "invalid_request_error", "Missing required param: "+p+".")
			return
		}
	}
	r.mu.Lock()
	r.calls["POST "+req.URL.Path]++
	n := r.calls["POST "+req.URL.Path]
	r.mu.Unlock()
	var obj map[string]any
	switch req.URL.Path {
	case "/v1/customers":
		obj = map[string]any{"id": fmt.Sprintf("cus_rec%d", n), "object": "customer", "metadata": map[string]string{billing.MetaAccount: form.Get("metadata[" + billing.MetaAccount + "]")}}
	case "/v1/checkout/sessions":
		id := fmt.Sprintf("cs_test_rec%d", n)
		obj = map[string]any{"id": id, "object": "checkout.session", "mode": form.Get("mode"), "customer": form.Get("customer"), "url": "https://checkout.stripe.com/c/pay/" + id}
	case "/v1/billing_portal/sessions":
		id := fmt.Sprintf("bps_rec%d", n)
		obj = map[string]any{"id": id, "object": "billing_portal.session", "customer": form.Get("customer"), "url": "https://billing.stripe.com/p/session/" + id}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(obj)
}

func (r *stripeRecorder) check(req *http.Request, where, value string) {
	v := strings.ToLower(value)
	if dec, err := url.QueryUnescape(v); err == nil {
		v += "\n" + dec
	}
	if strings.Contains(v, r.address) {
		r.t.Errorf("%s %s: %s holds the account's address: %q", req.Method, req.URL.Path, where, value)
	}
}

func (r *stripeRecorder) count(call string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[call]
}

// TestStripeNeverReceivesTheEmail checks promise M1 in every run: a
// buyer's first checkout (which creates the Stripe customer), a
// subscription checkout and the portal send Stripe no field holding the
// account's address.
func TestStripeNeverReceivesTheEmail(t *testing.T) {
	t.Parallel()
	const address = "M1.Buyer+stripe@Example.org"
	rec := newStripeRecorder(t, address)
	e := billingEnv(t, rec.URL)
	b, acct := e.signedIn(address)
	var got struct {
		URL string `json:"url"`
	}
	want(t, b.call("POST", "/v1/billing/checkout", `{"pack":"small"}`, &got), 200)
	if !strings.HasPrefix(got.URL, "https://checkout.stripe.com/") {
		t.Errorf("pack checkout URL %q", got.URL)
	}
	want(t, b.call("POST", "/v1/billing/checkout", `{"plan":"pro-monthly"}`, &got), 200)
	want(t, b.call("POST", "/v1/billing/portal", "", &got), 200)
	if !strings.HasPrefix(got.URL, "https://billing.stripe.com/") {
		t.Errorf("portal URL %q", got.URL)
	}
	if rec, err := e.db.Billing(acct.ID); err != nil || rec.CustomerID != "cus_rec1" {
		t.Errorf("stored customer %+v, %v; want the recorder's cus_rec1", rec, err)
	}
	for call, n := range map[string]int{"POST /v1/customers": 1, "POST /v1/checkout/sessions": 2, "POST /v1/billing_portal/sessions": 1} {
		if got := rec.count(call); got != n {
			t.Errorf("%s: %d calls, want %d", call, got, n)
		}
	}
}
