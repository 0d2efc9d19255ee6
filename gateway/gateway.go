package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
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
	// Models persists the model catalogue; optional.
	Models modelStore
	// Registry receives the gateway's metrics; Gatherer serves /metrics.
	Registry prometheus.Registerer
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
}

// Gateway is the HTTP edge. Create it with New, run it with Serve, stop it
// with Shutdown.
type Gateway struct {
	cfg     Config
	app     *fiber.App
	cache   *cache.Cache
	signer  *edge.Signer
	gen     Generator
	catalog *catalog
	metrics *metrics
	logger  *slog.Logger
	decodes chan struct{} // bounds concurrent reference decodes

	stop context.CancelFunc
	done chan struct{}
}

// New builds the gateway and starts its model-catalogue refresher.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Cache == nil || deps.Signer == nil || deps.Inference == nil {
		return nil, errors.New("gateway: cache, signer and inference are required")
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
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
		cfg:     cfg,
		cache:   deps.Cache,
		signer:  deps.Signer,
		gen:     deps.Inference,
		catalog: newCatalog(deps.Models, logger),
		metrics: m,
		logger:  logger,
		decodes: make(chan struct{}, 4),
		done:    make(chan struct{}),
	}
	g.app = fiber.New(fiber.Config{
		AppName:               "imagegate",
		DisableStartupMessage: true,
		// The multipart edit route is the largest body we accept; JSON
		// routes check their own, smaller limit.
		BodyLimit:    cfg.MaxUploadBytes + 64<<10,
		ReadTimeout:  30 * time.Second,
		WriteTimeout: cfg.RequestTimeout + 10*time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorHandler: errorHandler(logger),
		// Image bytes are already compressed; JSON is small.
		CompressedFileSuffix: "",
	})
	g.routes(deps.Gatherer)

	ctx, cancel := context.WithCancel(context.Background())
	g.stop = cancel
	go func() {
		defer close(g.done)
		g.catalog.run(ctx, g.gen, cfg.ModelRefresh)
	}()
	return g, nil
}

func (g *Gateway) routes(gatherer prometheus.Gatherer) {
	app := g.app
	app.Use(recover.New())
	app.Use(g.securityHeaders)
	app.Use(g.metrics.middleware)

	app.Get("/healthz", g.healthz)
	app.Get("/readyz", g.readyz)
	if gatherer != nil {
		app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	}
	app.Post("/v1/images/generations", g.generations)
	app.Post("/v1/images/edits", g.edits)
	app.Get("/o/:name", g.object)
	app.Use(func(c *fiber.Ctx) error { return fiber.ErrNotFound })
}

// App exposes the Fiber app for in-process tests (app.Test).
func (g *Gateway) App() *fiber.App { return g.app }

// Serve answers HTTP on ln until Shutdown.
func (g *Gateway) Serve(ln net.Listener) error { return g.app.Listener(ln) }

// Shutdown stops accepting connections, waits for in-flight requests until
// ctx ends, and stops background work.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stop()
	err := g.app.ShutdownWithContext(ctx)
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
