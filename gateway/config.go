package gateway

import (
	"errors"

	"fmt"
	"github.com/alexedwards/argon2id"

	"github.com/imagegate/imagegate/gateway/partner"
	"net/url"
	"strings"
	"time"

	"github.com/imagegate/imagegate/gateway/clientip"
	"github.com/imagegate/imagegate/gateway/ratelimit"
)

// Config holds the gateway's tunables. The zero value of every field means
// "use the default"; call Validate after setting fields.
type Config struct {
	// PublicURL is the base of links the gateway hands out. Empty means
	// derive output links from the request's scheme and Host; emailed
	// account links (verification, reset, billing, notices) are then only
	// sent to a loopback Host, since anyone can set Host to their own.
	PublicURL string
	// CDNURL, when set, replaces PublicURL as the base of output links.
	CDNURL string
	// DefaultModel is the backend used when a request names none; empty
	// means the first model the inference tier lists.
	DefaultModel string
	// DefaultSize is used when a request has no size ("512x512").
	DefaultSize string
	// MaxPromptBytes bounds prompt and negative prompt (2000).
	MaxPromptBytes int
	// MaxJSONBytes bounds JSON request bodies (64 KiB).
	MaxJSONBytes int
	// MaxUploadBytes bounds a multipart edit body (20 MiB).
	MaxUploadBytes int
	// MaxUploadPixels bounds a reference image's width×height, checked from
	// its header before any pixel is decoded (16,777,216 = 4096²).
	MaxUploadPixels int
	// RequestTimeout bounds one generation request end to end (90 s, under
	// Cloudflare's 100 s origin limit).
	RequestTimeout time.Duration
	// JobTimeout bounds one streamed or asynchronous generation (15 min):
	// neither is held to RequestTimeout, since no CDN waits on them.
	JobTimeout time.Duration
	// StreamHeartbeat is how often an idle event stream gets a comment
	// line (15 s), so no proxy or CDN takes it for a dead origin.
	StreamHeartbeat time.Duration
	// AsyncJobs configures asynchronous generation jobs.
	AsyncJobs AsyncJobsConfig
	// ReadTimeout bounds reading one request, headers and body together
	// (30 s), so a client trickling bytes (slowloris) holds a connection
	// no longer than that; it is then answered 408.
	ReadTimeout time.Duration
	// HSTS adds Strict-Transport-Security to every response. Turn it on
	// only when the site is served over HTTPS.
	HSTS bool
	// ModelRefresh is how often the model catalogue is re-read from the
	// inference tier (30 s).
	ModelRefresh time.Duration

	// TrustedOrigins may make state-changing browser requests besides this
	// site's own origin (e.g. "https://app.example.com"), lower-case.
	TrustedOrigins []string
	// ClientIP says which proxies' client-address headers are believed.
	ClientIP ClientIPConfig
	// RateLimits are the request rate limits.
	RateLimits RateLimitConfig
	// LoginGuard limits sign-in attempts.
	LoginGuard LoginGuardConfig
	// Credentials limits lookups of API keys and session cookies not yet
	// seen to work; off with RateLimits.Disabled.
	Credentials ratelimit.CredentialGuardConfig
	// FreeQuota is signed-out visitors' daily allowance of images.
	FreeQuota DailyQuotaConfig
	// Plans price generations and say what each plan may do.
	Plans PlansConfig
	// Google enables Sign in with Google.
	Google GoogleConfig
	// Billing enables payments through Stripe.
	Billing BillingConfig
	// Moderation checks prompts and outputs.
	Moderation ModerationConfig
	// LifecycleInterval is how often expired outputs are deleted and
	// erasures carried on (1 minute; an erasure request also starts one).
	LifecycleInterval time.Duration
	// Retention is the retention schedule, rendered into the privacy
	// page; the sweepers enforce the same values.
	Retention RetentionSchedule
	// AdminToken is the operator credential for /v1/admin/*, separate from
	// every user credential; empty disables the admin API. Gateways of one
	// deployment share it: peers authenticate invalidations with it.
	AdminToken string
	// Peers are the other gateways a purge must reach.
	Peers PeersConfig
	// FairnessSalt keys the HMAC that turns an account or network into
	// the opaque fairness key the inference tier queues by (promise X1).
	// Gateways of one deployment should share it so one account has one
	// share; empty means a random salt per process.
	FairnessSalt []byte
	// Partners signs the embed widget's tokens (an EmbedKey shared by
	// every gateway; empty: a key of this process only); Webhooks paces
	// partners' completion callbacks.
	Partners partner.Config
	Webhooks partner.WebhookConfig

	// SessionIdle ends sessions unused this long (7 days); SessionAbsolute
	// ends them this long after sign-in (30 days).
	SessionIdle, SessionAbsolute time.Duration
	// ResetTTL is how long a password-reset link works (30 min);
	// VerifyTTL an email-verification link (48 h).
	ResetTTL, VerifyTTL time.Duration
	// PasswordHashers bounds concurrent argon2id hashes, 19 MiB each
	// (default: CPUs, at least 2).
	PasswordHashers int
	// writeTimeout overrides the server's write timeout (RequestTimeout
	// plus 10 s); only tests set it, to show that long responses push
	// their own deadline.
	writeTimeout time.Duration
	// passwordParams overrides the argon2id parameters; only tests set it,
	// to keep hundreds of sign-ups fast. Production always uses OWASP's.
	passwordParams *argon2id.Params

	// CookiePolicyRevision numbers the cookie policy; raise it when the
	// policy changes materially and every visitor is asked again (K5).
	CookiePolicyRevision int
	// CookiePolicyUpdated is the policy's last-updated date (YYYY-MM-DD).
	CookiePolicyUpdated string
	// PrivacyPolicyUpdated is the privacy policy's last-updated date
	// (YYYY-MM-DD); empty means CookiePolicyUpdated.
	PrivacyPolicyUpdated string
	// PrivacyContact is where rights requests and privacy questions go (an
	// email address or URL), shown on /privacy.
	PrivacyContact string
}

// cookiePolicyDate is when the cookie registry last changed; operators
// override it together with the revision.
const cookiePolicyDate = "2026-11-23"

func (c *Config) setDefaults() {
	if c.DefaultSize == "" {
		c.DefaultSize = "512x512"
	}
	if c.MaxPromptBytes == 0 {
		c.MaxPromptBytes = 2000
	}
	if c.MaxJSONBytes == 0 {
		c.MaxJSONBytes = 64 << 10
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = 20 << 20
	}
	if c.MaxUploadPixels == 0 {
		c.MaxUploadPixels = 4096 * 4096
	}
	if c.JobTimeout == 0 {
		c.JobTimeout = 15 * time.Minute
	}
	if c.AsyncJobs.Keep == 0 {
		c.AsyncJobs.Keep = 24 * time.Hour
	}
	if c.AsyncJobs.Lease == 0 {
		c.AsyncJobs.Lease = 30 * time.Second
	}
	if c.StreamHeartbeat == 0 {
		c.StreamHeartbeat = 15 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 90 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.ModelRefresh == 0 {
		c.ModelRefresh = 30 * time.Second
	}
	if c.SessionIdle == 0 {
		c.SessionIdle = 7 * 24 * time.Hour
	}
	if c.SessionAbsolute == 0 {
		c.SessionAbsolute = 30 * 24 * time.Hour
	}
	if c.ResetTTL == 0 {
		c.ResetTTL = 30 * time.Minute
	}
	if c.VerifyTTL == 0 {
		c.VerifyTTL = 48 * time.Hour
	}
	if c.CookiePolicyRevision == 0 {
		c.CookiePolicyRevision = 1
	}
	if c.CookiePolicyUpdated == "" {
		c.CookiePolicyUpdated = cookiePolicyDate
	}
	if c.PrivacyPolicyUpdated == "" {
		c.PrivacyPolicyUpdated = c.CookiePolicyUpdated
	}
	for i, o := range c.TrustedOrigins {
		c.TrustedOrigins[i] = strings.ToLower(strings.TrimSuffix(o, "/"))
	}
	c.Plans.setDefaults()
	c.Peers.setDefaults()
	c.Retention.setDefaults()
	if c.Moderation.LegalHold == 0 {
		c.Moderation.LegalHold = c.Retention.LegalHold
	}
	if c.LifecycleInterval == 0 {
		c.LifecycleInterval = time.Minute
	}
	c.Google.setDefaults(c.PublicURL)
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	c.setDefaults()
	var errs []error
	for name, u := range map[string]string{"public URL": c.PublicURL, "CDN URL": c.CDNURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			errs = append(errs, fmt.Errorf("gateway: %s %q must be an absolute http(s) URL with no path or query", name, u))
		}
	}
	if _, _, err := parseSize(c.DefaultSize); err != nil {
		errs = append(errs, fmt.Errorf("gateway: default size: %w", err))
	}
	if c.MaxPromptBytes < 1 || c.MaxJSONBytes < 1024 || c.MaxUploadBytes < 1024 || c.MaxUploadPixels < 1 {
		errs = append(errs, errors.New("gateway: size limits must be positive (JSON and upload limits at least 1 KiB)"))
	}
	if c.RequestTimeout < time.Second {
		errs = append(errs, errors.New("gateway: request timeout must be at least 1s"))
	}
	if c.ReadTimeout < 0 {
		errs = append(errs, errors.New("gateway: read timeout must be positive"))
	}
	if c.AsyncJobs.Lease < 30*time.Millisecond {
		errs = append(errs, errors.New("gateway: job lease must be at least 30ms"))
	}
	if c.SessionIdle < time.Minute || c.SessionAbsolute < c.SessionIdle {
		errs = append(errs, errors.New("gateway: session idle timeout must be at least 1m and at most the absolute timeout"))
	}
	if c.ResetTTL < time.Minute || c.ResetTTL > 24*time.Hour || c.VerifyTTL < time.Minute {
		errs = append(errs, errors.New("gateway: reset links must live between 1m and 24h, verification links at least 1m"))
	}
	if c.CookiePolicyRevision < 1 {
		errs = append(errs, errors.New("gateway: cookie policy revision must be positive"))
	}
	if _, err := time.Parse(time.DateOnly, c.CookiePolicyUpdated); err != nil {
		errs = append(errs, fmt.Errorf("gateway: cookie policy date %q must be YYYY-MM-DD", c.CookiePolicyUpdated))
	}
	if _, err := time.Parse(time.DateOnly, c.PrivacyPolicyUpdated); err != nil {
		errs = append(errs, fmt.Errorf("gateway: privacy policy date %q must be YYYY-MM-DD", c.PrivacyPolicyUpdated))
	}
	for _, o := range c.TrustedOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
			errs = append(errs, fmt.Errorf("gateway: trusted origin %q must be scheme://host[:port]", o))
		}
	}
	errs = append(errs, c.ClientIP.Validate(), c.RateLimits.Validate(), c.LoginGuard.Validate(), c.Credentials.Validate(),
		c.FreeQuota.Validate(), c.Plans.validate(), c.Google.validate(), c.Billing.Validate(), c.Peers.validate(), c.Moderation.Validate(), c.Retention.validate())
	if c.Billing.SecretKey != "" {
		errs = append(errs, c.Billing.CheckPlans(c.Plans.accountPlan))
	}
	if len(c.Peers.Peers) > 0 && c.AdminToken == "" {
		errs = append(errs, errors.New("gateway: peers need an admin token to authenticate invalidations"))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		errs = append(errs, errors.New("gateway: the admin token must be at least 16 characters"))
	}
	return errors.Join(errs...)
}

// RetentionSchedule is how long each kind of data is kept, beyond what the
// plans say about outputs. One schedule drives the sweepers and the
// privacy page, so the page cannot promise what the code does not do.
type RetentionSchedule struct {
	// SecurityLog: security-log rows, IP addresses and user agents (30 d).
	SecurityLog time.Duration
	// Outbox: mail written to the outbox when no SMTP server is set (7 d).
	Outbox time.Duration
	// WebhookEvents: processed payment-webhook ids, kept to ignore
	// redeliveries (Stripe retries for 3 days; 30 d).
	WebhookEvents time.Duration
	// LegalHold: reports of apparent CSAM and the material (1 year, as
	// U.S. law requires).
	LegalHold time.Duration
	// Backups: the operator's backup rotation of the data directory, if
	// any; shown on the privacy page (0: no backups are taken).
	Backups time.Duration
}

func (r *RetentionSchedule) setDefaults() {
	if r.SecurityLog == 0 {
		r.SecurityLog = 30 * 24 * time.Hour
	}
	if r.Outbox == 0 {
		r.Outbox = 7 * 24 * time.Hour
	}
	if r.WebhookEvents == 0 {
		r.WebhookEvents = 30 * 24 * time.Hour
	}
	if r.LegalHold == 0 {
		r.LegalHold = 365 * 24 * time.Hour
	}
}

func (r *RetentionSchedule) validate() error {
	var errs []error
	if r.SecurityLog < 24*time.Hour || r.Outbox < time.Hour || r.WebhookEvents < 4*24*time.Hour {
		errs = append(errs, errors.New("gateway: retention: security log ≥ 24h, outbox ≥ 1h, webhook events ≥ 96h (Stripe retries for 3 days)"))
	}
	if r.LegalHold < 365*24*time.Hour {
		errs = append(errs, errors.New("gateway: retention: legal holds last at least one year"))
	}
	if r.Backups < 0 {
		errs = append(errs, errors.New("gateway: retention: backups must not be negative"))
	}
	return errors.Join(errs...)
}

// ClientIPConfig is package clientip's Config, under the name --config and
// cmd have always used.
type ClientIPConfig = clientip.Config

// The client-IP headers a trusted proxy may set (see package clientip).
const (
	HeaderFlyClientIP    = clientip.HeaderFlyClientIP
	HeaderCFConnectingIP = clientip.HeaderCFConnectingIP
	HeaderXForwardedFor  = clientip.HeaderXForwardedFor
)

// Package ratelimit's configuration, under the names --config and cmd have
// always used.
type (
	LimitPolicy      = ratelimit.Policy
	RateCosts        = ratelimit.Costs
	RateLimitConfig  = ratelimit.Config
	DailyQuotaConfig = ratelimit.QuotaConfig
	LoginGuardConfig = ratelimit.LoginGuardConfig
	FreeImages       = ratelimit.FreeImages
)

// FreeImagesPerDay is ratelimit.FreeImagesPerDay: n free images a day.
func FreeImagesPerDay(n int) FreeImages { return ratelimit.FreeImagesPerDay(n) }

// UnlimitedFreeImages is ratelimit.UnlimitedFreeImages.
func UnlimitedFreeImages() FreeImages { return ratelimit.UnlimitedFreeImages() }
