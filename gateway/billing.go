package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/stripe/stripe-go/v76"
	portalsession "github.com/stripe/stripe-go/v76/billingportal/session"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	"github.com/stripe/stripe-go/v76/customer"
	"golang.org/x/sync/singleflight"

	"github.com/imagegate/imagegate/store"
)

// BillingConfig configures payments through Stripe (promises M1–M3). Card
// data never reaches imagegate: buyers pay on Stripe Checkout and manage
// their subscription and cards in Stripe's customer portal. With no
// SecretKey billing is off and its routes answer 503.
type BillingConfig struct {
	// SecretKey is the Stripe secret or restricted API key (sk_…, rk_…).
	SecretKey string
	// WebhookSecrets verify webhook signatures (whsec_…); an event signed
	// with any of them is accepted, so a secret can be rotated. The
	// endpoint must be pinned to API version stripe.APIVersion.
	WebhookSecrets []string
	// APIURL is the Stripe API base (https://api.stripe.com); tests point
	// it at stripe-mock.
	APIURL string
	// SuccessURL and CancelURL are where Checkout sends the buyer back;
	// PortalReturnURL where the customer portal does. Empty: the site's
	// own origin with ?checkout=success, ?checkout=cancel, or /.
	SuccessURL, CancelURL, PortalReturnURL string
	// Packs are the credit packs on sale, by name.
	Packs map[string]CreditPack
	// Subscriptions are the subscription plans on sale, by name.
	Subscriptions map[string]SubscriptionPlan
	// WebhookTolerance is how old a webhook signature may be (300 s).
	WebhookTolerance time.Duration
	// StripeTimeout bounds one call to the Stripe API, retries included
	// (20 s).
	StripeTimeout time.Duration
	// MaxNetworkRetries is how often a failed Stripe call is retried with
	// the same idempotency key (2; negative: never).
	MaxNetworkRetries int
	// HTTPClient makes the Stripe calls (nil: one bounded by
	// StripeTimeout).
	HTTPClient *http.Client
}

// CreditPack is a one-time purchase of credits. Its price lives in Stripe
// only: imagegate never stores or shows an amount it could get wrong.
type CreditPack struct {
	PriceID string `toml:"price_id"`
	Credits int64  `toml:"credits"`
}

// SubscriptionPlan is a recurring Stripe price that puts the account on
// an imagegate plan while the subscription is live and grants Credits for
// every paid period (on top of the plan's own monthly_credits).
type SubscriptionPlan struct {
	PriceID string `toml:"price_id"`
	Plan    string `toml:"plan"`
	Credits int64  `toml:"credits"`
}

// catalogueName is the form of pack and subscription names.
var catalogueName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// maxPackCredits bounds one pack, so a typo cannot mint a fortune.
const maxPackCredits = 100_000_000

func (c *BillingConfig) setDefaults() {
	if c.APIURL == "" {
		c.APIURL = stripe.APIURL
	}
	if c.WebhookTolerance == 0 {
		c.WebhookTolerance = webhookDefaultTolerance
	}
	if c.StripeTimeout == 0 {
		c.StripeTimeout = 20 * time.Second
	}
	if c.MaxNetworkRetries == 0 {
		c.MaxNetworkRetries = 2
	}
}

// Validate fills defaults and reports every problem at once. Without a
// secret key billing is off; a webhook secret without one is a
// half-finished configuration and an error.
func (c *BillingConfig) Validate() error {
	if c.SecretKey == "" {
		if len(c.WebhookSecrets) > 0 {
			return errors.New("gateway: a Stripe webhook secret is set but no Stripe secret key: set both to enable billing")
		}
		return nil
	}
	c.setDefaults()
	var errs []error
	if !strings.HasPrefix(c.SecretKey, "sk_") && !strings.HasPrefix(c.SecretKey, "rk_") {
		errs = append(errs, errors.New("gateway: the Stripe secret key must start with sk_ or rk_ (is it the webhook secret?)"))
	}
	if len(c.WebhookSecrets) == 0 {
		errs = append(errs, errors.New("gateway: billing needs a Stripe webhook secret: without webhooks nothing bought is ever credited"))
	}
	for _, s := range c.WebhookSecrets {
		if !strings.HasPrefix(s, "whsec_") {
			errs = append(errs, errors.New("gateway: Stripe webhook secrets start with whsec_"))
			break
		}
	}
	if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		errs = append(errs, fmt.Errorf("gateway: Stripe API URL %q must be an absolute http(s) URL with no path", c.APIURL))
	} else if u.Scheme == "http" && strings.Contains(c.SecretKey, "_live_") {
		errs = append(errs, errors.New("gateway: refusing to send a live Stripe key over plain http"))
	}
	for name, u := range map[string]string{"success": c.SuccessURL, "cancel": c.CancelURL, "portal return": c.PortalReturnURL} {
		if p, err := url.Parse(u); u != "" && (err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "") {
			errs = append(errs, fmt.Errorf("gateway: billing %s URL %q must be an absolute http(s) URL", name, u))
		}
	}
	if c.WebhookTolerance < 10*time.Second || c.WebhookTolerance > time.Hour {
		errs = append(errs, errors.New("gateway: webhook tolerance must be between 10s and 1h"))
	}
	if c.StripeTimeout < time.Second {
		errs = append(errs, errors.New("gateway: Stripe timeout must be at least 1s"))
	}
	prices := map[string]string{}
	usePrice := func(what, price string) {
		if price == "" || strings.TrimSpace(price) != price {
			errs = append(errs, fmt.Errorf("gateway: %s needs a Stripe price id", what))
			return
		}
		if other, dup := prices[price]; dup {
			errs = append(errs, fmt.Errorf("gateway: %s and %s share price %s: a price must mean one thing", other, what, price))
		}
		prices[price] = what
	}
	for _, name := range catalogueNames(c.Packs) {
		p := c.Packs[name]
		what := fmt.Sprintf("pack %q", name)
		if !catalogueName.MatchString(name) {
			errs = append(errs, fmt.Errorf("gateway: %s: names are 1–32 of a-z, 0-9, _ and -", what))
		}
		usePrice(what, p.PriceID)
		if p.Credits < 1 || p.Credits > maxPackCredits {
			errs = append(errs, fmt.Errorf("gateway: %s: credits must be between 1 and %d", what, maxPackCredits))
		}
	}
	for _, name := range catalogueNames(c.Subscriptions) {
		s := c.Subscriptions[name]
		what := fmt.Sprintf("subscription %q", name)
		if !catalogueName.MatchString(name) {
			errs = append(errs, fmt.Errorf("gateway: %s: names are 1–32 of a-z, 0-9, _ and -", what))
		}
		usePrice(what, s.PriceID)
		if s.Plan == "" {
			errs = append(errs, fmt.Errorf("gateway: %s: plan (the imagegate plan it puts the account on) is required", what))
		}
		if s.Credits < 0 || s.Credits > maxPackCredits {
			errs = append(errs, fmt.Errorf("gateway: %s: credits per period must be between 0 and %d", what, maxPackCredits))
		}
	}
	return errors.Join(errs...)
}

// checkPlans reports subscriptions naming a plan the gateway does not
// define (an account put on it would silently get the default plan).
func (c *BillingConfig) checkPlans(plans PlansConfig) error {
	var errs []error
	for _, name := range catalogueNames(c.Subscriptions) {
		plan := c.Subscriptions[name].Plan
		if _, ok := plans.Plans[plan]; !ok || plan == planAnonymous {
			errs = append(errs, fmt.Errorf("gateway: subscription %q puts accounts on plan %q, which is not a plan for accounts", name, plan))
		}
	}
	return errors.Join(errs...)
}

func catalogueNames[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// billingAccounts is what checkout and the billing page need of the store.
type billingAccounts interface {
	Billing(accountID string) (store.Billing, error)
	LinkStripeCustomer(accountID, customerID string) (string, error)
	Transactions(accountID string, limit int) ([]store.LedgerEntry, error)
}

// stripeEvents is what webhook handling needs of the store.
type stripeEvents interface {
	StripeEventSeen(eventID string) (bool, error)
	ApplyStripeEvent(ev store.StripeEvent, changes ...store.BillingChange) (bool, error)
}

// billingStore is everything billing needs of the store.
type billingStore interface {
	billingAccounts
	stripeEvents
}

// catalogueItem is a pack or a subscription, as sold.
type catalogueItem struct {
	name    string
	mode    stripe.CheckoutSessionMode
	priceID string
	plan    string // subscriptions: the imagegate plan
	credits int64
}

// billing is the payments side of the gateway; nil when not configured.
type billing struct {
	cfg    BillingConfig
	store  billingStore
	logger *slog.Logger
	now    func() time.Time

	customers *customer.Client
	checkouts *checkoutsession.Client
	portals   *portalsession.Client

	byPrice     map[string]catalogueItem
	defaultPlan string             // set by bind
	creating    singleflight.Group // one customer creation per account at a time
}

// Metadata keys imagegate puts on Stripe objects. They carry the account
// id — never an email or a name.
const (
	metaAccount = "imagegate_account"
	metaPack    = "imagegate_pack"
	metaPlan    = "imagegate_plan"
	metaCredits = "imagegate_credits"
)

// newBilling returns the payments side of the gateway, or nil — billing
// off — when cfg has no secret key. It calls nothing at Stripe: a key or
// network problem shows on the first checkout, not at startup.
func newBilling(cfg BillingConfig, st billingStore, logger *slog.Logger, now func() time.Time) (*billing, error) {
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
	b := &billing{
		cfg: cfg, store: st, logger: logger, now: now,
		customers: &customer.Client{B: backend, Key: cfg.SecretKey},
		checkouts: &checkoutsession.Client{B: backend, Key: cfg.SecretKey},
		portals:   &portalsession.Client{B: backend, Key: cfg.SecretKey},
		byPrice:   map[string]catalogueItem{},
	}
	for name, p := range cfg.Packs {
		b.byPrice[p.PriceID] = catalogueItem{name: name, mode: stripe.CheckoutSessionModePayment, priceID: p.PriceID, credits: p.Credits}
	}
	for name, s := range cfg.Subscriptions {
		b.byPrice[s.PriceID] = catalogueItem{name: name, mode: stripe.CheckoutSessionModeSubscription, priceID: s.PriceID, plan: s.Plan, credits: s.Credits}
	}
	return b, nil
}

// bind tells billing the gateway's plans: the default plan accounts return
// to when a subscription ends. Subscriptions naming an undefined plan are
// logged; Config.Validate should refuse them (see checkPlans).
func (b *billing) bind(plans PlansConfig) {
	b.defaultPlan = plans.Default
	if err := b.cfg.checkPlans(plans); err != nil {
		b.logger.Error("billing catalogue names undefined plans", "err", err)
	}
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
	g.billing.bind(g.cfg.Plans)
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

func (b *billing) catalogueView() catalogueJSON {
	v := catalogueJSON{Packs: []packJSON{}, Subscriptions: []subscriptionPlan{}}
	for _, name := range catalogueNames(b.cfg.Packs) {
		v.Packs = append(v.Packs, packJSON{Name: name, Credits: b.cfg.Packs[name].Credits})
	}
	for _, name := range catalogueNames(b.cfg.Subscriptions) {
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
	item, err := b.item(req)
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
	if item.mode == stripe.CheckoutSessionModeSubscription {
		rec, err := b.store.Billing(acct.ID)
		if err != nil {
			return err
		}
		if s, ok := rec.Current(); ok && store.SubscriptionLive(s.Status) {
			return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "already_subscribed",
				Msg: "this account already has a subscription: change or cancel it in the customer portal (POST /v1/billing/portal)"}
		}
	}
	site, err := g.siteURL(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), b.cfg.StripeTimeout)
	defer cancel()
	u, err := b.checkout(ctx, acct.ID, item, nonce, site)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"url": u})
}

// item looks up what a checkout request asks for.
func (b *billing) item(req checkoutJSON) (catalogueItem, error) {
	switch {
	case (req.Pack == "") == (req.Plan == ""):
		return catalogueItem{}, badRequest("invalid_request", "send exactly one of pack or plan")
	case req.Pack != "":
		p, ok := b.cfg.Packs[req.Pack]
		if !ok {
			return catalogueItem{}, badRequest("unknown_pack", fmt.Sprintf("pack: %q is not on sale; GET /v1/billing lists the catalogue", req.Pack))
		}
		return b.byPrice[p.PriceID], nil
	default:
		s, ok := b.cfg.Subscriptions[req.Plan]
		if !ok {
			return catalogueItem{}, badRequest("unknown_plan", fmt.Sprintf("plan: %q is not on sale; GET /v1/billing lists the catalogue", req.Plan))
		}
		return b.byPrice[s.PriceID], nil
	}
}

// checkout creates the session. Its idempotency key names the account, the
// price and the client's nonce, so a retry of the same attempt — ours,
// stripe-go's, or the client's — gets the same session.
func (b *billing) checkout(ctx context.Context, accountID string, item catalogueItem, nonce, site string) (string, error) {
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
	params.AddMetadata(metaAccount, accountID)
	if item.mode == stripe.CheckoutSessionModePayment {
		// The credits the buyer was offered travel with the session, so a
		// later catalogue change does not change what was bought.
		params.AddMetadata(metaPack, item.name)
		params.AddMetadata(metaCredits, strconv.FormatInt(item.credits, 10))
		params.PaymentIntentData = &stripe.CheckoutSessionPaymentIntentDataParams{Metadata: map[string]string{metaAccount: accountID}}
	} else {
		params.AddMetadata(metaPlan, item.name)
		params.SubscriptionData = &stripe.CheckoutSessionSubscriptionDataParams{Metadata: map[string]string{metaAccount: accountID, metaPlan: item.name}}
	}
	params.SetIdempotencyKey(fmt.Sprintf("checkout:%s:%s:%s", accountID, item.priceID, nonce))
	s, err := b.checkouts.New(params)
	if err != nil {
		return "", stripeFailure("checkout session", err)
	}
	if s.URL == "" {
		return "", &apiError{Status: fiber.StatusBadGateway, Type: "server_error", Code: "payment_provider_error",
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
func (b *billing) customer(ctx context.Context, accountID string) (string, error) {
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
		params.AddMetadata(metaAccount, accountID)
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
		return "", unavailable("the payment provider did not answer in time; retry shortly", 5, ctx.Err())
	}
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
	returnURL := b.cfg.PortalReturnURL
	if returnURL == "" {
		site, err := g.siteURL(c)
		if err != nil {
			return err
		}
		returnURL = site + "/"
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), b.cfg.StripeTimeout)
	defer cancel()
	s, err := b.portals.New(&stripe.BillingPortalSessionParams{
		Params:    stripe.Params{Context: ctx},
		Customer:  stripe.String(rec.CustomerID),
		ReturnURL: stripe.String(returnURL),
	})
	if err != nil {
		return stripeFailure("portal session", err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"url": s.URL})
}

// stripeFailure maps a failed Stripe call to its public face: Stripe
// unreachable or overloaded is a 503 to retry; a refusal (a wrong price
// id, a revoked key) is a 502 the operator must fix. Stripe's error, which
// never holds card data here, is logged.
func stripeFailure(what string, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) && se.HTTPStatusCode != 0 && se.HTTPStatusCode != http.StatusTooManyRequests && se.HTTPStatusCode < 500 {
		return &apiError{Status: fiber.StatusBadGateway, Type: "server_error", Code: "payment_provider_error",
			Msg: "the payment provider refused the request", Err: fmt.Errorf("stripe %s: %w", what, err)}
	}
	return unavailable("the payment provider is unavailable; retry shortly", 5, fmt.Errorf("stripe %s: %w", what, err))
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
