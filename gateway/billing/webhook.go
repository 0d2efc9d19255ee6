package billing

import (
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/store"
)

const (
	// DefaultWebhookTolerance is how old a signature may be: Stripe's own
	// default, and what its retries are designed around.
	DefaultWebhookTolerance = 300 * time.Second
	// WebhookFutureSkew is how far in the future a signature may be dated
	// (clock skew between Stripe and us); anything later is refused.
	WebhookFutureSkew = 30 * time.Second
	// maxWebhookBytes bounds an event body (Stripe's are a few KiB).
	maxWebhookBytes = 1 << 20
	// Bounds on the Stripe-Signature header, which anyone can send.
	maxSignatureHeaderBytes = 4096
	maxSignatures           = 8
)

func webhookRefusal(code, msg string) *apierror.Error {
	return &apierror.Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Msg: msg}
}

// Why a webhook delivery is refused. Each is a 400: Stripe shows the
// message in its dashboard and retries, and nothing has changed.
var (
	errNoSignature     = webhookRefusal("missing_signature", "Stripe-Signature header is missing")
	errSignatureHeader = webhookRefusal("invalid_signature_header", "Stripe-Signature header is malformed")
	errSignature       = webhookRefusal("invalid_signature", "no Stripe-Signature signature matches the body and a webhook secret")
	errSignatureTooOld = webhookRefusal("signature_too_old", "the Stripe-Signature timestamp is older than the tolerance")
	errSignatureFuture = webhookRefusal("signature_in_future", "the Stripe-Signature timestamp is in the future")
	errMalformedEvent  = webhookRefusal("malformed_event", "the body is not a Stripe event")
	errWebhookTooLarge = &apierror.Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large", Msg: "webhook body too large"}
)

// codeAPIVersion is the refusal of an event rendered in another Stripe API
// version than stripe-go's.
const codeAPIVersion = "api_version_mismatch"

// signatureHeader is a parsed Stripe-Signature header:
// "t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…][,<other scheme>=…]".
type signatureHeader struct {
	timestamp  int64
	signatures [][]byte // v1 signatures, 32 bytes each
}

// parseSignatureHeader parses a Stripe-Signature header. It needs exactly
// one timestamp (decimal seconds) and at least one well-formed v1
// signature; several v1 signatures (Stripe's during a secret roll) are all
// kept, up to maxSignatures. Other schemes (v0 is Stripe's test scheme)
// and malformed v1 values are ignored, as Stripe's own parser does.
func parseSignatureHeader(h string) (signatureHeader, error) {
	var sh signatureHeader
	if h == "" {
		return sh, errNoSignature
	}
	if len(h) > maxSignatureHeaderBytes {
		return sh, errSignatureHeader
	}
	haveT := false
	for item := range strings.SplitSeq(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return sh, errSignatureHeader
		}
		switch k {
		case "t":
			if haveT || v == "" || len(v) > 18 || strings.Trim(v, "0123456789") != "" {
				return sh, errSignatureHeader
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return sh, errSignatureHeader
			}
			sh.timestamp, haveT = n, true
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != 32 {
				continue
			}
			if len(sh.signatures) == maxSignatures {
				return sh, errSignatureHeader
			}
			sh.signatures = append(sh.signatures, sig)
		}
	}
	if !haveT || len(sh.signatures) == 0 {
		return sh, errSignatureHeader
	}
	return sh, nil
}

// verifyWebhook authenticates a webhook body and decodes its event. The
// body must be signed (HMAC-SHA256 over "<t>.<body>", in a v1 signature)
// with one of secrets; the signature's timestamp must be no older than
// tolerance and no later than now plus WebhookFutureSkew (stripe-go's
// ConstructEvent lets any future time pass); and the event must be
// rendered in stripe.APIVersion, the version stripe-go's types decode. The
// first check that fails is returned as a 400 *apierror.Error.
func verifyWebhook(payload []byte, header string, secrets []string, tolerance time.Duration, now time.Time) (*stripe.Event, error) {
	sh, err := parseSignatureHeader(header)
	if err != nil {
		return nil, err
	}
	signed := time.Unix(sh.timestamp, 0)
	matched := false
	for _, secret := range secrets {
		expected := webhook.ComputeSignature(signed, payload, secret)
		for _, sig := range sh.signatures {
			// Every comparison runs, in constant time each.
			if hmac.Equal(expected, sig) {
				matched = true
			}
		}
	}
	switch {
	case !matched:
		return nil, errSignature
	case now.Sub(signed) > tolerance:
		return nil, errSignatureTooOld
	case signed.Sub(now) > WebhookFutureSkew:
		return nil, errSignatureFuture
	}
	var ev stripe.Event
	if err := json.Unmarshal(payload, &ev); err != nil || ev.ID == "" || ev.Type == "" || ev.Created <= 0 || ev.Data == nil {
		return nil, errMalformedEvent
	}
	if ev.APIVersion != stripe.APIVersion {
		return nil, webhookRefusal(codeAPIVersion, fmt.Sprintf(
			"event rendered in Stripe API version %q, but this server decodes %q: set the webhook endpoint's API version to %s",
			ev.APIVersion, stripe.APIVersion, stripe.APIVersion))
	}
	return &ev, nil
}

// HandleWebhook receives one delivery of Stripe's events: payload is the
// raw body, signature its Stripe-Signature header. A verified event is
// applied and nil returned — also when it was already applied, or is of a
// type or about a customer imagegate ignores — so the gateway answers 200
// and Stripe stops retrying. A delivery that fails verification is a 400
// (413 when too large) *apierror.Error and changes nothing; a store
// failure is any other error, a 500, and Stripe retries later.
func (b *Stripe) HandleWebhook(payload []byte, signature string) error {
	if len(payload) > maxWebhookBytes {
		return errWebhookTooLarge
	}
	ev, err := verifyWebhook(payload, signature, b.cfg.WebhookSecrets, b.cfg.WebhookTolerance, b.now())
	if err != nil {
		var ae *apierror.Error
		if errors.As(err, &ae) && ae.Code == codeAPIVersion {
			// A configuration problem every event will hit: say so loudly.
			b.logger.Error("stripe webhook endpoint is on the wrong API version", "want", stripe.APIVersion, "err", ae.Msg)
		} else {
			reason := "internal_error"
			if ae != nil {
				reason = ae.Code
			}
			b.logger.Warn("stripe webhook refused", "reason", reason)
		}
		return err
	}
	outcome, err := b.handleEvent(ev)
	if err != nil {
		return err
	}
	b.logger.Info("stripe event", "id", ev.ID, "type", string(ev.Type), "outcome", outcome)
	return nil
}

// Outcomes of handleEvent.
const (
	eventApplied   = "applied"
	eventDuplicate = "duplicate"
	eventIgnored   = "ignored"
)

// handledEvents are the event types imagegate acts on; any other is
// answered 200 and ignored.
var handledEvents = map[stripe.EventType]bool{
	stripe.EventTypeCheckoutSessionCompleted:             true,
	stripe.EventTypeCheckoutSessionAsyncPaymentSucceeded: true,
	stripe.EventTypeCheckoutSessionAsyncPaymentFailed:    true,
	stripe.EventTypeInvoicePaid:                          true,
	stripe.EventTypeInvoicePaymentFailed:                 true,
	stripe.EventTypeCustomerSubscriptionCreated:          true,
	stripe.EventTypeCustomerSubscriptionUpdated:          true,
	stripe.EventTypeCustomerSubscriptionDeleted:          true,
	stripe.EventTypeCustomerSubscriptionPaused:           true,
	stripe.EventTypeCustomerSubscriptionResumed:          true,
	stripe.EventTypeChargeRefunded:                       true,
	stripe.EventTypeChargeDisputeCreated:                 true,
	stripe.EventTypeChargeDisputeUpdated:                 true,
	stripe.EventTypeChargeDisputeClosed:                  true,
}

// handleEvent applies one verified event: it turns the event's object into
// store changes and has the store apply them together with the event id,
// in one transaction. It returns eventApplied, eventDuplicate (already
// applied: nothing changes) or eventIgnored (not an event, customer or
// object imagegate acts on; nothing is recorded, so a later resend after a
// configuration fix still applies). Only a store failure is an error.
func (b *Stripe) handleEvent(ev *stripe.Event) (string, error) {
	if !handledEvents[ev.Type] {
		return eventIgnored, nil
	}
	seen, err := b.store.StripeEventSeen(ev.ID)
	if err != nil {
		return "", err
	}
	if seen {
		return eventDuplicate, nil
	}
	changes, err := b.changesFor(ev)
	if err != nil {
		b.logger.Warn("stripe event not understood", "id", ev.ID, "type", string(ev.Type), "err", err)
		return eventIgnored, nil
	}
	if len(changes) == 0 {
		return eventIgnored, nil
	}
	applied, err := b.store.ApplyStripeEvent(store.StripeEvent{ID: ev.ID, Type: string(ev.Type), Created: time.Unix(ev.Created, 0)}, changes...)
	switch {
	case errors.Is(err, store.ErrNotFound):
		b.logger.Info("stripe event for an unknown customer or account ignored", "id", ev.ID, "type", string(ev.Type))
		return eventIgnored, nil
	case errors.Is(err, store.ErrBadBillingChange):
		b.logger.Warn("stripe event not applicable", "id", ev.ID, "type", string(ev.Type), "err", err)
		return eventIgnored, nil
	case err != nil:
		return "", err
	case !applied:
		return eventDuplicate, nil
	}
	return eventApplied, nil
}

// changesFor reads the event's object into the store changes it causes.
func (b *Stripe) changesFor(ev *stripe.Event) ([]store.BillingChange, error) {
	switch ev.Type {
	case stripe.EventTypeCheckoutSessionCompleted, stripe.EventTypeCheckoutSessionAsyncPaymentSucceeded:
		var s stripe.CheckoutSession
		if err := json.Unmarshal(ev.Data.Raw, &s); err != nil {
			return nil, err
		}
		return b.sessionChanges(&s), nil
	case stripe.EventTypeCheckoutSessionAsyncPaymentFailed:
		// Nothing was granted for the session, so nothing changes; the
		// buyer sees the failure on Stripe's side.
		return nil, nil
	case stripe.EventTypeInvoicePaid, stripe.EventTypeInvoicePaymentFailed:
		var inv stripe.Invoice
		if err := json.Unmarshal(ev.Data.Raw, &inv); err != nil {
			return nil, err
		}
		return b.invoiceChanges(&inv, ev.Type == stripe.EventTypeInvoicePaid), nil
	case stripe.EventTypeCustomerSubscriptionCreated, stripe.EventTypeCustomerSubscriptionUpdated,
		stripe.EventTypeCustomerSubscriptionDeleted, stripe.EventTypeCustomerSubscriptionPaused,
		stripe.EventTypeCustomerSubscriptionResumed:
		var s stripe.Subscription
		if err := json.Unmarshal(ev.Data.Raw, &s); err != nil {
			return nil, err
		}
		return b.subscriptionChanges(&s), nil
	case stripe.EventTypeChargeRefunded:
		var ch stripe.Charge
		if err := json.Unmarshal(ev.Data.Raw, &ch); err != nil {
			return nil, err
		}
		if ch.ID == "" {
			return nil, errors.New("charge without id")
		}
		return []store.BillingChange{store.RefundUpdate{
			AccountID: ch.Metadata[MetaAccount], CustomerID: customerIDOf(ch.Customer),
			PaymentKey: paymentKey(ch.PaymentIntent, ch.ID), ChargeID: ch.ID,
			ChargeMinor: ch.Amount, RefundedMinor: ch.AmountRefunded, Currency: string(ch.Currency),
		}}, nil
	case stripe.EventTypeChargeDisputeCreated, stripe.EventTypeChargeDisputeUpdated, stripe.EventTypeChargeDisputeClosed:
		var d stripe.Dispute
		if err := json.Unmarshal(ev.Data.Raw, &d); err != nil {
			return nil, err
		}
		chargeID := ""
		if d.Charge != nil {
			chargeID = d.Charge.ID
		}
		key := paymentKey(d.PaymentIntent, chargeID)
		if d.ID == "" || key == "" {
			return nil, errors.New("dispute without id or charge")
		}
		return []store.BillingChange{store.DisputeUpdate{
			PaymentKey: key, DisputeID: d.ID, Status: string(d.Status), AmountMinor: d.Amount, Currency: string(d.Currency),
		}}, nil
	}
	return nil, nil
}

// sessionChanges grants a paid credit-pack checkout. Subscription
// checkouts grant nothing here: their invoices do (invoice.paid). A session
// completed but not yet paid (a delayed payment method) waits for
// checkout.session.async_payment_succeeded.
func (b *Stripe) sessionChanges(s *stripe.CheckoutSession) []store.BillingChange {
	if s.Mode != stripe.CheckoutSessionModePayment || s.PaymentStatus != stripe.CheckoutSessionPaymentStatusPaid {
		return nil
	}
	accountID := s.ClientReferenceID
	if accountID == "" {
		accountID = s.Metadata[MetaAccount]
	}
	if accountID == "" {
		return nil // not one of ours
	}
	credits, err := strconv.ParseInt(s.Metadata[MetaCredits], 10, 64)
	if err != nil || credits < 1 || credits > maxPackCredits {
		// A session made before credits travelled in metadata, or by
		// hand: the pack's current size.
		p, ok := b.cfg.Packs[s.Metadata[MetaPack]]
		if !ok {
			b.logger.Warn("paid checkout session names no pack on sale", "session", s.ID)
			return nil
		}
		credits = p.Credits
	}
	key := paymentKey(s.PaymentIntent, s.ID)
	return []store.BillingChange{store.PaymentGrant{
		AccountID: accountID, CustomerID: customerIDOf(s.Customer), PaymentKey: key, Ref: key,
		Kind: store.KindPurchase, Credits: credits, MoneyMinor: s.AmountTotal, Currency: string(s.Currency),
	}}
}

// invoiceChanges handles a subscription's invoice: a paid one grants the
// period's credits (first and renewal invoices that charged money) and
// marks the subscription active; a failed one marks it past due (or, for
// its first invoice, incomplete: it never started). Invoices of
// subscriptions imagegate did not sell are ignored.
func (b *Stripe) invoiceChanges(inv *stripe.Invoice, paid bool) []store.BillingChange {
	if inv.Subscription == nil || inv.Subscription.ID == "" || inv.ID == "" {
		return nil
	}
	var meta map[string]string
	if inv.SubscriptionDetails != nil {
		meta = inv.SubscriptionDetails.Metadata
	}
	var item Item
	var quantity int64
	if inv.Lines != nil {
		for _, line := range inv.Lines.Data {
			if line.Price == nil || line.Proration {
				continue
			}
			if it, ok := b.byPrice[line.Price.ID]; ok && it.mode == stripe.CheckoutSessionModeSubscription {
				item, quantity = it, max(line.Quantity, 1)
				break
			}
		}
	}
	if item.priceID == "" && meta[MetaPlan] == "" {
		return nil
	}
	upd := store.SubscriptionUpdate{
		AccountID: meta[MetaAccount], CustomerID: customerIDOf(inv.Customer), DefaultPlan: b.defaultPlan,
		Subscription: store.Subscription{ID: inv.Subscription.ID},
	}
	if !paid {
		upd.Subscription.Status = store.SubscriptionPastDue
		if inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCreate {
			upd.Subscription.Status = store.SubscriptionIncomplete
		}
		return []store.BillingChange{upd}
	}
	if inv.AmountPaid <= 0 {
		return nil // a trial or fully discounted period: nothing paid, nothing granted
	}
	upd.Subscription.Status = store.SubscriptionActive
	changes := []store.BillingChange{upd}
	periodInvoice := inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCreate || inv.BillingReason == stripe.InvoiceBillingReasonSubscriptionCycle
	if !periodInvoice || item.credits == 0 {
		return changes // prorations and manual invoices grant no period
	}
	return append(changes, store.PaymentGrant{
		AccountID: meta[MetaAccount], CustomerID: customerIDOf(inv.Customer), PaymentKey: paymentKey(inv.PaymentIntent, inv.ID),
		Ref: inv.ID, Kind: store.KindGrant, Credits: item.credits * quantity, MoneyMinor: inv.AmountPaid, Currency: string(inv.Currency),
	})
}

// subscriptionChanges reports a subscription's whole state: status,
// price (and the plan the catalogue maps it to), period, cancellation.
// Subscriptions imagegate did not sell — neither a catalogue price nor our
// checkout's metadata — are ignored; one whose price has since left the
// catalogue is still followed, so its end still ends the plan.
func (b *Stripe) subscriptionChanges(s *stripe.Subscription) []store.BillingChange {
	if s.ID == "" {
		return nil
	}
	sub := store.Subscription{
		ID: s.ID, Status: string(s.Status), CancelAtPeriodEnd: s.CancelAtPeriodEnd,
		PeriodStart: unixTime(s.CurrentPeriodStart), PeriodEnd: unixTime(s.CurrentPeriodEnd),
	}
	if s.Items != nil {
		for _, it := range s.Items.Data {
			if it.Price != nil {
				sub.PriceID = it.Price.ID
				if item, ok := b.byPrice[it.Price.ID]; ok && item.mode == stripe.CheckoutSessionModeSubscription {
					sub.Plan = item.plan
				}
				break
			}
		}
	}
	if sub.Plan == "" && s.Metadata[MetaPlan] == "" {
		return nil
	}
	return []store.BillingChange{store.SubscriptionUpdate{
		AccountID: s.Metadata[MetaAccount], CustomerID: customerIDOf(s.Customer),
		Subscription: sub, Full: true, DefaultPlan: b.defaultPlan,
	}}
}

// paymentKey names a payment the same way in every event about it: by its
// payment intent, or by fallback (a charge, invoice or session id) when
// there is none.
func paymentKey(pi *stripe.PaymentIntent, fallback string) string {
	if pi != nil && pi.ID != "" {
		return pi.ID
	}
	return fallback
}

func customerIDOf(c *stripe.Customer) string {
	if c == nil {
		return ""
	}
	return c.ID
}

func unixTime(sec int64) time.Time {
	if sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}
