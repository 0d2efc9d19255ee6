package billing

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := testConfig("https://api.stripe.com")
	tests := []struct {
		name   string
		mutate func(c *Config)
		errs   []string // substrings, all expected; none: valid
	}{
		{"valid", func(c *Config) {}, nil},
		{"off: no key, no secret", func(c *Config) { *c = Config{Packs: c.Packs} }, nil},
		{"webhook secret without key", func(c *Config) { c.SecretKey = "" }, []string{"no Stripe secret key"}},
		{"key without webhook secret", func(c *Config) { c.WebhookSecrets = nil }, []string{"needs a Stripe webhook secret"}},
		{"secrets swapped", func(c *Config) { c.SecretKey, c.WebhookSecrets = "whsec_x", []string{"sk_test_x"} },
			[]string{"must start with sk_ or rk_", "start with whsec_"}},
		{"live key over http", func(c *Config) { c.SecretKey, c.APIURL = "sk_live_x", "http://stripe.internal" }, []string{"plain http"}},
		{"API URL with a path", func(c *Config) { c.APIURL = "https://api.stripe.com/v1" }, []string{"no path"}},
		{"relative success URL", func(c *Config) { c.SuccessURL = "/thanks" }, []string{"success URL"}},
		{"shared price", func(c *Config) { c.Packs["big"] = CreditPack{PriceID: pricePackSmall, Credits: 5} }, []string{"share price"}},
		{"pack without credits", func(c *Config) { c.Packs["small"] = CreditPack{PriceID: pricePackSmall} }, []string{"credits must be between 1"}},
		{"pack without price", func(c *Config) { c.Packs["small"] = CreditPack{Credits: 5} }, []string{"needs a Stripe price id"}},
		{"bad name", func(c *Config) { c.Packs["Big Pack"] = CreditPack{PriceID: "price_x", Credits: 5} }, []string{"names are 1–32"}},
		{"subscription without plan", func(c *Config) {
			c.Subscriptions["pro-monthly"] = SubscriptionPlan{PriceID: priceProMonthly, Credits: 5}
		}, []string{"plan (the imagegate plan"}},
		{"tolerance too long", func(c *Config) { c.WebhookTolerance = 2 * time.Hour }, []string{"tolerance"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			c.Packs = map[string]CreditPack{}
			for k, v := range ok.Packs {
				c.Packs[k] = v
			}
			c.Subscriptions = map[string]SubscriptionPlan{}
			for k, v := range ok.Subscriptions {
				c.Subscriptions[k] = v
			}
			c.WebhookSecrets = slices.Clone(ok.WebhookSecrets)
			tt.mutate(&c)
			testpeer.CheckValidation(t, c.Validate(), tt.errs)
		})
	}
	t.Run("plans not for accounts", func(t *testing.T) {
		t.Parallel()
		c := ok
		c.Subscriptions = map[string]SubscriptionPlan{"gold": {PriceID: "price_gold", Plan: "gold"}, "anon": {PriceID: "price_a", Plan: "anonymous"}}
		accountPlan := func(name string) bool { return name == "free" || name == "pro" }
		err := c.CheckPlans(accountPlan)
		if err == nil || !strings.Contains(err.Error(), `"gold"`) || !strings.Contains(err.Error(), `"anonymous"`) {
			t.Errorf("CheckPlans = %v, want both gold and anonymous refused", err)
		}
		if err := ok.CheckPlans(accountPlan); err != nil {
			t.Errorf("CheckPlans(valid) = %v", err)
		}
	})
}
