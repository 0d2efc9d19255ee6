package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/retro"
)

// runInference runs the inference tier alone: the Connect service, gRPC
// health and /metrics on one h2c listener.
func runInference(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inference", flag.ContinueOnError)
	addr := fs.String("addr", ":9090", "listen address")
	token := fs.String("inference-token", "", "bearer token callers must present (empty: none)")
	maxConc := fs.Int("max-concurrent", 0, "concurrent generations before requests queue (0: 2×CPUs)")
	genTimeout := fs.Duration("generate-timeout", 2*time.Minute, "upper bound on one generation")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tier, err := newTier(inference.ServerConfig{Token: *token, MaxConcurrent: *maxConc, GenerateTimeout: *genTimeout}, reg, logger)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", tier.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := newH2CServer(mux)
	fmt.Fprintf(stdout, "imagegate inference listening on http://%s\n", ln.Addr())
	logger.Info("inference tier listening", "addr", ln.Addr().String(), "backends", "retro")
	return serveUntil(ctx, srv, ln, 30*time.Second)
}

// newTier builds the inference service with the backends this binary ships.
// retro is a procedural generator, not a neural model; GPU backends plug in
// here.
func newTier(cfg inference.ServerConfig, reg prometheus.Registerer, logger *slog.Logger) (*inference.Server, error) {
	return inference.NewServer(cfg, []inference.Backend{retro.New()}, reg, logger)
}

// newH2CServer serves HTTP/1.1 and cleartext HTTP/2, as Connect and gRPC
// clients on loopback or behind a TLS-terminating proxy expect.
func newH2CServer(h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// serveUntil serves until ctx ends, then drains in-flight requests for up
// to grace.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
