package gateway

import (
	"bytes"
	"compress/gzip"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/store"
)

// A compressed body is refused before anything decodes it: a few KiB of
// gzip would otherwise inflate into gigabytes inside c.Body().
func TestCompressedBodiesAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zw.Write([]byte(`{"prompt":"`))
	zw.Write(bytes.Repeat([]byte("a"), 64<<20)) // 64 MiB of prompt in ~64 KiB
	zw.Write([]byte(`","size":"256x256"}`))
	zw.Close()
	if bomb.Len() > 1<<20 {
		t.Fatalf("the bomb is %d bytes; it should be small", bomb.Len())
	}
	for _, tc := range []struct{ path, encoding string }{
		{"/v1/images/generations", "gzip"},
		{"/v1/auth/login", "gzip"},
		{"/v1/auth/login", "deflate"},
		{"/v1/images/edits", "br"},
		{"/v1/billing/webhook", "gzip"},
		{"/v1/auth/login", "identity, gzip"},
	} {
		req, _ := http.NewRequest("POST", e.url+tc.path, bytes.NewReader(bomb.Bytes()))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", tc.encoding)
		resp, body := e.do(req)
		if resp.StatusCode != http.StatusUnsupportedMediaType || apiErrorOf(t, body).Code != "encoded_body" {
			t.Errorf("%s with Content-Encoding %q: %d %s, want 415 encoded_body", tc.path, tc.encoding, resp.StatusCode, body)
		}
	}
	// Two headers, the second smuggling gzip, are refused too.
	req, _ := http.NewRequest("POST", e.url+"/v1/auth/login", bytes.NewReader(bomb.Bytes()))
	req.Header["Content-Encoding"] = []string{"identity", "gzip"}
	if resp, _ := e.do(req); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("duplicate Content-Encoding: %d, want 415", resp.StatusCode)
	}
	if e.generations() != 0 {
		t.Errorf("a refused body reached the GPU")
	}
	// identity is no coding at all.
	req, _ = http.NewRequest("POST", e.url+"/v1/images/generations", strings.NewReader(`{"prompt":"plain","size":"256x256"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "identity")
	if resp, body := e.do(req); resp.StatusCode != 200 {
		t.Errorf("Content-Encoding identity: %d %s, want 200", resp.StatusCode, body)
	}
}

// The JSON and form routes take at most MaxJSONBytes, whatever the
// server's larger limit for image uploads.
func TestJSONRoutesRefuseLargeBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	big := `{"email":"a@example.com","password":"` + strings.Repeat("p", e.gw.cfg.MaxJSONBytes) + `"}`
	for _, path := range []string{"/v1/auth/login", "/v1/auth/signup", "/v1/auth/password-reset", "/v1/analytics/pageview"} {
		req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(big))
		req.Header.Set("Content-Type", "application/json")
		resp, body := e.do(req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || apiErrorOf(t, body).Code != "body_too_large" {
			t.Errorf("%s with %d bytes: %d %s, want 413 body_too_large", path, len(big), resp.StatusCode, body)
		}
	}
	if _, err := e.db.AccountByEmail("a@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused sign-up made an account: %v", err)
	}
}
