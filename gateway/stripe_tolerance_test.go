package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/imagegate/imagegate/gateway/billing"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// TestWebhookToleranceBoundaries pins promise M2's clock rules to the
// second, on the gateway's own (fake) clock and its default tolerance: a
// signature 300 s old is accepted and 301 s refused; one dated up to the
// allowed skew (30 s) ahead is accepted, a second more, or 300 s, refused.
// Each delivery is a distinct event, so every accepted one credits once
// and a refused one changes nothing.
func TestWebhookToleranceBoundaries(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC))
	e := newEnv(t, envOptions{now: clock.Now, cfg: Config{Billing: billingConfig(noStripe)}})
	acct := customerAccount(t, e.db, "tolerance@example.com", "cus_tolerance")
	now := clock.Now()
	for i, c := range []struct {
		name   string
		offset time.Duration // signature time minus now
		code   string        // "" accepted
	}{
		{"300 s old", -300 * time.Second, ""},
		{"301 s old", -301 * time.Second, "signature_too_old"},
		{"30 s ahead", billing.WebhookFutureSkew, ""},
		{"31 s ahead", billing.WebhookFutureSkew + time.Second, "signature_in_future"},
		{"300 s ahead", 300 * time.Second, "signature_in_future"},
		{"301 s ahead", 301 * time.Second, "signature_in_future"},
	} {
		id := fmt.Sprintf("evt_tolerance_%d", i)
		payload := eventJSON(t, id, stripe.EventTypeCheckoutSessionCompleted, now.Unix(),
			sessionObj(fmt.Sprintf("cs_tolerance_%d", i), acct.ID, "cus_tolerance", fmt.Sprintf("pi_tolerance_%d", i), "paid", 100, 500))
		before := balance(t, e.db, acct.ID)
		resp, body := e.deliver(payload, signHeader(payload, testWebhookSecret, now.Add(c.offset)))
		var eb errorBody
		json.Unmarshal(body, &eb)
		seen, err := e.db.StripeEventSeen(id)
		if err != nil {
			t.Fatal(err)
		}
		wantCredit := int64(0)
		if c.code == "" {
			wantCredit = 100
			if resp.StatusCode != http.StatusOK || !seen {
				t.Errorf("%s: %d %s (event recorded %v), want 200", c.name, resp.StatusCode, body, seen)
			}
		} else if resp.StatusCode != http.StatusBadRequest || eb.Error.Code != c.code || seen {
			t.Errorf("%s: %d %s (event recorded %v), want 400 %s", c.name, resp.StatusCode, body, seen, c.code)
		}
		if got := balance(t, e.db, acct.ID) - before; got != wantCredit {
			t.Errorf("%s: credited %d, want %d", c.name, got, wantCredit)
		}
	}
}
