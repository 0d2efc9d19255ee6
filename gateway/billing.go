package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"regexp"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/billing"
	"github.com/imagegate/imagegate/store"
)

// Billing's configuration is package billing's; these names keep the
// [billing] section of --config, the flags and the Config field as they
// were.
type (
	BillingConfig    = billing.Config
	CreditPack       = billing.CreditPack
	SubscriptionPlan = billing.SubscriptionPlan
)

// stripeEngine is what the billing routes ask of the Stripe side (a
// *billing.Stripe): sell an item through Checkout, open the customer
// portal, apply a webhook delivery.
type stripeEngine interface {
	Item(pack, plan string) (billing.Item, error)
	Checkout(ctx context.Context, accountID string, item billing.Item, nonce, site string) (string, error)
	Portal(ctx context.Context, customerID string, site func() (string, error)) (string, error)
	HandleWebhook(payload []byte, signature string) error
}

// billingAccounts is what the billing page and checkout read of the
// store themselves.
type billingAccounts interface {
	Billing(accountID string) (store.Billing, error)
	Transactions(accountID string, limit int) ([]store.LedgerEntry, error)
	OpenSubscriptionCheckout(accountID string, c store.SubscriptionCheckout) (store.SubscriptionCheckout, error)
}

// billingStore is everything the billing routes and the engine need of
// the store.
type billingStore interface {
	billingAccounts
	billing.Store
}

// payments is the payments side of the gateway; nil when not configured.
type payments struct {
	stripe stripeEngine
	cfg    BillingConfig // validated
	store  billingAccounts
}

// newPayments wires package billing's Stripe engine, or returns nil —
// billing off — when cfg has no secret key.
func newPayments(cfg Config, st billingStore, logger *slog.Logger, now func() time.Time) (*payments, error) {
	s, err := billing.New(cfg.Billing, st, logger, now)
	if err != nil || s == nil {
		return nil, err
	}
	s.Bind(cfg.Plans.Default, cfg.Plans.accountPlan)
	return &payments{stripe: s, cfg: cfg.Billing, store: st}, nil
}

var errBillingOff = &apiError{Status: fiber.StatusServiceUnavailable, Type: "server_error", Code: "payments_not_configured",
	Msg: "payments not configured", RetryAfter: 3600}

// billingRoutes registers the billing routes; with billing off they answer
// 503 "payments not configured" and everything else works as before.
func (g *Gateway) billingRoutes(app fiber.Router, account func(...fiber.Handler) []fiber.Handler) {
	if g.billing == nil {
		off := func(c *fiber.Ctx) error { return errBillingOff }
		app.Get("/v1/billing", account(off)...)
		app.Post("/v1/billing/checkout", account(off)...)
		app.Post("/v1/billing/portal", account(off)...)
		app.Post("/v1/billing/webhook", off)
		return
	}
	app.Get("/v1/billing", account(g.getBilling)...)
	app.Post("/v1/billing/checkout", account(g.billingCheckout)...)
	app.Post("/v1/billing/portal", account(g.billingPortal)...)
	// Stripe's servers call the webhook: no session, no rate limit (a
	// refused signature costs one HMAC), and the raw body is verified.
	app.Post("/v1/billing/webhook", g.stripeWebhook)
}

// billingJSON is GET /v1/billing.
type billingJSON struct {
	Plan         string            `json:"plan"`
	Subscription *subscriptionJSON `json:"subscription"`
	Credits      creditsJSON       `json:"credits"`
	// Portal says whether the account has a Stripe customer to manage.
	Portal       bool              `json:"portal"`
	Transactions []transactionJSON `json:"transactions"`
	Catalogue    catalogueJSON     `json:"catalogue"`
}

type subscriptionJSON struct {
	ID                 string `json:"id"`
	Status             string `json:"status"`
	Plan               string `json:"plan,omitempty"`
	CurrentPeriodStart int64  `json:"current_period_start,omitempty"`
	CurrentPeriodEnd   int64  `json:"current_period_end,omitempty"`
	CancelAtPeriodEnd  bool   `json:"cancel_at_period_end"`
}

type creditsJSON struct {
	Balance   int64 `json:"balance"`
	Held      int64 `json:"held"`
	Available int64 `json:"available"`
}

// transactionJSON is a ledger entry other than a generation charge.
type transactionJSON struct {
	Time        int64  `json:"time"`
	Kind        string `json:"kind"`
	Credits     int64  `json:"credits"`
	Balance     int64  `json:"balance"`
	AmountMinor int64  `json:"amount_minor,omitempty"`
	Currency    string `json:"currency,omitempty"`
	Reference   string `json:"reference"`
}

type catalogueJSON struct {
	Packs         []packJSON         `json:"packs"`
	Subscriptions []subscriptionPlan `json:"subscriptions"`
}

type packJSON struct {
	Name    string `json:"name"`
	Credits int64  `json:"credits"`
}

type subscriptionPlan struct {
	Name             string `json:"name"`
	Plan             string `json:"plan"`
	CreditsPerPeriod int64  `json:"credits_per_period"`
}

// billingTransactions is how many transactions GET /v1/billing lists.
const billingTransactions = 50

func (g *Gateway) getBilling(c *fiber.Ctx) error {
	b := g.billing
	acct := *principalOf(c).account
	g.grantPlan(&acct)
	rec, err := b.store.Billing(acct.ID)
	if err != nil {
		return err
	}
	entries, err := b.store.Transactions(acct.ID, billingTransactions)
	if err != nil {
		return err
	}
	out := billingJSON{
		Plan:         acct.Plan,
		Credits:      creditsJSON{Balance: acct.Credits, Held: acct.Held, Available: acct.Available()},
		Portal:       rec.CustomerID != "",
		Transactions: make([]transactionJSON, 0, len(entries)),
		Catalogue:    b.catalogueView(),
	}
	if s, ok := rec.Current(); ok {
		v := &subscriptionJSON{ID: s.ID, Status: s.Status, Plan: s.Plan, CancelAtPeriodEnd: s.CancelAtPeriodEnd}
		if !s.PeriodEnd.IsZero() {
			v.CurrentPeriodStart, v.CurrentPeriodEnd = s.PeriodStart.Unix(), s.PeriodEnd.Unix()
		}
		out.Subscription = v
	}
	for _, e := range entries {
		out.Transactions = append(out.Transactions, transactionJSON{
			Time: e.Time.Unix(), Kind: e.Kind, Credits: e.Amount, Balance: e.Balance,
			AmountMinor: e.MoneyMinor, Currency: e.Currency, Reference: e.Ref,
		})
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(out)
}

func (b *payments) catalogueView() catalogueJSON {
	v := catalogueJSON{Packs: []packJSON{}, Subscriptions: []subscriptionPlan{}}
	for _, name := range billing.Names(b.cfg.Packs) {
		v.Packs = append(v.Packs, packJSON{Name: name, Credits: b.cfg.Packs[name].Credits})
	}
	for _, name := range billing.Names(b.cfg.Subscriptions) {
		s := b.cfg.Subscriptions[name]
		v.Subscriptions = append(v.Subscriptions, subscriptionPlan{Name: name, Plan: s.Plan, CreditsPerPeriod: s.Credits})
	}
	return v
}

// checkoutJSON is POST /v1/billing/checkout: exactly one of pack or plan.
type checkoutJSON struct {
	Pack string `json:"pack"`
	Plan string `json:"plan"`
}

// subscriptionCheckoutTTL is how long a subscription checkout session
// stays open (Stripe allows 30 minutes to 24 hours).
const subscriptionCheckoutTTL = time.Hour

// idempotencyNonce is the form of a client's Idempotency-Key header.
var idempotencyNonce = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)

// billingCheckout creates a Stripe Checkout Session for the signed-in
// account and answers its URL. A client that may retry (a double click, a
// timeout) sends the same Idempotency-Key header with each attempt and gets
// the same session back; without one, every call makes a new session.
func (g *Gateway) billingCheckout(c *fiber.Ctx) error {
	b := g.billing
	var req checkoutJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	item, err := b.stripe.Item(req.Pack, req.Plan)
	if err != nil {
		return err
	}
	nonce := c.Get("Idempotency-Key")
	if nonce == "" {
		nonce = rand.Text()
	} else if !idempotencyNonce.MatchString(nonce) {
		return badRequest("invalid_idempotency_key", "Idempotency-Key: 8 to 64 of A-Z, a-z, 0-9, _ and -")
	}
	acct := principalOf(c).account
	if item.Subscription() {
		rec, err := b.store.Billing(acct.ID)
		if err != nil {
			return err
		}
		if s, ok := rec.Current(); ok && store.SubscriptionLive(s.Status) {
			return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "already_subscribed",
				Msg: "this account already has a subscription: change or cancel it in the customer portal (POST /v1/billing/portal)"}
		}
		// One subscription checkout open at a time: a second for the same
		// plan reuses the first's idempotency nonce (and expiry), so Stripe
		// answers with the same session; one for another plan waits until
		// the first session expires. Two racing checkouts can then never
		// both end in a subscription.
		open, err := b.store.OpenSubscriptionCheckout(acct.ID, store.SubscriptionCheckout{
			PriceID: item.PriceID(), Nonce: nonce, Expires: g.now().Add(subscriptionCheckoutTTL).Truncate(time.Second),
		})
		if errors.Is(err, store.ErrConflict) {
			return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "checkout_in_progress",
				Msg: "a checkout for another plan is still open: complete it, or retry once it expires (within an hour)"}
		}
		if err != nil {
			return err
		}
		nonce, item = open.Nonce, item.ExpiringAt(open.Expires)
	}
	site, err := g.siteURL(c)
	if err != nil {
		return err
	}
	u, err := b.stripe.Checkout(c.UserContext(), acct.ID, item, nonce, site)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"url": u})
}

// billingPortal answers a Stripe customer portal URL, where the buyer
// cancels the subscription and updates cards (promise M3). Only a browser
// session gets here (authorize): a leaked API key must not cancel a
// subscription or change cards.
func (g *Gateway) billingPortal(c *fiber.Ctx) error {
	b := g.billing
	acct := principalOf(c).account
	rec, err := b.store.Billing(acct.ID)
	if err != nil {
		return err
	}
	if rec.CustomerID == "" {
		return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "no_billing_account",
			Msg: "nothing to manage yet: this account has never checked out"}
	}
	u, err := b.stripe.Portal(c.UserContext(), rec.CustomerID, func() (string, error) { return g.siteURL(c) })
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"url": u})
}

// stripeWebhook receives Stripe's events (see billing.Stripe.HandleWebhook):
// 200 once an event is applied or deliberately ignored, so Stripe stops
// retrying; 400 for a delivery that fails verification; 500 on a store
// failure, and Stripe retries later.
func (g *Gateway) stripeWebhook(c *fiber.Ctx) error {
	if err := g.billing.stripe.HandleWebhook(c.Body(), c.Get("Stripe-Signature")); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"received": true})
}
