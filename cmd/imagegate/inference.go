package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegate/imagegate/inference"
)

// runInference runs the inference tier alone: the Connect service, gRPC
// health and /metrics on one listener, speaking h2c, or HTTPS (HTTP/2 by
// ALPN) when given a certificate.
func runInference(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inference", flag.ContinueOnError)
	addr := fs.String("addr", ":9090", "listen address")
	token := fs.String("inference-token", "", "bearer token callers must present (empty: none; required with --tls-cert-file)")
	certFile := fs.String("tls-cert-file", "", "PEM certificate chain: serve HTTPS (HTTP/2 by ALPN) instead of h2c; re-read when the file changes")
	keyFile := fs.String("tls-key-file", "", "PEM private key of --tls-cert-file")
	maxConc := fs.Int("max-concurrent", 0, "concurrent generations before requests queue (0: 2×CPUs)")
	genTimeout := fs.Duration("generate-timeout", 2*time.Minute, "upper bound on one generation; also how long shutdown waits for generations in flight")
	configFile := fs.String("config", "", "TOML file whose [inference] section lists models, backends (comfyui, openai) and queue classes (see README; empty: retro alone)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := checkTLSFlags(*certFile, *keyFile, *token); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	var certs *certReloader
	if *certFile != "" {
		if certs, err = newCertReloader(*certFile, *keyFile, logger); err != nil {
			return err
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	setup, err := loadTierConfig(*configFile)
	if err != nil {
		return err
	}
	tier, err := newTier(inference.ServerConfig{Token: *token, MaxConcurrent: *maxConc, GenerateTimeout: *genTimeout}, setup, reg, logger)
	if err != nil {
		return err
	}
	var metrics http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if certs != nil {
		// A tier that serves TLS faces networks we do not control: it
		// tells strangers nothing, its figures included.
		metrics = requireToken(*token, metrics)
	}
	mux := http.NewServeMux()
	mux.Handle("/", tier.Handler())
	mux.Handle("GET /metrics", metrics)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	// Generations in flight get their whole budget to finish on SIGTERM.
	grace := *genTimeout + 5*time.Second
	if certs == nil {
		warnIfExposed(logger, ln.Addr(), *token)
		srv := newH2CServer(mux)
		fmt.Fprintf(stdout, "imagegate inference listening on http://%s\n", ln.Addr())
		logger.Info("inference tier listening", "addr", ln.Addr().String(), "tls", false, "models", setup.names())
		return serveUntil(ctx, srv, func() error { return srv.Serve(ln) }, grace)
	}
	srv := newTLSServer(mux, certs)
	fmt.Fprintf(stdout, "imagegate inference listening on https://%s\n", ln.Addr())
	logger.Info("inference tier listening", "addr", ln.Addr().String(), "tls", true, "models", setup.names())
	return serveUntil(ctx, srv, func() error { return srv.ServeTLS(ln, "", "") }, grace)
}

// checkTLSFlags reports what is wrong with the TLS settings: both files or
// neither, and a token whenever TLS is on, because TLS protects the token
// in transit but does not replace it.
func checkTLSFlags(certFile, keyFile, token string) error {
	var errs []error
	if (certFile == "") != (keyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if certFile != "" && token == "" {
		errs = append(errs, errors.New("--tls-cert-file needs --inference-token: a tier reachable over TLS is reachable by strangers"))
	}
	return errors.Join(errs...)
}

// warnIfExposed logs when a plaintext listener is reachable from beyond this
// machine: without a token anyone there may generate, and with one the token
// crosses the network in clear text. Both are fine on a private network,
// which the tier cannot recognise, so it warns rather than refuses.
func warnIfExposed(logger *slog.Logger, a net.Addr, token string) {
	if ta, ok := a.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return
	}
	if token == "" {
		logger.Warn("inference tier accepts any caller: set --inference-token unless only trusted hosts can reach it", "addr", a.String())
		return
	}
	logger.Warn("inference token crosses the network in clear text: serve TLS (--tls-cert-file) unless the network is private", "addr", a.String())
}

// newTier builds the inference service from the catalogue in setup. retro,
// a procedural generator and not a neural model, is always among the
// backends; comfyui and openai models come from --config.
func newTier(cfg inference.ServerConfig, setup tierSetup, reg prometheus.Registerer, logger *slog.Logger) (*inference.Server, error) {
	cfg.Queue, cfg.Terms = setup.queue, setup.terms
	return inference.NewServer(cfg, setup.backends, reg, logger)
}

// names lists the models, the default first, for the startup log.
func (t tierSetup) names() string {
	names := make([]string, len(t.backends))
	for i, b := range t.backends {
		names[i] = b.Info().Name + " (" + b.Info().Kind + ")"
	}
	return strings.Join(names, ", ")
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

// newTLSServer serves HTTP/2 and HTTP/1.1 over TLS, chosen by ALPN, with
// the certificate certs holds at each handshake. Serve it with
// ServeTLS(ln, "", "").
func newTLSServer(h http.Handler, certs *certReloader) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Server{
		Handler:   h,
		Protocols: p,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.GetCertificate,
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// serveUntil runs serve until ctx ends, then drains in-flight requests for
// up to grace.
func serveUntil(ctx context.Context, srv *http.Server, serve func() error, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
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

// requireToken admits only requests with "Authorization: Bearer <token>",
// comparing digests so the time taken says nothing about the token.
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(got))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "missing or invalid bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// certReloader hands out the key pair kept in two PEM files and reads them
// again when either file changes, so a renewed certificate is served
// without a restart. A pair that fails to load is logged and the previous
// one kept: an expiring certificate beats no service at all. It is safe for
// concurrent use.
type certReloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp // of certFile and keyFile when last read
}

// fileStamp tells whether a file may have changed since it was last seen.
type fileStamp struct {
	mod     time.Time
	size    int64
	missing bool
}

// newCertReloader loads the pair in certFile and keyFile, failing if it
// cannot be used.
func newCertReloader(certFile, keyFile string, logger *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, logger: logger}
	r.stamp = r.stamps()
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert = cert
	logger.Info("TLS certificate loaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair, re-read
// first if its files changed. Stat calls are cheap next to a handshake,
// and HTTP/2 keeps connections (and so handshakes) few.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := r.stamps()
	if stamp == r.stamp {
		return r.cert, nil
	}
	// Remember what was seen even if it fails to load, so one bad write
	// is logged once, not at every handshake; the next write is tried.
	r.stamp = stamp
	cert, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.logger.Error("TLS certificate files changed but cannot be used; still serving the previous certificate",
			"err", err, "not_after", r.cert.Leaf.NotAfter)
		return r.cert, nil
	}
	r.cert = cert
	r.logger.Info("TLS certificate reloaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	return r.cert, nil
}

func (r *certReloader) stamps() [2]fileStamp {
	var out [2]fileStamp
	for i, path := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(path)
		if err != nil {
			out[i] = fileStamp{missing: true}
			continue
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out
}

// loadKeyPair reads a certificate chain and its key, refusing a pair whose
// leaf has expired.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--tls-cert-file: %w", err)
		}
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("--tls-cert-file: certificate expired at %s", cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	return &cert, nil
}

// loadCAFile returns the system's certificate roots plus the CA
// certificates in the PEM file at path, for reaching https:// inference
// tiers whose certificates a private CA issued (--inference-ca-file). An
// empty path means the system roots alone (nil).
func loadCAFile(path string) (*x509.CertPool, error) {
	return loadCAFileFor("--inference-ca-file", path)
}

// loadCAFileFor is loadCAFile for the flag named flagName.
func loadCAFileFor(flagName, path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		// No system roots here (a scratch image): the file alone.
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s %s: no PEM certificates in it", flagName, path)
	}
	return pool, nil
}
