package inference

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"image/png"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// protoRecorder notes the protocol of every request that reaches the tier.
type protoRecorder struct {
	mu     sync.Mutex
	protos []string
	next   http.Handler
}

func (r *protoRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	proto := req.Proto
	if req.TLS == nil {
		proto += " without TLS"
	}
	r.protos = append(r.protos, proto)
	r.mu.Unlock()
	r.next.ServeHTTP(w, req)
}

func (r *protoRecorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.protos...)
}

// serveTLS serves h over TLS with cert, offering HTTP/2 and HTTP/1.1 by
// ALPN, as `imagegate inference --tls-cert-file …` does.
func serveTLS(t testing.TB, h http.Handler, cert tls.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.EnableHTTP2 = true
	// Refused handshakes are the point of some tests: keep them out of
	// the output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestPoolOverTLS(t *testing.T) {
	t.Parallel()
	const token = "tls-tier-token-0123456789"
	// A private CA, as an operator makes for a GPU host and hands to the
	// gateways (--inference-ca-file).
	ca := testpeer.NewCA(t, "imagegate test CA")
	stranger := testpeer.NewCA(t, "some other CA")
	backend := newTestBackend("tiny")
	tier, err := NewServer(ServerConfig{Token: token}, []Backend{backend}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &protoRecorder{next: tier.Handler()}
	srv := serveTLS(t, rec, ca.Issue(t, time.Now().Add(time.Hour), "127.0.0.1").TLS)
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("test server URL %s is not https", srv.URL)
	}
	req := Request{Prompt: "over tls", Width: 8, Height: 8, Seed: 7, Style: "auto"}

	t.Run("trusted CA", func(t *testing.T) {
		p, err := newPool(PoolConfig{URLs: []string{srv.URL}, Token: token, RootCAs: ca.Pool()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		// The health probe travels the same way and must pass too.
		p.probeAll(t.Context())
		if !p.Ready() {
			t.Fatal("the health probe over TLS failed")
		}
		before := backend.calls.Load()
		res, info, err := p.Generate(t.Context(), "", req)
		if err != nil {
			t.Fatalf("Generate over TLS: %v", err)
		}
		if got := backend.calls.Load() - before; got != 1 {
			t.Errorf("backend ran %d times, want 1", got)
		}
		if info.Name != "tiny" {
			t.Errorf("model %q, want tiny", info.Name)
		}
		if cfg, err := png.DecodeConfig(bytes.NewReader(res.Image)); err != nil || cfg.Width != 8 {
			t.Errorf("result is not an 8-pixel PNG: %v %+v", err, cfg)
		}
		for _, proto := range rec.seen() {
			if proto != "HTTP/2.0" {
				t.Errorf("a call arrived as %q, want HTTP/2.0 over TLS", proto)
			}
		}
	})

	// Without the right CA the pool must not talk to the tier at all, and
	// must say why.
	for _, tc := range []struct {
		name  string
		roots *x509.CertPool
	}{
		{"system roots", nil},
		{"another CA", stranger.Pool()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newPool(PoolConfig{URLs: []string{srv.URL}, Token: token, RootCAs: tc.roots}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			before := backend.calls.Load()
			_, _, err = p.Generate(t.Context(), "", req)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
				t.Errorf("the error does not say the certificate is untrusted: %v", err)
			}
			if got := backend.calls.Load() - before; got != 0 {
				t.Errorf("backend ran %d times through an untrusted connection", got)
			}
		})
	}

	// TLS protects the token in transit; it does not replace it.
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"wrong token", "not-the-tier-token-0000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newPool(PoolConfig{URLs: []string{srv.URL}, Token: tc.token, RootCAs: ca.Pool()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			before := backend.calls.Load()
			_, _, err = p.Generate(t.Context(), "", req)
			if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
				t.Errorf("code %v (%v), want unauthenticated", code, err)
			}
			if got := backend.calls.Load() - before; got != 0 {
				t.Errorf("backend ran %d times for a caller without the token", got)
			}
		})
	}
}

func TestPoolWarnsOfCleartextToken(t *testing.T) {
	t.Parallel()
	const token = "cleartext-check-token-42"
	for _, tc := range []struct {
		name  string
		url   string
		token string
		warn  bool
	}{
		{"private address", "http://10.0.0.7:9090", token, true},
		{"DNS name", "http://gpu.internal:9090", token, true},
		{"public address", "http://203.0.113.9:9090", token, true},
		{"loopback v4", "http://127.0.0.1:9090", token, false},
		{"loopback v6", "http://[::1]:9090", token, false},
		{"localhost", "http://LocalHost:9090", token, false},
		{"TLS", "https://gpu.example.com", token, false},
		{"no token", "http://10.0.0.7:9090", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			// newPool starts no probes: nothing is dialled.
			p, err := newPool(PoolConfig{URLs: []string{tc.url}, Token: tc.token}, logger)
			if err != nil {
				t.Fatal(err)
			}
			p.Close()
			warned := strings.Contains(logs.String(), "clear text")
			if diff := cmp.Diff(tc.warn, warned); diff != "" {
				t.Errorf("warned (-want +got):\n%s\nlogs: %s", diff, logs.String())
			}
			if tc.token != "" && strings.Contains(logs.String(), tc.token) {
				t.Errorf("the log carries the token: %s", logs.String())
			}
		})
	}
}
