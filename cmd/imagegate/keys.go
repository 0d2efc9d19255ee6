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
	"os"
	"path/filepath"
	"time"

	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/keyservice"
)

const keysUsage = `imagegate keys — the key service of a fleet on one PostgreSQL database

Usage:
  imagegate keys serve --key-dir DIR --key-service-token TOKEN [--addr :8090] [--tls-cert-file F --tls-key-file F]

serve keeps the key files that seal personal data (DIR/imagegate.db.keys,
.daykeys, .reportkeys) for every gateway started with --key-service-url,
so gateways on separate hosts and regions need no shared disk. Run one,
on one volume; back that volume up as the key files (docs/DEPLOY.md 2.7).
`

// runKeys is "imagegate keys <command>".
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "keys", keysUsage, map[string]command{"serve": runKeysServe}, args, stdout, stderr)
}

// keyServiceFlags are a key service client's settings, for serve and the
// operator commands that open the PostgreSQL store.
type keyServiceFlags struct {
	URL, Token, CAFile string
}

func (k *keyServiceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.URL, "key-service-url", "", "with --database-url: URL of the fleet's `imagegate keys serve`, which keeps the key files for every gateway, e.g. http://keys.process.<app>.internal:8090 (empty: the key files in --key-dir)")
	fs.StringVar(&k.Token, "key-service-token", "", "shared secret (≥32 chars) the key service and its gateways present")
	fs.StringVar(&k.CAFile, "key-service-ca-file", "", "PEM file of CA certificates trusted, besides the system roots, for an https:// --key-service-url")
}

// check reports settings that cannot work together.
func (k keyServiceFlags) check(databaseURL, keyDir string) error {
	if k.URL == "" {
		if k.CAFile != "" {
			return errors.New("--key-service-ca-file needs --key-service-url")
		}
		return nil
	}
	var errs []error
	if databaseURL == "" {
		errs = append(errs, errors.New("--key-service-url needs --database-url: the embedded store keeps its key files in --data-dir"))
	}
	if keyDir != "" {
		errs = append(errs, errors.New("--key-service-url and --key-dir are exclusive: the key files are the service's"))
	}
	if len(k.Token) < keyservice.MinTokenLen {
		errs = append(errs, errors.New("--key-service-url needs --key-service-token of at least 32 characters"))
	}
	return errors.Join(errs...)
}

// client is the key service client, or nil without --key-service-url.
func (k keyServiceFlags) client() (store.KeyBackend, error) {
	if k.URL == "" {
		return nil, nil
	}
	roots, err := loadCAFileFor("--key-service-ca-file", k.CAFile)
	if err != nil {
		return nil, err
	}
	c, err := keyservice.NewClient(keyservice.ClientConfig{URL: k.URL, Token: k.Token, RootCAs: roots})
	if err != nil {
		return nil, fmt.Errorf("--key-service-url: %w", err)
	}
	return c, nil
}

func runKeysServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys serve", flag.ContinueOnError)
	addr := fs.String("addr", ":8090", "listen address of the key service")
	keyDir := fs.String("key-dir", "./data", "directory of the key files it keeps (imagegate.db.keys, .daykeys, .reportkeys), created if missing; after `imagegate store copy`, the copied data directory")
	token := fs.String("key-service-token", "", "shared secret (≥32 chars) every gateway presents (required)")
	certFile := fs.String("tls-cert-file", "", "PEM certificate chain: serve HTTPS instead of HTTP; re-read when the file changes")
	tlsKeyFile := fs.String("tls-key-file", "", "PEM private key of --tls-cert-file")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var errs []error
	if len(*token) < keyservice.MinTokenLen {
		errs = append(errs, errors.New("keys serve: --key-service-token (or IMAGEGATE_KEY_SERVICE_TOKEN) of at least 32 characters is required"))
	}
	if (*certFile == "") != (*tlsKeyFile == "") {
		errs = append(errs, errors.New("keys serve: --tls-cert-file and --tls-key-file go together"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*keyDir, 0o700); err != nil {
		return fmt.Errorf("keys serve: --key-dir: %w", err)
	}
	files, err := store.OpenKeyFiles(filepath.Join(*keyDir, "imagegate.db"))
	if err != nil {
		return fmt.Errorf("keys serve: %w", err)
	}
	defer files.Close()
	svc, err := keyservice.NewServer(keyservice.ServerConfig{Keys: files, Token: *token, Logger: logger})
	if err != nil {
		return fmt.Errorf("keys serve: %w", err)
	}
	var certs *certReloader
	if *certFile != "" {
		if certs, err = newCertReloader(*certFile, *tlsKeyFile, logger); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           svc,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if certs == nil {
		if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
			logger.Warn("key service without TLS: keys and the token cross the network in clear text; serve TLS (--tls-cert-file) unless the network is private and encrypted (Fly's 6PN is)", "addr", ln.Addr().String())
		}
		fmt.Fprintf(stdout, "imagegate keys listening on %s\n", displayURL(ln.Addr()))
		logger.Info("key service listening", "addr", ln.Addr().String(), "tls", false, "key_dir", *keyDir)
		return serveUntil(ctx, srv, func() error { return srv.Serve(ln) }, 10*time.Second)
	}
	srv.TLSConfig = newTLSServer(nil, certs).TLSConfig
	fmt.Fprintf(stdout, "imagegate keys listening on https://%s\n", ln.Addr())
	logger.Info("key service listening", "addr", ln.Addr().String(), "tls", true, "key_dir", *keyDir)
	return serveUntil(ctx, srv, func() error { return srv.ServeTLS(ln, "", "") }, 10*time.Second)
}
