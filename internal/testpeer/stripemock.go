package testpeer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// StripeTestKey is a secret key stripe-mock accepts.
const StripeTestKey = "sk_test_123"

// StripeServer is a running stripe-mock: Stripe's official mock of its
// API, which checks every request against Stripe's OpenAPI specification
// (unknown or malformed parameters are refused with 400, as Stripe does)
// and answers with fixture objects. It is stateless: it keeps nothing,
// sends no webhooks, and ignores idempotency keys. So that tests can check
// what they sent, requests reach it through a recording proxy.
type StripeServer struct {
	// URL is the API base to give stripe-go (the recording proxy).
	URL string
	// MockURL is stripe-mock itself, bypassing the recorder.
	MockURL string

	mu   sync.Mutex
	reqs []StripeRequest
}

// StripeRequest is one API request as the recorder saw it.
type StripeRequest struct {
	Method string
	Path   string
	// IdempotencyKey is the Idempotency-Key header.
	IdempotencyKey string
	// StripeVersion is the Stripe-Version header.
	StripeVersion string
	// Form is the form-encoded body (POST) or query (GET).
	Form url.Values
}

// StripeMock starts stripe-mock on a free loopback port, behind a
// recording proxy, and returns once it answers an authenticated request.
// It is stopped when t ends. One server per top-level test is enough:
// being stateless, it can serve every subtest.
func StripeMock(t testing.TB) *StripeServer {
	t.Helper()
	bin := Tool(t, "stripe-mock", "go install github.com/stripe/stripe-mock@v0.203.0")
	s := &StripeServer{}
	// Its HTTPS listener is put on a free port too: left alone it takes
	// :12112, which two servers (parallel tests) cannot share.
	StartOnFreePort(t, bin, nil, func(addr string) ([]string, func(ctx context.Context) error) {
		s.MockURL = "http://" + addr
		return []string{"-http-addr", addr, "-https-addr", Addr(FreePort(t))}, func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MockURL+"/v1/customers", nil)
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+StripeTestKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("stripe-mock answered %s", resp.Status)
			}
			return nil
		}
	})
	target, err := url.Parse(s.MockURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		form := r.URL.Query()
		if r.Method == http.MethodPost {
			if form, err = url.ParseQuery(string(body)); err != nil {
				http.Error(w, "recorder: body is not form-encoded: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, StripeRequest{
			Method: r.Method, Path: r.URL.Path, IdempotencyKey: r.Header.Get("Idempotency-Key"),
			StripeVersion: r.Header.Get("Stripe-Version"), Form: form,
		})
		s.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(rec.Close)
	s.URL = rec.URL
	return s
}

// Requests returns the requests recorded so far, oldest first.
func (s *StripeServer) Requests() []StripeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]StripeRequest(nil), s.reqs...)
}

// RequestsTo returns the recorded requests with method and path.
func (s *StripeServer) RequestsTo(method, path string) []StripeRequest {
	var out []StripeRequest
	for _, r := range s.Requests() {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}
