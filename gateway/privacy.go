package gateway

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/consent"
)

// The privacy page (GET /privacy, and GET /v1/privacy as JSON) is
// generated from the same configuration the code runs on: the plans'
// output retention, the retention schedule the sweepers enforce, session
// and link lifetimes, the cookie policy's revision. An operator who
// changes a period changes the page with it, so the page cannot promise
// what the code does not do (issue 6, promises C3, S1, K4, R4, R6).

// privacyJSON is the body of GET /v1/privacy.
type privacyJSON struct {
	// Updated is the policy's last-updated date (YYYY-MM-DD), shown on the
	// page (promise R6).
	Updated      string          `json:"updated"`
	CookiePolicy cookiePolicyRef `json:"cookie_policy"`
	Retention    []retentionJSON `json:"retention"`
	Analytics    analyticsPolicy `json:"analytics"`
	OptOuts      []optOutJSON    `json:"opt_outs"`
	GPC          bool            `json:"gpc"`
	Rights       []rightJSON     `json:"rights"`
	Changes      string          `json:"changes"`
	Contact      string          `json:"contact,omitempty"`
}

type cookiePolicyRef struct {
	Revision int    `json:"revision"`
	Updated  string `json:"updated"`
	URL      string `json:"url"`
}

// retentionJSON is one row of the retention schedule. Seconds is the
// period when it is one (0 for rows such as "never stored").
type retentionJSON struct {
	Data        string `json:"data"`
	Description string `json:"description"`
	Period      string `json:"period"`
	Seconds     int64  `json:"seconds,omitempty"`
}

type analyticsPolicy struct {
	Collected []string `json:"collected"`
	Never     []string `json:"never"`
	Consent   string   `json:"consent"`
}

type optOutJSON struct {
	Setting string `json:"setting"`
	Default string `json:"default"`
	What    string `json:"what"`
}

type rightJSON struct {
	Right string `json:"right"`
	How   string `json:"how"`
}

// formatPeriod writes a duration the way a policy states it: whole days,
// else whole hours, else whole minutes.
func formatPeriod(d time.Duration) string {
	unit := func(n int64, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	switch {
	case d > 0 && d%(24*time.Hour) == 0:
		return unit(int64(d/(24*time.Hour)), "day")
	case d > 0 && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	case d > 0 && d%time.Minute == 0:
		return unit(int64(d/time.Minute), "minute")
	}
	return d.String()
}

func period(data, description string, d time.Duration) retentionJSON {
	return retentionJSON{Data: data, Description: description, Period: formatPeriod(d), Seconds: int64(d / time.Second)}
}

// privacyPolicy builds the policy from the gateway's configuration.
func (g *Gateway) privacyPolicy() privacyJSON {
	cfg := &g.cfg
	r := cfg.Retention
	var rows []retentionJSON

	// Outputs by plan: the anonymous plan first, then by name.
	plans := make([]string, 0, len(cfg.Plans.Plans))
	for name := range cfg.Plans.Plans {
		plans = append(plans, name)
	}
	slices.SortFunc(plans, func(a, b string) int {
		switch {
		case a == planAnonymous:
			return -1
		case b == planAnonymous:
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range plans {
		who := "on the " + name + " plan"
		if name == planAnonymous {
			who = "of visitors without an account"
		}
		d := time.Duration(cfg.Plans.Plans[name].RetentionDays) * 24 * time.Hour
		row := period("outputs:"+name, "Generated images "+who+", with their prompts and settings; deleted from storage, every cache and the CDN this long after they were last opened", d)
		row.Period += " after last access"
		rows = append(rows, row)
	}
	rows = append(rows,
		retentionJSON{Data: "reference_images", Description: "Reference images uploaded for image-to-image: used for that one request only", Period: "never stored"},
		period("security_log", "Security log: IP address, browser and time of sign-ins and account changes", r.SecurityLog),
		period("sessions_idle", "Sign-in sessions, after their last use", cfg.SessionIdle),
		period("sessions_absolute", "Sign-in sessions, after sign-in at the most", cfg.SessionAbsolute),
		period("password_reset_links", "Password-reset links (single use)", cfg.ResetTTL),
		period("verification_links", "Email-verification links (single use)", cfg.VerifyTTL),
		period("jobs", "Requests left to run in the background (prompt included), after they finish", cfg.AsyncJobs.Keep),
		period("outbox", "Copies of emails, kept only when the site has no mail server configured", r.Outbox),
		period("webhook_events", "Ids of payment notifications, kept to ignore repeated deliveries", r.WebhookEvents),
		period("legal_hold", "Reports of apparent child sexual abuse material and the material, as U.S. law requires; kept even through an erasure request", r.LegalHold),
	)
	if r.Backups > 0 {
		rows = append(rows, period("backups", "Backups of the data files: what was deleted is gone from every backup after", r.Backups))
	} else {
		rows = append(rows, retentionJSON{Data: "backups", Description: "Backups of the data files", Period: "no backups are taken"})
	}
	visit, _ := consent.Lookup(cookieAnalytics)
	rows = append(rows,
		retentionJSON{Data: "transactions", Description: "Payment and credit records, kept for accounting; pseudonymized when you delete your account", Period: "as long as accounting law requires"},
		retentionJSON{Data: "analytics", Description: "Aggregated analytics counts: they describe no person and hold no identifier", Period: "no time limit"},
		period("analytics_cookie", "The analytics cookie ("+cookieAnalytics+"), set only if you allow analytics, after your last page view", visit.MaxAge()),
	)

	return privacyJSON{
		Updated:      g.privacyUpdated(),
		CookiePolicy: cookiePolicyRef{Revision: cfg.CookiePolicyRevision, Updated: cfg.CookiePolicyUpdated, URL: "/cookies"},
		Retention:    rows,
		Analytics: analyticsPolicy{
			Collected: []string{"page views by page (from a fixed list of the site's pages)", "visit length", "device class (desktop, mobile, tablet, bot)", "country (as our CDN names it)"},
			Never:     []string{"IP addresses", "browser user agents", "prompts or images", "account or visitor identifiers"},
			Consent:   "Counted only if you allow analytics cookies, your browser sends no Global Privacy Control signal, and (when signed in) you have not switched analytics off in your account settings.",
		},
		OptOuts: []optOutJSON{
			{Setting: "product_email", Default: "off", What: "Non-essential email (news, tips). Account and security email is always sent."},
			{Setting: "analytics", Default: "on for accounts; off for every browser until you allow analytics cookies", What: "Counting your page views in the aggregated first-party analytics."},
			{Setting: "model_improvement", Default: "on", What: "Including your generations in aggregated, anonymized model-improvement statistics (never prompts or images)."},
		},
		GPC: true,
		Rights: []rightJSON{
			{Right: "access and export", How: "download all your data as one archive: GET /v1/account/export"},
			{Right: "correction", How: "change your email address (POST /v1/account/email, confirmed through the new address) and your profile (PATCH /v1/account/profile)"},
			{Right: "deletion", How: "delete your account: DELETE /v1/account"},
			{Right: "opt-outs", How: "switch each setting above at any time: PUT /v1/account/settings"},
			{Right: "requests by email", How: "answered within 30 days"},
		},
		Changes: "When this policy or the cookie policy changes materially, we update the date above, tell account holders by email, and raise the cookie policy's revision so every visitor is asked for consent again.",
		Contact: g.privacyContact(),
	}
}

// privacyUpdated is the privacy policy's last-updated date.
func (g *Gateway) privacyUpdated() string { return g.cfg.PrivacyPolicyUpdated }

// privacyContact is where rights requests go.
func (g *Gateway) privacyContact() string { return g.cfg.PrivacyContact }

func (g *Gateway) privacyJSON(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.JSON(g.privacyPolicy())
}

// privacyPage renders the policy as a page of the website.
func (g *Gateway) privacyPage(c *fiber.Ctx) error {
	return g.renderPage(c, fiber.StatusOK, "privacy", g.layout(c, "Privacy policy"), g.privacyPolicy())
}
