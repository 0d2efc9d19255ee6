package gateway

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Plan is what an account on it may do and gets each month.
type Plan struct {
	// MonthlyCredits is granted once per calendar month (UTC), added to
	// the balance the first time the account is seen that month.
	MonthlyCredits int64 `json:"monthly_credits" toml:"monthly_credits"`
	// MaxSize is the largest image side the plan may request.
	MaxSize int `json:"max_size" toml:"max_size"`
	// RetentionDays is how long outputs are kept after their last access
	// (promise C3).
	RetentionDays int `json:"retention_days" toml:"retention_days"`
}

// PlansConfig prices generations and names the plans.
type PlansConfig struct {
	// Plans by name. "anonymous" is the plan of visitors without an account
	// (its MonthlyCredits is unused: anonymous visitors have a daily quota).
	Plans map[string]Plan `toml:"plans"`
	// Default is the plan new accounts start on.
	Default string `toml:"default"`
	// ImageCredits is what one generated image costs, by its largest side.
	ImageCredits map[int]int64 `toml:"image_credits"`
	// HitCredits is what an image served from cache costs (0: hits are
	// free and need no write to the account store).
	HitCredits int64 `toml:"hit_credits"`
}

const planAnonymous = "anonymous"

func (c *PlansConfig) setDefaults() {
	if c.Plans == nil {
		c.Plans = map[string]Plan{
			planAnonymous: {MaxSize: 512, RetentionDays: 7},
			"free":        {MonthlyCredits: 50, MaxSize: 512, RetentionDays: 30},
			"pro":         {MonthlyCredits: 2000, MaxSize: 1024, RetentionDays: 365},
		}
	}
	if c.Default == "" {
		c.Default = "free"
	}
	if c.ImageCredits == nil {
		c.ImageCredits = map[int]int64{256: 1, 512: 2, 1024: 4}
	}
}

func (c *PlansConfig) validate() error {
	var errs []error
	if _, ok := c.Plans[c.Default]; !ok {
		errs = append(errs, fmt.Errorf("gateway: default plan %q is not defined", c.Default))
	}
	if _, ok := c.Plans[planAnonymous]; !ok {
		errs = append(errs, fmt.Errorf("gateway: plan %q (visitors without an account) is not defined", planAnonymous))
	}
	for name, p := range c.Plans {
		if p.MonthlyCredits < 0 || p.MaxSize < 1 || p.RetentionDays < 1 {
			errs = append(errs, fmt.Errorf("gateway: plan %q needs monthly_credits ≥ 0, max_size ≥ 1 and retention_days ≥ 1", name))
		}
	}
	sides := make([]int, 0, len(c.ImageCredits))
	for side, cost := range c.ImageCredits {
		if side < 1 || cost < 0 {
			errs = append(errs, fmt.Errorf("gateway: image_credits[%d] = %d is invalid", side, cost))
		}
		sides = append(sides, side)
	}
	if len(sides) == 0 {
		errs = append(errs, errors.New("gateway: image_credits lists no size"))
	}
	if c.HitCredits < 0 {
		errs = append(errs, errors.New("gateway: hit_credits must not be negative"))
	}
	return errors.Join(errs...)
}

// plan returns the named plan, falling back to the default for a name the
// configuration no longer defines.
func (c *PlansConfig) plan(name string) Plan {
	if p, ok := c.Plans[name]; ok {
		return p
	}
	return c.Plans[c.Default]
}

// accountPlan reports whether name is a plan accounts can be on: defined,
// and not the plan of visitors without an account.
func (c *PlansConfig) accountPlan(name string) bool {
	_, ok := c.Plans[name]
	return ok && name != planAnonymous
}

// imageCost is the price of one image whose largest side is side: the
// price of the smallest listed side that is at least as large.
func (c *PlansConfig) imageCost(side int) int64 {
	sides := make([]int, 0, len(c.ImageCredits))
	for s := range c.ImageCredits {
		sides = append(sides, s)
	}
	slices.Sort(sides)
	for _, s := range sides {
		if side <= s {
			return c.ImageCredits[s]
		}
	}
	return c.ImageCredits[sides[len(sides)-1]]
}

// grantPeriod names the calendar month monthly grants are keyed by.
func grantPeriod(t time.Time) string { return t.UTC().Format("2006-01") }
