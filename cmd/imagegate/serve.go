package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/store"
)

// serveConfig is everything `imagegate serve` is told.
type serveConfig struct {
	Addr             string
	MetricsAddr      string
	DataDir          string
	DatabaseURL      string
	KeyDir           string
	KeyService       keyServiceFlags
	InferenceURLs    []string
	InferenceToken   string
	InferenceCAFile  string
	InferenceTimeout time.Duration
	SigningKey       string
	SigningKeyPrev   string
	OwnerTagKey      string
	FairnessSalt     string
	EmbedKey         string
	LinkTTL          time.Duration
	L1Bytes          int64
	ConfigFile       string
	Gateway          gateway.Config
	Mail             mail.Config
	S3               edge.S3Config
	Cloudflare       edge.PurgerConfig
	Retention        store.Retention
}

// onOff is a flag that reads "on" or "off".
type onOff struct{ on *bool }

func (f onOff) String() string {
	if f.on == nil || *f.on {
		return "on"
	}
	return "off"
}

func (f onOff) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on", "true", "1":
		*f.on = true
	case "off", "false", "0":
		*f.on = false
	default:
		return fmt.Errorf("%q: want on or off", s)
	}
	return nil
}

// listFlag is a comma-separated list flag.
type listFlag struct{ list *[]string }

func (f listFlag) String() string {
	if f.list == nil {
		return ""
	}
	return strings.Join(*f.list, ",")
}

func (f listFlag) Set(s string) error { *f.list = splitList(s); return nil }

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	var inferenceURLs string
	rateLimits := true
	gw := &cfg.Gateway
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", ":8080", "listen address")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /metrics on this address (e.g. 127.0.0.1:9091); never on --addr, whose port it must not share (empty: /metrics off)")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "bbolt files, local objects, keys and the mail outbox")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL URL of an account store shared by several gateways, e.g. postgres://user:pass@host/imagegate (empty: the embedded bbolt file in --data-dir); key files stay in --data-dir")
	fs.StringVar(&cfg.KeyDir, "key-dir", "", "with --database-url: directory of the key files sealing personal data, the same files for every gateway on the database (default --data-dir; not with --key-service-url)")
	cfg.KeyService.register(fs)
	fs.StringVar(&cfg.ConfigFile, "config", "", "TOML file with plans, prices, rate limits, retention and, for the in-process tier, the [inference] model catalogue (see README)")
	fs.StringVar(&gw.PublicURL, "public-url", "", "base URL of links, e.g. https://img.example.com (empty: derived from the request; account mail then works on localhost only)")
	fs.StringVar(&gw.CDNURL, "cdn-url", "", "base URL of output links when a CDN fronts them")
	fs.StringVar(&inferenceURLs, "inference", "", "comma-separated inference tier URLs (empty: run the tier in-process)")
	fs.StringVar(&cfg.InferenceToken, "inference-token", "", "bearer token sent to the inference tier")
	fs.StringVar(&cfg.InferenceCAFile, "inference-ca-file", "", "PEM file of CA certificates trusted, besides the system roots, for https:// inference URLs")
	fs.DurationVar(&cfg.InferenceTimeout, "inference-timeout", 60*time.Second, "deadline of one inference attempt; failures are retried on another endpoint")
	fs.DurationVar(&gw.LifecycleInterval, "lifecycle-interval", time.Minute, "how often retention and erasure work runs; with several gateways it also bounds how long one that died leaves an erasure unfinished")
	fs.DurationVar(&gw.RequestTimeout, "request-timeout", 90*time.Second, "deadline of one generation request")
	fs.DurationVar(&gw.ReadTimeout, "read-timeout", 30*time.Second, "deadline for reading one request's headers and body; slower clients (slowloris) get 408")
	fs.StringVar(&cfg.SigningKey, "signing-key", "", "secret (≥32 characters, used as written: the key literal of the CDN's WAF rule) for signed output links; shared by every gateway (empty: generated once in the data dir)")
	fs.StringVar(&cfg.SigningKeyPrev, "signing-key-previous", "", "the previous --signing-key, still accepted during a rotation")
	fs.StringVar(&cfg.EmbedKey, "embed-key", "", "secret (≥32 chars) signing the partner widget's embed tokens; shared by every gateway (empty: generated once in the data dir)")
	fs.StringVar(&cfg.OwnerTagKey, "owner-tag-key", "", "secret (≥32 chars) deriving the CDN cache tag of each account's outputs; shared by every gateway, never rotated while outputs are cached (empty: generated once in the data dir)")
	fs.StringVar(&cfg.FairnessSalt, "fairness-salt", "", "secret (≥32 chars) keying the opaque per-account key the inference tier queues fairly by; shared by every gateway (empty: generated once in the data dir)")
	fs.DurationVar(&gw.JobTimeout, "job-timeout", 15*time.Minute, "deadline of one streamed (stream: true) or asynchronous (Prefer: respond-async) generation")
	fs.DurationVar(&gw.StreamHeartbeat, "stream-heartbeat", 15*time.Second, "interval of keep-alive comments on idle event streams, well under a CDN's idle limit (Cloudflare: 100 s)")
	fs.DurationVar(&gw.AsyncJobs.After, "async-after", 0, "answer a generation still waiting for the GPU after this long with 202 and a job to follow (keep it under the CDN's origin timeout, 100 s at Cloudflare); 0: wait up to --request-timeout")
	fs.DurationVar(&gw.AsyncJobs.Keep, "job-keep", 24*time.Hour, "how long a finished job, its prompt included, is kept for its owner to read")
	fs.DurationVar(&gw.AsyncJobs.Lease, "job-lease", 30*time.Second, "how long a gateway holds an unfinished job without renewing it; a gateway that dies mid-job has its jobs taken over by another (or by itself, restarted) once this lapses")
	fs.DurationVar(&cfg.LinkTTL, "link-ttl", 24*time.Hour, "lifetime of signed output links")
	fs.Int64Var(&cfg.L1Bytes, "l1-bytes", 256<<20, "memory cache size in bytes")
	fs.StringVar(&gw.DefaultModel, "default-model", "", "model used when a request names none (empty: the tier's first)")
	fs.StringVar(&gw.DefaultSize, "default-size", "512x512", "size used when a request names none")
	fs.IntVar(&gw.MaxUploadBytes, "max-upload-bytes", 20<<20, "largest accepted reference image upload")
	fs.IntVar(&gw.MaxUploadPixels, "max-upload-pixels", 4096*4096, "largest accepted reference image, in pixels")
	fs.IntVar(&gw.MaxPromptBytes, "max-prompt-bytes", 2000, "longest accepted prompt")
	fs.BoolVar(&gw.HSTS, "hsts", false, "send Strict-Transport-Security (enable when served over HTTPS)")

	fs.StringVar(&cfg.Mail.SMTPURL, "smtp-url", "", "smtp://user:pass@host:port (or smtps://) for account email (empty: .eml files in <data-dir>/outbox)")
	fs.StringVar(&cfg.Mail.From, "mail-from", "", "sender of account email, e.g. \"Site <no-reply@example.com>\" (required with --smtp-url)")
	fs.Var(listFlag{&gw.ClientIP.TrustedProxies}, "trusted-proxies", "comma-separated CIDRs whose client-IP header is believed")
	fs.StringVar(&gw.ClientIP.Header, "client-ip-header", "", "header a trusted proxy puts the client address in: Fly-Client-IP, CF-Connecting-IP or X-Forwarded-For")
	fs.Var(listFlag{&gw.TrustedOrigins}, "trusted-origins", "comma-separated origins (scheme://host) besides this site allowed to make state-changing browser requests")
	fs.Var(onOff{&rateLimits}, "rate-limits", "on, or off for benchmarks and trusted internal use")
	fs.Var(&gw.FreeQuota.FreeImagesPerDay, "free-images-per-day", "images a signed-out visitor may generate per client IP per day, or unlimited (default 10)")
	fs.Var(&gw.FreeQuota.WideFreeImagesPerDay, "wide-free-images-per-day", "images signed-out visitors of one IPv4 /24 or IPv6 /48 may generate together per day, or unlimited (default 10 × --free-images-per-day)")
	fs.IntVar(&gw.PasswordHashers, "password-hashers", 0, "argon2id hashes run at once, 19 MiB each (0: CPUs, at least 2)")
	fs.DurationVar(&gw.SessionIdle, "session-idle", 7*24*time.Hour, "sign-out after this long without use")
	fs.DurationVar(&gw.SessionAbsolute, "session-absolute", 30*24*time.Hour, "sign-out this long after sign-in")
	fs.IntVar(&gw.CookiePolicyRevision, "cookie-policy-revision", 1, "cookie policy revision; raising it asks every visitor again")
	fs.StringVar(&gw.PrivacyPolicyUpdated, "privacy-policy-updated", "", "privacy policy last-updated date, YYYY-MM-DD (default: the cookie policy's)")
	fs.StringVar(&gw.PrivacyContact, "privacy-contact", "", "email address or URL for rights requests, shown on /privacy")
	fs.StringVar(&gw.CookiePolicyUpdated, "cookie-policy-updated", "", "cookie policy last-updated date, YYYY-MM-DD (default: the date of the built-in registry)")
	fs.StringVar(&gw.Google.ClientID, "google-client-id", "", "OAuth client id; enables Sign in with Google")
	fs.StringVar(&gw.Google.ClientSecret, "google-client-secret", "", "OAuth client secret")
	fs.StringVar(&gw.Google.RedirectURL, "google-redirect-url", "", "callback URL registered with Google (default: <public-url>/v1/auth/google/callback)")
	fs.StringVar(&gw.Billing.SecretKey, "stripe-secret-key", "", "Stripe secret key (sk_… or rk_…); enables billing")
	fs.Var(listFlag{&gw.Billing.WebhookSecrets}, "stripe-webhook-secret", "comma-separated Stripe webhook signing secrets (whsec_…); several during rotation")
	fs.StringVar(&gw.Billing.APIURL, "stripe-api-url", "", "Stripe API base URL (default https://api.stripe.com; tests: stripe-mock)")
	fs.StringVar(&gw.Billing.SuccessURL, "billing-success-url", "", "where Checkout returns after payment (default <site>/?checkout=success)")
	fs.StringVar(&gw.Billing.CancelURL, "billing-cancel-url", "", "where Checkout returns when abandoned (default <site>/?checkout=cancel)")
	fs.StringVar(&gw.Billing.PortalReturnURL, "billing-portal-return-url", "", "where Stripe's customer portal returns (default <site>/)")
	var classifierToken string
	fs.StringVar(&classifierToken, "moderation-classifier-token", "", "bearer token of the moderation classifier configured in --config (keeps it out of the file)")
	fs.DurationVar(&cfg.Retention.SecurityLog, "security-log-retention", 0, "how long the security log keeps rows, IPs and user agents (default 720h)")

	fs.StringVar(&cfg.S3.Endpoint, "s3-endpoint", "", "R2/S3 API endpoint, e.g. https://<account>.r2.cloudflarestorage.com (empty: objects in --data-dir)")
	fs.StringVar(&cfg.S3.Bucket, "s3-bucket", "", "bucket for outputs")
	fs.StringVar(&cfg.S3.AccessKeyID, "s3-access-key-id", "", "S3 access key id")
	fs.StringVar(&cfg.S3.SecretAccessKey, "s3-secret-access-key", "", "S3 secret access key")
	fs.StringVar(&cfg.S3.Region, "s3-region", "", "signing region (default auto, for R2)")
	fs.StringVar(&gw.AdminToken, "admin-token", "", "operator credential for /v1/admin/* and imagegate purge (≥16 chars; empty: admin API off); shared by peers")
	fs.Var(listFlag{&gw.Peers.Peers}, "peers", "other gateways purges must reach: URLs, or a DNS name such as <app>.internal resolved at each purge")
	fs.IntVar(&gw.Peers.Port, "peer-port", 8080, "port of peers named by DNS")
	cf := &cfg.Cloudflare
	var cfRate, cfURLRate string
	fs.StringVar(&cf.APIToken, "cloudflare-api-token", "", "API token with Zone > Cache Purge; with --cloudflare-zone-id enables CDN purge")
	fs.StringVar(&cf.ZoneID, "cloudflare-zone-id", "", "zone id of the zone serving --cdn-url")
	fs.StringVar(&cf.BaseURL, "cloudflare-api-url", edge.DefaultCloudflareAPIURL, "Cloudflare API base (tests)")
	fs.StringVar(&cfRate, "cloudflare-purge-rate", "5/min", "tag/host/prefix purge calls the plan allows: Free 5/min, Pro 5/s, Business 10/s")
	fs.StringVar(&cfURLRate, "cloudflare-purge-url-rate", "800/s", "URLs purged per second: Free 800/s, Pro and Business 1500/s")
	fs.IntVar(&cf.MaxItemsPerCall, "cloudflare-purge-batch", 100, "items per purge call (500 for Enterprise URL purges)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var rateErr, urlRateErr error
	cf.Rate, rateErr = edge.ParseRate(cfRate)
	cf.URLRate, urlRateErr = edge.ParseRate(cfURLRate)
	if err := errors.Join(rateErr, urlRateErr); err != nil {
		return fmt.Errorf("--cloudflare-purge-rate: %w", err)
	}
	gw.RateLimits.Disabled = !rateLimits
	if cfg.ConfigFile != "" {
		flagRetention := cfg.Retention.SecurityLog
		if err := loadConfigFile(cfg.ConfigFile, gw, &cfg.Retention); err != nil {
			return err
		}
		if flagRetention != 0 {
			cfg.Retention.SecurityLog = flagRetention
		}
	}
	if classifierToken != "" {
		gw.Moderation.Classifier.Token = classifierToken
	}
	// One retention schedule: what the sweepers enforce is what the
	// privacy page shows.
	if err := cfg.Retention.Validate(); err != nil {
		return err
	}
	gw.Retention.SecurityLog = cfg.Retention.SecurityLog
	// Fill the gateway's defaults here too: the composition root reads
	// some of them (the outbox retention).
	if err := gw.Validate(); err != nil {
		return err
	}
	cfg.Retention.WebhookEvents = gw.Retention.WebhookEvents
	if cfg.Mail.OutboxDir == "" {
		cfg.Mail.OutboxDir = filepath.Join(cfg.DataDir, "outbox")
	}
	cfg.InferenceURLs = splitList(inferenceURLs)
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}

	sys, err := newSystem(ctx, cfg, logger)
	if err != nil {
		return err
	}
	// Learn the model catalogue before announcing the URL, so the first
	// request after "listening" is served rather than refused with 503. A
	// tier that is down is not fatal: the gateway keeps trying and
	// /readyz says when it is ready.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := sys.gateway.RefreshModels(rctx); err != nil {
		logger.Warn("inference tier not reachable yet; serving 503 until it is", "err", err)
	}
	cancel()
	go func() {
		if err := sys.gateway.ResumeJobs(ctx); err != nil && ctx.Err() == nil {
			logger.Error("unfinished jobs not resumed", "err", err)
		}
	}()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		sys.close(context.Background())
		return err
	}
	fmt.Fprintf(stdout, "imagegate listening on %s\n", displayURL(ln.Addr()))
	logger.Info("gateway listening", "addr", ln.Addr().String(), "inference", sys.inferenceDesc)

	errc := make(chan error, 1)
	go func() { errc <- sys.gateway.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	// Generations in flight may take the whole request timeout to finish.
	sctx, cancel := context.WithTimeout(context.Background(), cmp.Or(gw.RequestTimeout, 90*time.Second)+15*time.Second)
	defer cancel()
	return errors.Join(err, sys.close(sctx))
}

// displayURL turns a listen address into a URL a person can paste.
func displayURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// system is the wired gateway and everything it owns, closed in reverse.
type system struct {
	gateway       *gateway.Gateway
	inferenceDesc string
	closers       []func(context.Context) error
}

func (s *system) close(ctx context.Context) error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i](ctx))
	}
	return errors.Join(errs...)
}

// newSystem is the composition root: it opens the data directory, starts
// the in-process inference tier when no remote one is configured, and wires
// the gateway.
func newSystem(ctx context.Context, cfg serveConfig, logger *slog.Logger) (_ *system, err error) {
	s := &system{}
	defer func() {
		if err != nil {
			s.close(context.Background())
		}
	}()
	if err := cfg.Retention.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	db, err := openAccountStore(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return db.Close() })

	objects, err := newObjectStore(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return objects.Close() })
	c, err := cache.New(cache.Config{Path: filepath.Join(cfg.DataDir, "cache.db"), L1MaxBytes: cfg.L1Bytes}, objects, logger)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return c.Close() })

	signer, err := newSigner(cfg)
	if err != nil {
		return nil, err
	}
	mailer, err := mail.New(cfg.Mail, logger)
	if err != nil {
		return nil, err
	}

	urls, token := cfg.InferenceURLs, cfg.InferenceToken
	s.inferenceDesc = strings.Join(urls, ",")
	if len(urls) == 0 {
		// One code path: the in-process tier is still reached over Connect
		// on loopback, with a token nobody else knows.
		url, tok, closeTier, err := startLocalTier(cfg.ConfigFile, reg, logger)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, closeTier)
		urls, token = []string{url}, tok
		s.inferenceDesc = "in-process (retro, procedural)"
	}
	rootCAs, err := loadCAFile(cfg.InferenceCAFile)
	if err != nil {
		return nil, err
	}
	pool, err := inference.NewPool(inference.PoolConfig{URLs: urls, Token: token, RootCAs: rootCAs, CallTimeout: cfg.InferenceTimeout, Registerer: reg}, logger)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { pool.Close(); return nil })

	ownerKey := []byte(cfg.OwnerTagKey)
	if cfg.OwnerTagKey == "" {
		if ownerKey, err = edge.LoadOrCreateKey(filepath.Join(cfg.DataDir, "owner-tag.key")); err != nil {
			return nil, err
		}
	}
	owners, err := edge.NewOwnerTagger(ownerKey)
	if err != nil {
		return nil, fmt.Errorf("--owner-tag-key: %w", err)
	}
	salt := []byte(cfg.FairnessSalt)
	if cfg.FairnessSalt == "" {
		if salt, err = edge.LoadOrCreateKey(filepath.Join(cfg.DataDir, "fairness.salt")); err != nil {
			return nil, err
		}
	} else if len(salt) < 32 {
		return nil, errors.New("--fairness-salt: at least 32 characters")
	}
	cfg.Gateway.FairnessSalt = salt
	embedKey := []byte(cfg.EmbedKey)
	if cfg.EmbedKey == "" {
		if embedKey, err = edge.LoadOrCreateKey(filepath.Join(cfg.DataDir, "embed.key")); err != nil {
			return nil, err
		}
	}
	cfg.Gateway.Partners.EmbedKey = embedKey
	deps := gateway.Deps{
		Cache: c, Signer: signer, Inference: pool, Store: db, Mailer: mailer, Objects: objects, OwnerTags: owners,
		Registry: reg, Logger: logger,
	}
	// The gateway has no /metrics route at all: the figures are served
	// only here, on a listener of their own, so no flag can put them on
	// the public port.
	if cfg.MetricsAddr != "" {
		if sharesPort(cfg.MetricsAddr, cfg.Addr) {
			return nil, fmt.Errorf("--metrics-addr %s: must not share the public --addr %s (its port is public)", cfg.MetricsAddr, cfg.Addr)
		}
		stop, err := serveMetrics(cfg.MetricsAddr, reg, logger)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, stop)
	} else {
		logger.Info("metrics off (no --metrics-addr)")
	}
	if cfg.Cloudflare.APIToken != "" || cfg.Cloudflare.ZoneID != "" {
		p, err := edge.NewPurger(cfg.Cloudflare, logger.With("component", "cdn-purge"))
		if err != nil {
			return nil, err
		}
		deps.Purger = p
	} else {
		logger.Info("CDN purge off (no --cloudflare-api-token): purges reach the gateways' caches only")
	}
	g, err := gateway.New(cfg.Gateway, deps)
	if err != nil {
		return nil, err
	}
	s.gateway = g
	s.closers = append(s.closers, g.Shutdown)

	swept, err := newSweepMetrics(reg)
	if err != nil {
		return nil, err
	}
	sweepCtx, stopSweeper := context.WithCancel(context.Background())
	sweeperDone := make(chan struct{})
	go func() {
		defer close(sweeperDone)
		if mailer.Outbox != nil {
			go pruneOutbox(sweepCtx, mailer.Outbox, cfg.Gateway.Retention.Outbox, logger)
		}
		db.RunSweeper(sweepCtx, cfg.Retention, 10*time.Minute, logger, swept.add)
	}()
	s.closers = append(s.closers, func(context.Context) error { stopSweeper(); <-sweeperDone; return nil })
	return s, nil
}

// sharesPort reports whether listening on a would take b's port: same
// port, and a host that is the same or unspecified on either side.
func sharesPort(a, b string) bool {
	ah, ap, errA := net.SplitHostPort(a)
	bh, bp, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || ap != bp || ap == "0" {
		return false
	}
	unspecified := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || (ip != nil && ip.IsUnspecified())
	}
	return ah == bh || unspecified(ah) || unspecified(bh)
}

// serveMetrics serves /metrics alone on addr.
func serveMetrics(addr string, g prometheus.Gatherer, logger *slog.Logger) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	logger.Info("metrics listening", "addr", ln.Addr().String())
	return srv.Shutdown, nil
}

// sweepMetrics counts what the store's retention sweeps removed, by kind.
type sweepMetrics struct{ removed *prometheus.CounterVec }

func newSweepMetrics(reg prometheus.Registerer) (*sweepMetrics, error) {
	m := &sweepMetrics{removed: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagegate_retention_swept_total",
		Help: "Records removed by the store's retention sweeps, by kind.",
	}, []string{"kind"})}
	return m, reg.Register(m.removed)
}

func (m *sweepMetrics) add(r store.SweepReport) {
	for kind, n := range map[string]int{
		"security_events": r.SecurityEvents, "sessions": r.Sessions, "email_tokens": r.EmailTokens,
		"credit_holds": r.Holds, "reports": r.Reports, "rights_request_data": r.DSARsErased,
		"rights_requests": r.DSARsDeleted, "webhook_events": r.WebhookEvents,
	} {
		m.removed.WithLabelValues(kind).Add(float64(n))
	}
}

// pruneOutbox deletes outbox mail older than keep, hourly: the outbox holds
// personal data and live links.
func pruneOutbox(ctx context.Context, o *mail.Outbox, keep time.Duration, logger *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if _, err := o.Prune(ctx, time.Now().Add(-keep)); err != nil && ctx.Err() == nil {
			logger.Error("outbox prune failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// objectStore is what the composition root needs of an object store.
type objectStore interface {
	cache.ObjectStore
	Delete(ctx context.Context, name string) error
	Close() error
}

// newObjectStore is R2/S3 when any --s3-* flag is set (so a half-filled
// configuration fails validation rather than silently falling back), the
// local directory otherwise.
func newObjectStore(ctx context.Context, cfg serveConfig, logger *slog.Logger) (objectStore, error) {
	if cfg.S3 == (edge.S3Config{}) {
		return edge.NewLocal(filepath.Join(cfg.DataDir, "objects"))
	}
	o, err := edge.NewS3(cfg.S3, logger)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := o.Check(cctx); err != nil {
		o.Close()
		return nil, fmt.Errorf("object store: %w", err)
	}
	logger.Info("object store", "s3", cfg.S3)
	return o, nil
}

// newSigner builds the link signer. Keys are used as written (text, not
// hex): the same text is the key literal of the CDN's WAF rule.
func newSigner(cfg serveConfig) (*edge.Signer, error) {
	cur := []byte(cfg.SigningKey)
	if cfg.SigningKey == "" {
		var err error
		if cur, err = edge.LoadOrCreateKey(filepath.Join(cfg.DataDir, "signing.key")); err != nil {
			return nil, err
		}
	}
	return edge.NewSigner(edge.SignerConfig{Current: cur, Previous: []byte(cfg.SigningKeyPrev), TTL: cfg.LinkTTL}, nil) // nil: time.Now, which the hit path may read once for all
}

// startLocalTier runs the inference service on a loopback port, with the
// catalogue in the [inference] section of configFile (empty: retro alone).
func startLocalTier(configFile string, reg prometheus.Registerer, logger *slog.Logger) (url, token string, stop func(context.Context) error, err error) {
	var b [32]byte
	rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	setup, err := loadTierConfig(configFile)
	if err != nil {
		return "", "", nil, err
	}
	tier, err := newTier(inference.ServerConfig{Token: token}, setup, reg, logger.With("component", "inference"))
	if err != nil {
		return "", "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", nil, err
	}
	srv := newH2CServer(tier.Handler())
	go srv.Serve(ln)
	stop = func(ctx context.Context) error {
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return "http://" + ln.Addr().String(), token, stop, nil
}
