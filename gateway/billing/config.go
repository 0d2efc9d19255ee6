package billing

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// Config configures payments through Stripe (promises M1–M3). Card
// data never reaches imagegate: buyers pay on Stripe Checkout and manage
// their subscription and cards in Stripe's customer portal. With no
// SecretKey billing is off and its routes answer 503.
type Config struct {
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

func (c *Config) setDefaults() {
	if c.APIURL == "" {
		c.APIURL = stripe.APIURL
	}
	if c.WebhookTolerance == 0 {
		c.WebhookTolerance = DefaultWebhookTolerance
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
func (c *Config) Validate() error {
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
	for _, name := range Names(c.Packs) {
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
	for _, name := range Names(c.Subscriptions) {
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

// CheckPlans reports subscriptions naming a plan accountPlan does not
// know as a plan for accounts (an account put on it would silently get
// the default plan).
func (c *Config) CheckPlans(accountPlan func(name string) bool) error {
	var errs []error
	for _, name := range Names(c.Subscriptions) {
		plan := c.Subscriptions[name].Plan
		if !accountPlan(plan) {
			errs = append(errs, fmt.Errorf("gateway: subscription %q puts accounts on plan %q, which is not a plan for accounts", name, plan))
		}
	}
	return errors.Join(errs...)
}

// Names are the names of a catalogue (packs or subscriptions), sorted:
// the order the catalogue is shown and checked in.
func Names[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
