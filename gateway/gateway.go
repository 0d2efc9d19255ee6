package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/gateway/clientip"
	"github.com/imagegate/imagegate/gateway/dashboard"
	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/gateway/partner"
	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/gateway/web"
	"github.com/imagegate/imagegate/inference"
)

// Generator is the inference client as the gateway uses it.
type Generator interface {
	Generate(ctx context.Context, model string, req inference.Request) (inference.Result, inference.ModelInfo, error)
	Models(ctx context.Context) ([]inference.ModelInfo, error)
	Ready() bool
}

// Deps are the components the gateway is wired to.
type Deps struct {
	Cache     *cache.Cache
	Signer    *edge.Signer
	Inference Generator
	// Store keeps accounts, sessions, credits, consents and the security
	// log, and persists the model catalogue.
	Store Store
	// Mailer delivers account email (resets, verifications, notices).
	Mailer mailer
	// Objects is the object store outputs live in, for purges.
	Objects objectDeleter
	// Purger purges the CDN; nil when no CDN purge is configured.
	Purger purger
	// OwnerTags names each account's outputs to the CDN (Cache-Tag) with a
	// tag the CDN cannot link to the account; nil: no owner tags.
	OwnerTags *edge.OwnerTagger
	// Registry receives the gateway's metrics. The gateway never serves
	// them: /metrics belongs on a listener of its own (imagegate serve
	// --metrics-addr), never on the public port, whatever the settings.
	Registry prometheus.Registerer
	Logger   *slog.Logger
	// Now is the clock (time.Now); tests pass a fake one.
	Now func() time.Time
	// HTTPClient makes the gateway's own outgoing calls (Google sign-in);
	// nil means a client with a 20 s timeout.
	HTTPClient *http.Client
}

// Gateway is the HTTP edge. Create it with New, run it with Serve, stop it
// with Shutdown.
type Gateway struct {
	cfg        Config
	app        *fiber.App
	cache      *cache.Cache
	signer     *edge.Signer
	gen        Generator
	store      Store
	mail       *postman
	catalog    *catalog
	metrics    *metrics
	logger     *slog.Logger
	now        func() time.Time
	httpClient *http.Client
	decodes    chan struct{} // bounds concurrent reference decodes

	passwords  *passwordHasher
	ips        *clientip.Resolver
	limiter    rateLimiter
	logins     loginGuard
	creds      credentialGuard // nil when rate limits are off
	quota      freeQuota
	resetMails throttle
	// refusals throttles security-log rows for refused admin tokens;
	// gpcRecords the GPC consent rows of cookie-less visitors.
	refusals   throttle
	gpcRecords throttle
	billing    *payments // nil when payments are not configured
	objects    objectDeleter
	purger     purger
	peers      *peerSet
	moderator  moderator
	history    *historian
	owners     *edge.OwnerTagger
	tags       tagCache // recent Cache-Tag values of outputs
	// parsed keeps decoded, validated and keyed generation bodies;
	// bodies recycles response buffers of the hit path.
	parsed   parsedGenerations
	bodies   sync.Pool
	life     *lifecycle
	partners *partner.Engine
	notifier *partner.Notifier // partners' completion callbacks
	// The operator dashboard: its pages, its sessions, and the metrics
	// it charts (the registry /metrics serves).
	dash          *dashboard.Dashboard
	adminSessions *adminSessions
	gatherer      prometheus.Gatherer
	site          *web.Site // the website's templates and assets
	progress      *progressHub
	jobs          *jobRunner

	// The hit path (fastpath.go): its view of the limiter and moderator,
	// whether it serves generations, whether g.now is the real clock, and
	// the app's error handler for its panics.
	fastLimiter     *ratelimit.Limiter
	passer          promptPasser
	fastGenerations bool
	realClock       bool
	onError         fiber.ErrorHandler

	stop context.CancelFunc
	done chan struct{}
}

// New builds the gateway and starts its background work (model catalogue
// refresh, sweeps of idle rate-limit state).
func New(cfg Config, deps Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Cache == nil || deps.Signer == nil || deps.Inference == nil || deps.Store == nil || deps.Mailer == nil || deps.Objects == nil {
		return nil, errors.New("gateway: cache, signer, inference, store, mailer and objects are required")
	}
	if len(cfg.FairnessSalt) == 0 {
		cfg.FairnessSalt = make([]byte, 32)
		rand.Read(cfg.FairnessSalt)
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, deps.Cache)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:        cfg,
		cache:      deps.Cache,
		signer:     deps.Signer,
		gen:        deps.Inference,
		store:      deps.Store,
		mail:       newPostman(deps.Mailer, logger),
		catalog:    newCatalog(deps.Store, logger),
		metrics:    m,
		logger:     logger,
		now:        now,
		realClock:  deps.Now == nil,
		onError:    errorHandler(logger),
		httpClient: deps.HTTPClient,
		decodes:    make(chan struct{}, 4),
		passwords:  newPasswordHasher(cfg.passwordParams, cfg.PasswordHashers, 5*time.Second),
		resetMails: ratelimit.NewThrottle("mail", resetMailPolicy, now),
		refusals:   ratelimit.NewThrottle("refusal-log", refusalLogPolicy, now),
		gpcRecords: ratelimit.NewThrottle("gpc-record", gpcRecordPolicy, now),
		objects:    deps.Objects,
		purger:     deps.Purger,
		owners:     deps.OwnerTags,
		life:       newLifecycle(),
		progress:   newProgressHub(),
		done:       make(chan struct{}),
	}
	if js, ok := deps.Store.(jobStore); ok {
		if g.jobs, err = newJobRunner(g, js, reg); err != nil {
			return nil, err
		}
	}
	if g.httpClient == nil {
		g.httpClient = &http.Client{Timeout: 20 * time.Second}
	}
	g.bodies.New = func() any { b := make([]byte, 0, 512); return &b }
	g.peers = newPeerSet(cfg.Peers, peerToken(cfg.AdminToken), g.httpClient)
	if g.ips, err = clientip.New(cfg.ClientIP); err != nil {
		return nil, err
	}
	if g.limiter, err = ratelimit.New(cfg.RateLimits, g.ips, now); err != nil {
		return nil, err
	}
	if g.logins, err = ratelimit.NewLoginGuard(cfg.LoginGuard, now); err != nil {
		return nil, err
	}
	if !cfg.RateLimits.Disabled {
		creds, err := ratelimit.NewCredentialGuard(cfg.Credentials, now)
		if err != nil {
			return nil, err
		}
		g.creds = creds
	}
	if g.quota, err = ratelimit.NewQuota(cfg.FreeQuota, now); err != nil {
		return nil, err
	}
	if g.billing, err = newPayments(cfg, deps.Store, logger, now); err != nil {
		return nil, err
	}
	if g.partners, err = newPartners(cfg.Partners, deps.Store, now); err != nil {
		return nil, err
	}
	g.notifier = partner.NewNotifier(cfg.Webhooks, g.httpClient, partner.RealClock, logger)
	if err := registerWebhookMetrics(reg, g.notifier); err != nil {
		return nil, err
	}
	if g.dash, err = dashboard.New(); err != nil {
		return nil, err
	}
	g.adminSessions = newAdminSessions(cfg.AdminToken, now)
	// The dashboard reads the registry /metrics serves on its own
	// listener, so both show the same figures.
	if rg, ok := reg.(prometheus.Gatherer); ok {
		g.gatherer = rg
	}
	g.history = newHistorian(deps.Store, logger, now)
	if g.site, err = web.New(); err != nil {
		return nil, err
	}
	mod, err := moderation.New(cfg.Moderation, deps.Store, logger, g.httpClient, now)
	if err != nil {
		return nil, err
	}
	if err := reg.Register(mod); err != nil {
		return nil, err
	}
	g.moderator = mod
	if err := g.registerWorkerMetrics(reg); err != nil {
		return nil, err
	}
	g.app = fiber.New(fiber.Config{
		AppName:               "imagegate",
		DisableStartupMessage: true,
		// The multipart edit route is the largest body we accept; JSON
		// routes check their own, smaller limit.
		BodyLimit:    cfg.MaxUploadBytes + 64<<10,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cmp.Or(cfg.writeTimeout, cfg.RequestTimeout+10*time.Second),
		IdleTimeout:  120 * time.Second,
		ErrorHandler: g.onError,
		// Image bytes are already compressed; JSON is small.
		CompressedFileSuffix: "",
		// fasthttp would otherwise parse a multipart body while reading it
		// and spool any file over 16 MiB to a temporary file: reference
		// images must stay in request memory (promise C2). Parsed from
		// the body instead, every part stays in memory.
		DisablePreParseMultipartForm: true,
		// Headers and a 512 px output leave in one write, not three
		// (fasthttp's default buffer is 4 KiB). A connection keeps its
		// buffer between requests (as fasthttp does by default; giving it
		// back to the pool after each request measured slower): 32 KiB
		// per open connection, bounded by the 120 s idle timeout.
		WriteBufferSize: WriteBufferSize,
	})
	g.routes()
	g.installHitPath()

	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	// g.done closes once every background worker has returned, so
	// Shutdown can promise that none of them still uses the store.
	var workers sync.WaitGroup
	workers.Go(func() { g.sweepLimits(ctx) })
	workers.Go(func() { g.runLifecycle(ctx, cfg.LifecycleInterval) })
	workers.Go(func() { g.catalog.run(ctx, g.gen, cfg.ModelRefresh) })
	workers.Go(func() { g.notifier.Run(ctx) })
	if g.jobs != nil {
		workers.Go(func() { g.jobs.loop(ctx) })
	}
	go func() {
		workers.Wait()
		close(g.done)
	}()
	return g, nil
}

// sweepLimits forgets idle rate-limit, sign-in and quota state every
// minute, so memory tracks the active clients, not every client ever seen.
func (g *Gateway) sweepLimits(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.limiter.Sweep()
			g.logins.Sweep()
			g.quota.Sweep()
			if g.creds != nil {
				g.creds.Sweep()
			}
		}
	}
}

// rateIdentityOf names the request's account and API key to the limiter.
func rateIdentityOf(c *fiber.Ctx) ratelimit.Identity {
	p := principalOf(c)
	if p.account == nil {
		return ratelimit.Identity{}
	}
	return ratelimit.Identity{Account: p.account.ID, APIKey: p.apiKeyID, Plan: p.account.Plan}
}

func (g *Gateway) routes() {
	app := g.app
	app.Use(recover.New())
	app.Use(g.securityHeaders)
	app.Use(g.metrics.middleware)
	app.Use(g.filterCookies)
	app.Use(g.crossOrigin)
	app.Use(plainBodies)

	app.Get("/healthz", g.healthz)
	app.Get("/readyz", g.readyz)

	costs := g.cfg.RateLimits.Costs
	limit := func(cost int) fiber.Handler { return g.limiter.Limit(cost, rateIdentityOf) }
	std := []fiber.Handler{g.smallBody, g.identify, limit(costs.Default), g.gpcOptOut}
	with := func(hs ...fiber.Handler) []fiber.Handler { return append(append([]fiber.Handler{}, std...), hs...) }
	// Account routes: reads take a session or an account:read key,
	// changes a browser session (see authorize); recent a fresh sign-in.
	account := func(hs ...fiber.Handler) []fiber.Handler {
		return with(append([]fiber.Handler{g.authorize(accessAccount)}, hs...)...)
	}
	recent := func(hs ...fiber.Handler) []fiber.Handler {
		return with(append([]fiber.Handler{g.authorize(accessRecent)}, hs...)...)
	}
	images := g.authorize(accessImages)

	app.Options(partnerRoute, g.partnerPreflight)
	app.Post("/v1/images/generations", g.partnerAuth, g.identify, limit(costs.GenerationHit), images, g.gpcOptOut, g.generations)
	app.Post("/v1/images/edits", g.identify, limit(costs.GenerationHit), images, g.gpcOptOut, g.edits)
	app.Get("/o/:name", limit(costs.Object), g.object)
	app.Get("/v1/models", with(g.listModels)...)
	app.Get("/v1/jobs/:id", with(g.getJob)...)
	app.Get("/v1/jobs/:id/events", with(g.jobEvents)...)
	app.Delete("/v1/jobs/:id", with(g.cancelJob)...)

	app.Post("/v1/auth/signup", with(g.signup)...)
	app.Post("/v1/auth/login", with(g.login)...)
	app.Post("/v1/auth/logout", account(g.logout)...)
	app.Post("/v1/auth/logout-all", account(g.logoutAll)...)
	app.Post("/v1/auth/password", account(g.changePassword)...)
	app.Post("/v1/auth/password-reset", with(g.requestReset)...)
	app.Post("/v1/auth/password-reset/confirm", with(g.confirmReset)...)
	app.Post("/v1/auth/verify-email", with(g.verifyEmail)...)
	app.Get("/v1/auth/google", with(g.googleStart)...)
	app.Get("/v1/auth/google/callback", with(g.googleCallback)...)

	app.Get("/v1/account", account(g.getAccount)...)
	app.Delete("/v1/account", recent(g.deleteAccount)...)
	app.Get("/v1/account/export", recent(g.export)...)
	app.Get("/v1/account/generations", account(g.listGenerations)...)
	app.Delete("/v1/account/generations/:id", account(g.deleteGeneration)...)
	app.Get("/v1/account/api-keys", account(g.listAPIKeys)...)
	app.Post("/v1/account/api-keys", account(g.createAPIKey)...)
	app.Delete("/v1/account/api-keys/:id", account(g.deleteAPIKey)...)

	g.billingRoutes(app, account)

	app.Get("/v1/consent", with(g.getConsent)...)
	app.Put("/v1/consent", with(g.putConsent)...)
	app.Get("/v1/cookies", limit(costs.Default), g.cookiesJSON)
	app.Get("/.well-known/gpc.json", limit(costs.Default), g.gpcJSON)

	// Admin routes are rate limited before the token check, so guessing
	// the token costs the guesser like any other request.
	// Registered before the group, so the group's requireAdmin never
	// sees it: other gateways call it with the peer token.
	app.Post("/v1/admin/invalidate", limit(costs.Default), g.requirePeer, g.adminInvalidate)
	admin := app.Group("/v1/admin", limit(costs.Default), g.requireAdmin)
	admin.Post("/purge", g.adminPurge)
	admin.Post("/accounts/delete", g.adminDeleteAccount)
	admin.Get("/accounts/erasures", g.adminErasures)
	g.suspensionRoutes(admin)
	g.moderationRoutes(admin)
	g.complianceRoutes(admin)
	g.partnerRoutes(admin)
	g.analyticsRoutes(app, with, account, limit(costs.Default))

	g.embedRoutes(app, limit(costs.Default))
	g.dashboardRoutes(app, limit(costs.Default))
	g.webRoutes(app, with, limit)

	app.Use(g.notFound)
}

// App exposes the Fiber app for in-process tests (app.Test).
func (g *Gateway) App() *fiber.App { return g.app }

// Serve answers HTTP on ln until Shutdown, the hit path in front of the
// app.
func (g *Gateway) Serve(ln net.Listener) error { return g.app.Listener(ln) }

// Shutdown stops accepting connections, waits for in-flight requests and
// the generations they started (and for queued mail) until ctx ends, and
// stops background work.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stop()
	if g.jobs != nil {
		g.jobs.stop(ctx)
	}
	err := g.app.ShutdownWithContext(ctx)
	// Generations whose callers gave up still finish and are stored.
	err = errors.Join(err, g.cache.Drain(ctx))
	g.history.close()
	g.mail.wait(ctx)
	select {
	case <-g.done:
	case <-ctx.Done():
	}
	return err
}

// Ready reports whether the gateway can serve generations: it knows the
// model catalogue and at least one inference endpoint is healthy.
func (g *Gateway) Ready() bool { return len(g.catalog.list()) > 0 && g.gen.Ready() }

// RefreshModels reads the model catalogue from the inference tier now.
func (g *Gateway) RefreshModels(ctx context.Context) error { return g.catalog.refresh(ctx, g.gen) }

// WriteBufferSize is the size of the gateway's per-connection write
// buffer: a response up to this size (headers included) leaves in one
// write. internal/loadbench gives its bare baseline server the same.
const WriteBufferSize = 32 << 10
