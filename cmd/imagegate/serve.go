package main

import (
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

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/store"
)

// serveConfig is everything `imagegate serve` is told.
type serveConfig struct {
	Addr             string
	DataDir          string
	InferenceURLs    []string
	InferenceToken   string
	InferenceTimeout time.Duration
	SigningKey       string
	SigningKeyPrev   string
	LinkTTL          time.Duration
	L1Bytes          int64
	Gateway          gateway.Config
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	var inferenceURLs string
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", ":8080", "listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", "./data", "bbolt files, local objects and keys")
	fs.StringVar(&cfg.Gateway.PublicURL, "public-url", "", "base URL used in links (empty: derived from the request)")
	fs.StringVar(&cfg.Gateway.CDNURL, "cdn-url", "", "base URL of output links when a CDN fronts them")
	fs.StringVar(&inferenceURLs, "inference", "", "comma-separated inference tier URLs (empty: run the tier in-process)")
	fs.StringVar(&cfg.InferenceToken, "inference-token", "", "bearer token sent to the inference tier")
	fs.DurationVar(&cfg.InferenceTimeout, "inference-timeout", 60*time.Second, "deadline of one inference attempt; failures are retried on another endpoint")
	fs.DurationVar(&cfg.Gateway.RequestTimeout, "request-timeout", 90*time.Second, "deadline of one generation request")
	fs.StringVar(&cfg.SigningKey, "signing-key", "", "hex key (≥32 bytes) for signed output links (empty: generated once in the data dir)")
	fs.StringVar(&cfg.SigningKeyPrev, "signing-key-previous", "", "hex key still accepted during rotation")
	fs.DurationVar(&cfg.LinkTTL, "link-ttl", 24*time.Hour, "lifetime of signed output links")
	fs.Int64Var(&cfg.L1Bytes, "l1-bytes", 256<<20, "memory cache size in bytes")
	fs.StringVar(&cfg.Gateway.DefaultModel, "default-model", "", "model used when a request names none (empty: the tier's first)")
	fs.StringVar(&cfg.Gateway.DefaultSize, "default-size", "512x512", "size used when a request names none")
	fs.IntVar(&cfg.Gateway.MaxUploadBytes, "max-upload-bytes", 20<<20, "largest accepted reference image upload")
	fs.IntVar(&cfg.Gateway.MaxUploadPixels, "max-upload-pixels", 4096*4096, "largest accepted reference image, in pixels")
	fs.IntVar(&cfg.Gateway.MaxPromptBytes, "max-prompt-bytes", 2000, "longest accepted prompt")
	fs.BoolVar(&cfg.Gateway.HSTS, "hsts", false, "send Strict-Transport-Security (enable when served over HTTPS)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	cfg.InferenceURLs = splitList(inferenceURLs)
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}

	sys, err := newSystem(cfg, logger)
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
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
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
func newSystem(cfg serveConfig, logger *slog.Logger) (_ *system, err error) {
	s := &system{}
	defer func() {
		if err != nil {
			s.close(context.Background())
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	db, err := store.Open(filepath.Join(cfg.DataDir, "imagegate.db"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return db.Close() })

	objects, err := edge.NewLocal(filepath.Join(cfg.DataDir, "objects"))
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cache.Config{Path: filepath.Join(cfg.DataDir, "cache.db"), L1MaxBytes: cfg.L1Bytes}, objects, logger)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { return c.Close() })

	signer, err := newSigner(cfg)
	if err != nil {
		return nil, err
	}

	urls, token := cfg.InferenceURLs, cfg.InferenceToken
	s.inferenceDesc = strings.Join(urls, ",")
	if len(urls) == 0 {
		// One code path: the in-process tier is still reached over Connect
		// on loopback, with a token nobody else knows.
		url, tok, closeTier, err := startLocalTier(reg, logger)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, closeTier)
		urls, token = []string{url}, tok
		s.inferenceDesc = "in-process (retro, procedural)"
	}
	pool, err := inference.NewPool(inference.PoolConfig{URLs: urls, Token: token, CallTimeout: cfg.InferenceTimeout, Registerer: reg}, logger)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func(context.Context) error { pool.Close(); return nil })

	g, err := gateway.New(cfg.Gateway, gateway.Deps{
		Cache: c, Signer: signer, Inference: pool, Models: db,
		Registry: reg, Gatherer: reg, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	s.gateway = g
	s.closers = append(s.closers, g.Shutdown)
	return s, nil
}

func newSigner(cfg serveConfig) (*edge.Signer, error) {
	var cur, prev []byte
	var err error
	if cfg.SigningKey != "" {
		if cur, err = hex.DecodeString(cfg.SigningKey); err != nil {
			return nil, fmt.Errorf("--signing-key: not hex: %w", err)
		}
	} else if cur, err = edge.LoadOrCreateKey(filepath.Join(cfg.DataDir, "signing.key")); err != nil {
		return nil, err
	}
	if cfg.SigningKeyPrev != "" {
		if prev, err = hex.DecodeString(cfg.SigningKeyPrev); err != nil {
			return nil, fmt.Errorf("--signing-key-previous: not hex: %w", err)
		}
	}
	return edge.NewSigner(edge.SignerConfig{Current: cur, Previous: prev, TTL: cfg.LinkTTL}, time.Now)
}

// startLocalTier runs the inference service on a loopback port.
func startLocalTier(reg prometheus.Registerer, logger *slog.Logger) (url, token string, stop func(context.Context) error, err error) {
	var b [32]byte
	rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	tier, err := newTier(inference.ServerConfig{Token: token}, reg, logger.With("component", "inference"))
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
