package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"
	portalsession "github.com/stripe/stripe-go/v76/billingportal/session"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	"github.com/stripe/stripe-go/v76/customer"
	"golang.org/x/sync/singleflight"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/store"
)

// Store is what billing needs of the data layer: the account's Stripe
// customer, and the record of applied events that makes each apply once.
type Store interface {
	Billing(accountID string) (store.Billing, error)
	LinkStripeCustomer(accountID, customerID string) (string, error)
	StripeEventSeen(eventID string) (bool, error)
	ApplyStripeEvent(ev store.StripeEvent, changes ...store.BillingChange) (bool, error)
}

// Item is a pack or a subscription, as sold.
type Item struct {
	name    string
	mode    stripe.CheckoutSessionMode
	priceID string
	plan    string // subscriptions: the imagegate plan
	credits int64
	// expires, for a subscription checkout, is when its session expires.
	expires time.Time
}

// Subscription reports whether the item is a subscription (not a pack).
func (it Item) Subscription() bool { return it.mode == stripe.CheckoutSessionModeSubscription }

// PriceID is the Stripe price the item is sold at.
func (it Item) PriceID() string { return it.priceID }

// ExpiringAt is the item with a checkout session that expires at t
// (zero: Stripe's default of 24 hours); the gateway sets it for a
// subscription checkout from the open checkout it claimed.
func (it Item) ExpiringAt(t time.Time) Item {
	it.expires = t
	return it
}

// Stripe is the payments engine: it sells the catalogue through Stripe
// Checkout, opens the customer portal, and applies Stripe's webhook
// events to the store.
type Stripe struct {
	cfg    Config
	store  Store
	logger *slog.Logger
	now    func() time.Time

	customers *customer.Client
	checkouts *checkoutsession.Client
	portals   *portalsession.Client

	byPrice     map[string]Item
	defaultPlan string             // set by Bind
	creating    singleflight.Group // one customer creation per account at a time
}

// Metadata keys imagegate puts on Stripe objects. They carry the account
// id — never an email or a name.
const (
	MetaAccount = "imagegate_account"
	MetaPack    = "imagegate_pack"
	MetaPlan    = "imagegate_plan"
	MetaCredits = "imagegate_credits"
)

// New returns the payments engine, or nil — billing off — when cfg has no
// secret key. It calls nothing at Stripe: a key or network problem shows
// on the first checkout, not at startup.
func New(cfg Config, st Store, logger *slog.Logger, now func() time.Time) (*Stripe, error) {
	if cfg.SecretKey == "" {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("gateway: billing needs a store")
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.StripeTimeout}
	}
	// A backend of our own: stripe-go's package-level backends and key
	// stay untouched, so gateways (and parallel tests) never share one.
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(cfg.APIURL),
		HTTPClient:        client,
		MaxNetworkRetries: stripe.Int64(int64(max(cfg.MaxNetworkRetries, 0))),
		EnableTelemetry:   stripe.Bool(false),
		// stripe-go would log request details on its own; errors are
		// logged once, by the gateway, without them.
		LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	b := &Stripe{
		cfg: cfg, store: st, logger: logger, now: now,
		customers: &customer.Client{B: backend, Key: cfg.SecretKey},
		checkouts: &checkoutsession.Client{B: backend, Key: cfg.SecretKey},
		portals:   &portalsession.Client{B: backend, Key: cfg.SecretKey},
		byPrice:   map[string]Item{},
	}
	for name, p := range cfg.Packs {
		b.byPrice[p.PriceID] = Item{name: name, mode: stripe.CheckoutSessionModePayment, priceID: p.PriceID, credits: p.Credits}
	}
	for name, s := range cfg.Subscriptions {
		b.byPrice[s.PriceID] = Item{name: name, mode: stripe.CheckoutSessionModeSubscription, priceID: s.PriceID, plan: s.Plan, credits: s.Credits}
	}
	return b, nil
}

// Bind tells billing the gateway's plans: defaultPlan is the plan
// accounts return to when a subscription ends, accountPlan says which
// names are plans for accounts. Subscriptions naming any other plan are
// logged; the gateway's Config.Validate should refuse them (see
// Config.CheckPlans).
func (b *Stripe) Bind(defaultPlan string, accountPlan func(name string) bool) {
	b.defaultPlan = defaultPlan
	if err := b.cfg.CheckPlans(accountPlan); err != nil {
		b.logger.Error("billing catalogue names undefined plans", "err", err)
	}
}

// Item looks up what a checkout request asks for: exactly one of pack or
// plan, by its name in the catalogue. A bad request is a 400.
func (b *Stripe) Item(pack, plan string) (Item, error) {
	switch {
	case (pack == "") == (plan == ""):
		return Item{}, apierror.BadRequest("invalid_request", "send exactly one of pack or plan")
	case pack != "":
		p, ok := b.cfg.Packs[pack]
		if !ok {
			return Item{}, apierror.BadRequest("unknown_pack", fmt.Sprintf("pack: %q is not on sale; GET /v1/billing lists the catalogue", pack))
		}
		return b.byPrice[p.PriceID], nil
	default:
		s, ok := b.cfg.Subscriptions[plan]
		if !ok {
			return Item{}, apierror.BadRequest("unknown_plan", fmt.Sprintf("plan: %q is not on sale; GET /v1/billing lists the catalogue", plan))
		}
		return b.byPrice[s.PriceID], nil
	}
}

// Checkout creates a Checkout Session selling item to the account and
// returns its URL; site is the site's origin, where the buyer returns
// unless the configuration says otherwise. Its idempotency key names the
// account, the price and the client's nonce, so a retry of the same
// attempt — ours, stripe-go's, or the client's — gets the same session.
// The Stripe calls are bounded by Config.StripeTimeout.
func (b *Stripe) Checkout(ctx context.Context, accountID string, item Item, nonce, site string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.StripeTimeout)
	defer cancel()
	customerID, err := b.customer(ctx, accountID)
	if err != nil {
		return "", err
	}
	params := &stripe.CheckoutSessionParams{
		Params:            stripe.Params{Context: ctx},
		Mode:              stripe.String(string(item.mode)),
		Customer:          stripe.String(customerID),
		ClientReferenceID: stripe.String(accountID),
		SuccessURL:        stripe.String(orDefault(b.cfg.SuccessURL, site+"/?checkout=success")),
		CancelURL:         stripe.String(orDefault(b.cfg.CancelURL, site+"/?checkout=cancel")),
		LineItems:         []*stripe.CheckoutSessionLineItemParams{{Price: stripe.String(item.priceID), Quantity: stripe.Int64(1)}},
	}
	params.AddMetadata(MetaAccount, accountID)
	if item.mode == stripe.CheckoutSessionModePayment {
		// The credits the buyer was offered travel with the session, so a
		// later catalogue change does not change what was bought.
		params.AddMetadata(MetaPack, item.name)
		params.AddMetadata(MetaCredits, strconv.FormatInt(item.credits, 10))
		params.PaymentIntentData = &stripe.CheckoutSessionPaymentIntentDataParams{Metadata: map[string]string{MetaAccount: accountID}}
	} else {
		params.AddMetadata(MetaPlan, item.name)
		if !item.expires.IsZero() {
			// The session dies with its claim, so a checkout left open
			// cannot be completed after another one was allowed.
			params.ExpiresAt = stripe.Int64(item.expires.Unix())
		}
		params.SubscriptionData = &stripe.CheckoutSessionSubscriptionDataParams{Metadata: map[string]string{MetaAccount: accountID, MetaPlan: item.name}}
	}
	params.SetIdempotencyKey(fmt.Sprintf("checkout:%s:%s:%s", accountID, item.priceID, nonce))
	s, err := b.checkouts.New(params)
	if err != nil {
		return "", stripeFailure("checkout session", err)
	}
	if s.URL == "" {
		return "", &apierror.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "payment_provider_error",
			Msg: "the payment provider returned no checkout URL"}
	}
	return s.URL, nil
}

// customer returns the account's Stripe customer, creating it the first
// time. Creation is coalesced per account in this process and carries the
// idempotency key "customer:<account>", so concurrent or retried first
// checkouts — here or on another node within Stripe's 24 h key window —
// make one customer. The customer carries only our account id: Checkout
// collects the email and card itself.
func (b *Stripe) customer(ctx context.Context, accountID string) (string, error) {
	rec, err := b.store.Billing(accountID)
	if err != nil {
		return "", err
	}
	if rec.CustomerID != "" {
		return rec.CustomerID, nil
	}
	ch := b.creating.DoChan(accountID, func() (any, error) {
		// Shared by every waiter: one waiter giving up must not cancel
		// it for the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.StripeTimeout)
		defer cancel()
		if rec, err := b.store.Billing(accountID); err != nil || rec.CustomerID != "" {
			return rec.CustomerID, err
		}
		params := &stripe.CustomerParams{Params: stripe.Params{Context: ctx}}
		params.AddMetadata(MetaAccount, accountID)
		params.SetIdempotencyKey("customer:" + accountID)
		cus, err := b.customers.New(params)
		if err != nil {
			return "", stripeFailure("customer", err)
		}
		return b.store.LinkStripeCustomer(accountID, cus.ID)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", apierror.Unavailable("the payment provider did not answer in time; retry shortly", 5, ctx.Err())
	}
}

// Portal opens a customer portal session for the Stripe customer, where
// the buyer cancels the subscription and updates cards (promise M3), and
// returns its URL. The portal returns to Config.PortalReturnURL or, when
// that is empty, to what site (called only then) says is the site's
// origin, with a trailing slash. The Stripe call is bounded by
// Config.StripeTimeout.
func (b *Stripe) Portal(ctx context.Context, customerID string, site func() (string, error)) (string, error) {
	returnURL := b.cfg.PortalReturnURL
	if returnURL == "" {
		s, err := site()
		if err != nil {
			return "", err
		}
		returnURL = s + "/"
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.StripeTimeout)
	defer cancel()
	s, err := b.portals.New(&stripe.BillingPortalSessionParams{
		Params:    stripe.Params{Context: ctx},
		Customer:  stripe.String(customerID),
		ReturnURL: stripe.String(returnURL),
	})
	if err != nil {
		return "", stripeFailure("portal session", err)
	}
	return s.URL, nil
}

// stripeFailure maps a failed Stripe call to its public face: Stripe
// unreachable or overloaded is a 503 to retry; a refusal (a wrong price
// id, a revoked key) is a 502 the operator must fix. Stripe's error, which
// never holds card data here, is logged.
func stripeFailure(what string, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) && se.HTTPStatusCode != 0 && se.HTTPStatusCode != http.StatusTooManyRequests && se.HTTPStatusCode < 500 {
		return &apierror.Error{Status: http.StatusBadGateway, Type: "server_error", Code: "payment_provider_error",
			Msg: "the payment provider refused the request", Err: fmt.Errorf("stripe %s: %w", what, err)}
	}
	return apierror.Unavailable("the payment provider is unavailable; retry shortly", 5, fmt.Errorf("stripe %s: %w", what, err))
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
