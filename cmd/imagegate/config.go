package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/store"
)

// fileConfig is the structured settings file (--config): what does not fit
// in a flag. Every section is optional; what is absent keeps its default.
// Unknown keys are an error, so a typo is not silently ignored.
type fileConfig struct {
	// DefaultPlan is the plan new accounts start on.
	DefaultPlan string `toml:"default_plan"`
	// Plans by name; "anonymous" applies to visitors without an account.
	Plans map[string]gateway.Plan `toml:"plans"`
	// ImageCredits is the price of one image by its largest side, keyed
	// by the side as a string ("512" = 2).
	ImageCredits map[string]int64 `toml:"image_credits"`
	// HitCredits prices cache hits (0: free).
	HitCredits int64 `toml:"hit_credits"`

	RateLimits struct {
		IP        *policyConfig           `toml:"ip"`
		Anonymous *policyConfig           `toml:"anonymous"`
		Plans     map[string]policyConfig `toml:"plans"`
		Costs     *gatewayRateCostsConfig `toml:"costs"`
		Login     map[string]policyConfig `toml:"login"`
	} `toml:"rate_limits"`

	Retention struct {
		SecurityLog   duration `toml:"security_log"`
		Outbox        duration `toml:"outbox"`
		WebhookEvents duration `toml:"webhook_events"`
		Backups       duration `toml:"backups"`
	} `toml:"retention"`

	// Billing: credit packs and subscription plans, each a Stripe Price ID
	// (never an amount).
	Billing struct {
		Packs         map[string]gateway.CreditPack       `toml:"packs"`
		Subscriptions map[string]gateway.SubscriptionPlan `toml:"subscriptions"`
	} `toml:"billing"`

	// Moderation: term lists, patterns, blocked categories and the
	// optional external classifier (see gateway.ModerationConfig).
	Moderation gateway.ModerationConfig `toml:"moderation"`

	// Inference: the model catalogue, its backends and the tier's queue,
	// read by `imagegate inference` and by serve's in-process tier.
	Inference inferenceFileConfig `toml:"inference"`
}

type policyConfig struct {
	Quota  int      `toml:"quota"`
	Window duration `toml:"window"`
}

func (p policyConfig) policy() gateway.LimitPolicy {
	return gateway.LimitPolicy{Quota: p.Quota, Window: time.Duration(p.Window)}
}

type gatewayRateCostsConfig struct {
	Default        int `toml:"default"`
	Object         int `toml:"object"`
	GenerationHit  int `toml:"generation_hit"`
	GenerationMiss int `toml:"generation_miss"`
}

// duration reads "90s", "720h" and the like.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// decodeConfigFile reads and decodes the file at path, refusing unknown
// keys.
func decodeConfigFile(path string) (fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return fileConfig{}, fmt.Errorf("--config: %w", err)
	}
	var fc fileConfig
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return fileConfig{}, fmt.Errorf("--config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return fileConfig{}, fmt.Errorf("--config %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return fc, nil
}

// loadConfigFile reads path into the gateway and store configuration. The
// [inference] section is the tier's (loadTierConfig).
func loadConfigFile(path string, gw *gateway.Config, ret *store.Retention) error {
	fc, err := decodeConfigFile(path)
	if err != nil {
		return err
	}
	var errs []error
	gw.Plans.Default = fc.DefaultPlan
	gw.Plans.Plans = fc.Plans
	gw.Plans.HitCredits = fc.HitCredits
	if fc.ImageCredits != nil {
		gw.Plans.ImageCredits = map[int]int64{}
		for side, cost := range fc.ImageCredits {
			n, err := strconv.Atoi(side)
			if err != nil {
				errs = append(errs, fmt.Errorf("--config: image_credits key %q must be an image side in pixels", side))
				continue
			}
			gw.Plans.ImageCredits[n] = cost
		}
	}
	rl := &gw.RateLimits
	if p := fc.RateLimits.IP; p != nil {
		rl.IP = p.policy()
	}
	if p := fc.RateLimits.Anonymous; p != nil {
		rl.Anonymous = p.policy()
	}
	if fc.RateLimits.Plans != nil {
		rl.Plans = map[string]gateway.LimitPolicy{}
		for name, p := range fc.RateLimits.Plans {
			rl.Plans[name] = p.policy()
		}
	}
	if c := fc.RateLimits.Costs; c != nil {
		rl.Costs = gateway.RateCosts{Default: c.Default, Object: c.Object, GenerationHit: c.GenerationHit, GenerationMiss: c.GenerationMiss}
	}
	for name, p := range fc.RateLimits.Login {
		switch name {
		case "per_account_source":
			gw.LoginGuard.PerAccountSource = p.policy()
		case "per_source":
			gw.LoginGuard.PerSource = p.policy()
		case "per_account":
			gw.LoginGuard.PerAccount = p.policy()
		default:
			errs = append(errs, fmt.Errorf("--config: rate_limits.login.%s: unknown (per_account_source, per_source, per_account)", name))
		}
	}
	ret.SecurityLog = time.Duration(fc.Retention.SecurityLog)
	gw.Retention.Outbox = time.Duration(fc.Retention.Outbox)
	gw.Retention.WebhookEvents = time.Duration(fc.Retention.WebhookEvents)
	gw.Retention.Backups = time.Duration(fc.Retention.Backups)
	gw.Moderation = fc.Moderation
	gw.Billing.Packs, gw.Billing.Subscriptions = fc.Billing.Packs, fc.Billing.Subscriptions
	return errors.Join(errs...)
}
