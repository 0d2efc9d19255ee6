package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/imagegate/imagegate/internal/testpeer"
)

func newTestS3(t *testing.T, cfg S3Config) *S3 {
	t.Helper()
	s, err := NewS3(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newFakeS3 returns a store over a fresh bucket of an in-process gofakes3
// server; wrap, if not nil, sits in front of the fake to watch or disturb
// requests. gofakes3 checks no signatures: TestS3Versitygw covers those.
func newFakeS3(t *testing.T, wrap func(http.Handler) http.Handler) *S3 {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket("imagegate"); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = gofakes3.New(backend).Server()
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return newTestS3(t, S3Config{Endpoint: srv.URL, Bucket: "imagegate", AccessKeyID: "AKIDFAKE", SecretAccessKey: "fake-secret"})
}

// requestCounter counts requests by method and lets a test answer some of
// them itself.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
	puts   map[string]http.Header // the last PUT's headers, by path
	// intercept, if set, may answer a request (and return true) instead of
	// the wrapped server; n is the request's number among its method's.
	intercept func(w http.ResponseWriter, r *http.Request, n int) bool
}

func (c *requestCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		if c.counts == nil {
			c.counts = map[string]int{}
		}
		c.counts[r.Method]++
		n := c.counts[r.Method]
		if r.Method == http.MethodPut {
			if c.puts == nil {
				c.puts = map[string]http.Header{}
			}
			c.puts[r.URL.Path] = r.Header.Clone()
		}
		c.mu.Unlock()
		if c.intercept != nil && c.intercept(w, r, n) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *requestCounter) putHeader(path string) http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts[path]
}

func (c *requestCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]int{}
	for k, v := range c.counts {
		m[k] = v
	}
	return m
}

func TestS3ConformanceGofakes3(t *testing.T) {
	t.Parallel()
	testObjectStore(t, func(t *testing.T) objectStore { return newFakeS3(t, nil) })
}

// TestS3Versitygw runs everything that needs a server checking signatures
// against one versitygw process; each subtest gets its own bucket.
func TestS3Versitygw(t *testing.T) {
	t.Parallel()
	srv := testpeer.Versitygw(t)
	open := func(t *testing.T, mutate ...func(*S3Config)) *S3 {
		t.Helper()
		cfg := S3Config{Endpoint: srv.Endpoint, Bucket: srv.NewBucket(t), AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}
		for _, m := range mutate {
			m(&cfg)
		}
		return newTestS3(t, cfg)
	}

	t.Run("conformance", func(t *testing.T) {
		t.Parallel()
		testObjectStore(t, func(t *testing.T) objectStore { return open(t) })
	})
	t.Run("metadata", func(t *testing.T) {
		t.Parallel()
		testS3Metadata(t, open(t))
	})
	t.Run("check", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		if err := s.Check(t.Context()); err != nil {
			t.Errorf("Check = %v, want nil", err)
		}
		missing := open(t, func(c *S3Config) { c.Bucket = "no-such-bucket" })
		if err := missing.Check(t.Context()); err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAccessDenied) {
			t.Errorf("Check of a missing bucket = %v, want an error that is neither ErrNotFound nor ErrAccessDenied", err)
		}
		if _, err := missing.Get(t.Context(), "k/v1-x.json"); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Get from a missing bucket = %v, want an error other than ErrNotFound", err)
		}
	})
	t.Run("presign", func(t *testing.T) {
		t.Parallel()
		testS3Presign(t, open(t))
	})
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		testS3Refused(t, srv, open(t))
	})
}

// testS3Metadata checks what the server stored besides the bytes:
// Content-Type always, the immutable Cache-Control on outputs only.
func testS3Metadata(t *testing.T, s *S3) {
	ctx := t.Context()
	for _, tc := range []struct {
		name, contentType string
		want              [2]string // Content-Type, Cache-Control
	}{
		{OutputName(testHash, "webp"), "image/webp", [2]string{"image/webp", OutputCacheControl}},
		{OutputName(testHash, "png"), "", [2]string{"image/png", OutputCacheControl}},
		{"k/v1-meta.json", "application/json", [2]string{"application/json", ""}},
		{"org/report.bin", "text/plain", [2]string{"text/plain", ""}},
	} {
		if created, err := s.Put(ctx, tc.name, []byte("bytes"), tc.contentType); err != nil || !created {
			t.Fatalf("Put(%q) = %v, %v", tc.name, created, err)
		}
		out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(tc.name)})
		if err != nil {
			t.Fatalf("HeadObject(%q): %v", tc.name, err)
		}
		got := [2]string{aws.ToString(out.ContentType), aws.ToString(out.CacheControl)}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: stored [Content-Type, Cache-Control] (-want +got):\n%s", tc.name, diff)
		}
	}
}

// What a PUT sends: the media type, the immutable Cache-Control on outputs
// only, the condition that makes Put first-writer-wins, and none of the
// checksum headers or aws-chunked encoding that R2 refuses.
func TestS3PutHeaders(t *testing.T) {
	t.Parallel()
	var rc requestCounter
	s := newFakeS3(t, rc.wrap)
	for _, tc := range []struct {
		name, contentType string
		want              map[string]string
	}{
		{OutputName(testHash, "webp"), "image/webp", map[string]string{"Content-Type": "image/webp", "Cache-Control": OutputCacheControl}},
		{OutputName(testHash, "png"), "", map[string]string{"Content-Type": "image/png", "Cache-Control": OutputCacheControl}},
		{"k/v1-meta.json", "application/json", map[string]string{"Content-Type": "application/json", "Cache-Control": ""}},
	} {
		if created, err := s.Put(t.Context(), tc.name, []byte("bytes"), tc.contentType); err != nil || !created {
			t.Fatalf("Put(%q) = %v, %v", tc.name, created, err)
		}
		h := rc.putHeader("/imagegate/" + tc.name)
		if h == nil {
			t.Fatalf("no PUT of %s seen", tc.name)
		}
		tc.want["If-None-Match"] = "*"
		tc.want["Content-Length"] = "5"
		tc.want["Content-Encoding"] = ""
		got := map[string]string{}
		for k := range tc.want {
			got[k] = h.Get(k)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s: PUT headers (-want +got):\n%s", tc.name, diff)
		}
		for k := range h {
			if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-amz-checksum-") || lk == "x-amz-sdk-checksum-algorithm" || lk == "x-amz-trailer" {
				t.Errorf("%s: PUT sent %s: %q", tc.name, k, h.Get(k))
			}
		}
	}
}

// testS3Presign fetches presigned URLs with a plain HTTP client: as
// signed they work, and any change to what was signed, or time passing
// beyond the expiry, gets 403 from the server.
func testS3Presign(t *testing.T, s *S3) {
	ctx := t.Context()
	name, other := OutputName(testHash, "png"), OutputName(HashHex([]byte("other")), "png")
	data := []byte("\x89PNG presigned")
	for _, n := range []string{name, other} {
		if _, err := s.Put(ctx, n, data, "image/png"); err != nil {
			t.Fatal(err)
		}
	}
	presign := func(t *testing.T, name string, signedAt time.Time, ttl time.Duration) *url.URL {
		t.Helper()
		s.now = func() time.Time { return signedAt }
		defer func() { s.now = time.Now }()
		raw, err := s.PresignGet(ctx, name, ttl)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Query().Get("X-Amz-Expires"); got != fmt.Sprint(int(ttl.Seconds())) {
			t.Fatalf("X-Amz-Expires = %q, want %v", got, ttl.Seconds())
		}
		return u
	}
	setQuery := func(u *url.URL, key, value string) {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
	}
	now := time.Now()

	for _, tc := range []struct {
		desc string
		url  func(t *testing.T) *url.URL
		want int
	}{
		{"as signed", func(t *testing.T) *url.URL { return presign(t, name, now, time.Minute) }, http.StatusOK},
		{"query re-encoded, unchanged", func(t *testing.T) *url.URL {
			u := presign(t, name, now, time.Minute)
			u.RawQuery = u.Query().Encode()
			return u
		}, http.StatusOK},
		{"signed in the past, not yet expired", func(t *testing.T) *url.URL { return presign(t, name, now.Add(-30*time.Minute), time.Hour) }, http.StatusOK},
		{"signature altered", func(t *testing.T) *url.URL {
			u := presign(t, name, now, time.Minute)
			sig := []byte(u.Query().Get("X-Amz-Signature"))
			if sig[len(sig)-1] == '0' { // any other hex digit
				sig[len(sig)-1] = '1'
			} else {
				sig[len(sig)-1] = '0'
			}
			setQuery(u, "X-Amz-Signature", string(sig))
			return u
		}, http.StatusForbidden},
		{"path altered to another existing object", func(t *testing.T) *url.URL {
			u := presign(t, name, now, time.Minute)
			u.Path = strings.Replace(u.Path, name, other, 1)
			return u
		}, http.StatusForbidden},
		{"expiry extended", func(t *testing.T) *url.URL {
			u := presign(t, name, now, time.Minute)
			setQuery(u, "X-Amz-Expires", "3600")
			return u
		}, http.StatusForbidden},
		{"expired", func(t *testing.T) *url.URL { return presign(t, name, now.Add(-2*time.Hour), time.Hour) }, http.StatusForbidden},
		{"missing object, valid signature", func(t *testing.T) *url.URL {
			return presign(t, OutputName(HashHex([]byte("absent")), "png"), now, time.Minute)
		}, http.StatusNotFound},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			u := tc.url(t)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("GET = %d, want %d; body:\n%s", resp.StatusCode, tc.want, body)
			}
			if tc.want != http.StatusOK {
				return
			}
			if !bytes.Equal(body, data) {
				t.Errorf("GET body = %q, want %q", body, data)
			}
			if got := resp.Header.Get("Content-Type"); got != "image/png" {
				t.Errorf("GET Content-Type = %q, want image/png", got)
			}
		})
	}
}

// testS3Refused checks that credentials or a region the server does not
// accept surface as ErrAccessDenied wherever the answer tells, never as a
// missing object where it does (that would make a cache regenerate, or a
// deletion look done), and never with a credential in the message.
func testS3Refused(t *testing.T, srv *testpeer.S3Server, good *S3) {
	ctx := t.Context()
	name := OutputName(testHash, "png")
	if _, err := good.Put(ctx, name, []byte("stored"), "image/png"); err != nil {
		t.Fatal(err)
	}
	const wrongSecret = "WRONGSECRETwrongsecretWRONGSECRETwrongse"
	denied := func(err error) bool { return errors.Is(err, ErrAccessDenied) && !errors.Is(err, ErrNotFound) }
	refused := func(err error) bool { return err != nil && !errors.Is(err, ErrNotFound) }
	notFound := func(err error) bool { return errors.Is(err, ErrNotFound) }
	for _, tc := range []struct {
		desc   string
		mutate func(*S3Config)
		// What Stat and Put report. Both start with a HEAD, whose error
		// answer has no body: only its status tells (see the S3 type's
		// doc). Every other method must report ErrAccessDenied.
		stat, put func(error) bool
	}{
		{"wrong secret", func(c *S3Config) { c.SecretAccessKey = wrongSecret }, denied, denied},
		// versitygw answers 404 for an unknown access key; Put's PUT
		// then carries the error code.
		{"unknown access key", func(c *S3Config) { c.AccessKeyID = "AKUNKNOWNUNKNOWN0000" }, notFound, denied},
		// versitygw answers 400 to a HEAD signed for another region.
		{"wrong region", func(c *S3Config) { c.Region = "us-east-1" }, refused, refused},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := S3Config{Endpoint: srv.Endpoint, Bucket: good.bucket, AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}
			tc.mutate(&cfg)
			s := newTestS3(t, cfg)

			var errs []error
			check := func(op string, err error, want func(error) bool) {
				t.Helper()
				if !want(err) {
					t.Errorf("%s = %v", op, err)
				}
				errs = append(errs, err)
			}
			check("Check", s.Check(ctx), denied)
			_, err := s.Get(ctx, name)
			check("Get", err, denied)
			_, err = s.Stat(ctx, name)
			check("Stat", err, tc.stat)
			_, err = s.Put(ctx, "k/v1-refused.json", []byte("x"), "application/json")
			check("Put", err, tc.put)
			check("Delete", s.Delete(ctx, name), denied)

			if _, err := good.Get(ctx, "k/v1-refused.json"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a refused Put stored the object: Get = %v", err)
			}
			if _, err := good.Get(ctx, name); err != nil {
				t.Errorf("a refused Delete removed the object: Get = %v", err)
			}
			for _, err := range errs {
				if err == nil {
					continue
				}
				for _, secret := range []string{srv.SecretKey, wrongSecret, srv.AccessKey} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error message contains a credential: %v", err)
					}
				}
			}
		})
	}
}

// A Put of an existing name costs a HEAD, not an upload.
func TestS3PutExistingSendsNoBytes(t *testing.T) {
	t.Parallel()
	var rc requestCounter
	s := newFakeS3(t, rc.wrap)
	ctx, name := t.Context(), OutputName(testHash, "png")
	for i, want := range []bool{true, false, false} {
		if created, err := s.Put(ctx, name, []byte("png"), "image/png"); err != nil || created != want {
			t.Fatalf("Put %d = %v, %v; want %v, nil", i, created, err, want)
		}
	}
	want := map[string]int{http.MethodHead: 3, http.MethodPut: 1}
	if diff := cmp.Diff(want, rc.snapshot()); diff != "" {
		t.Errorf("requests by method (-want +got):\n%s", diff)
	}
}

// S3 answers 409 ConditionalRequestConflict while another conditional
// write of the name is in progress and asks the client to retry; Put does,
// a bounded number of times.
func TestS3PutRetriesConflicts(t *testing.T) {
	t.Parallel()
	conflict := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code><Message>A conflicting conditional operation is currently in progress against this resource.</Message></Error>`)
	}
	for _, tc := range []struct {
		desc        string
		conflicts   int
		wantCreated bool
		wantPuts    int
	}{
		{"one conflict", 1, true, 2},
		{"conflicts beyond the bound", 1000, false, maxConflictAttempts},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			rc := requestCounter{intercept: func(w http.ResponseWriter, r *http.Request, n int) bool {
				if r.Method != http.MethodPut || n > tc.conflicts {
					return false
				}
				io.Copy(io.Discard, r.Body)
				conflict(w)
				return true
			}}
			s := newFakeS3(t, rc.wrap)
			ctx, name := t.Context(), "k/v1-conflict.json"
			created, err := s.Put(ctx, name, []byte("{}"), "application/json")
			if created != tc.wantCreated || (err == nil) != tc.wantCreated {
				t.Fatalf("Put = %v, %v; want created=%v and an error only if not created", created, err, tc.wantCreated)
			}
			if got := rc.snapshot()[http.MethodPut]; got != tc.wantPuts {
				t.Errorf("%d PUTs, want %d", got, tc.wantPuts)
			}
			if _, err := s.Get(ctx, name); tc.wantCreated != (err == nil) {
				t.Errorf("Get after Put = %v", err)
			}
		})
	}
}

// A context canceled while a request is in flight ends the call with
// context.Canceled, not a hang and not ErrNotFound.
func TestS3CancelInFlight(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	s := newTestS3(t, S3Config{Endpoint: srv.URL, Bucket: "imagegate", AccessKeyID: "AKIDFAKE", SecretAccessKey: "fake-secret"})
	name := OutputName(testHash, "png")
	for _, tc := range []struct {
		op   string
		call func(ctx context.Context) error
	}{
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, name); return err }},
		{"Stat", func(ctx context.Context) error { _, err := s.Stat(ctx, name); return err }},
		{"Put", func(ctx context.Context) error { _, err := s.Put(ctx, name, []byte("x"), "image/png"); return err }},
		{"Delete", func(ctx context.Context) error { return s.Delete(ctx, name) }},
		{"Check", func(ctx context.Context) error { return s.Check(ctx) }},
	} {
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- tc.call(ctx) }()
		select {
		case <-arrived:
		case err := <-errc:
			cancel()
			t.Fatalf("%s returned %v before its request arrived", tc.op, err)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotFound) {
			t.Errorf("%s = %v, want context.Canceled", tc.op, err)
		}
	}
}

func TestS3Closed(t *testing.T) {
	t.Parallel()
	var rc requestCounter
	s := newFakeS3(t, rc.wrap)
	ctx, name := t.Context(), "k/v1-closed.json"
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, name, []byte("x"), ""); err == nil {
		t.Error("Put after Close succeeded")
	}
	if _, err := s.Get(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Close = %v, want an error other than ErrNotFound", err)
	}
	if got := rc.snapshot(); len(got) != 0 {
		t.Errorf("requests after Close: %v", got)
	}
}

func TestS3PresignArguments(t *testing.T) {
	t.Parallel()
	s := newTestS3(t, S3Config{Endpoint: "https://account.r2.cloudflarestorage.com", Bucket: "imagegate", AccessKeyID: "AKID", SecretAccessKey: "secret"})
	ctx, name := t.Context(), OutputName(testHash, "png")
	for _, ttl := range []time.Duration{0, -time.Second, MaxPresignTTL + time.Second} {
		if u, err := s.PresignGet(ctx, name, ttl); err == nil {
			t.Errorf("PresignGet(ttl %v) = %q, want an error", ttl, u)
		}
	}
	if _, err := s.PresignGet(ctx, "../etc/passwd", time.Minute); !errors.Is(err, ErrInvalidName) {
		t.Errorf("PresignGet(invalid name) = %v, want ErrInvalidName", err)
	}
	raw, err := s.PresignGet(ctx, name, MaxPresignTTL)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Path style on the configured host, signed for R2's region.
	if got, want := u.Host+u.Path, "account.r2.cloudflarestorage.com/imagegate/"+name; got != want {
		t.Errorf("URL host and path = %q, want %q", got, want)
	}
	if cred := u.Query().Get("X-Amz-Credential"); !strings.HasSuffix(cred, "/auto/s3/aws4_request") {
		t.Errorf("X-Amz-Credential = %q, want the region auto", cred)
	}
	if strings.Contains(raw, "secret") {
		t.Errorf("presigned URL contains the secret: %s", raw)
	}
}

func TestS3ConfigValidate(t *testing.T) {
	t.Parallel()
	valid := S3Config{Endpoint: "https://0123abcd.r2.cloudflarestorage.com", Bucket: "imagegate-outputs", AccessKeyID: "AKIDVALID", SecretAccessKey: "SECRETVALUE"}
	for _, tc := range []struct {
		desc   string
		mutate func(*S3Config)
		want   []string // what the error names; nil: valid
	}{
		{"r2", func(*S3Config) {}, nil},
		{"local http with region and slash", func(c *S3Config) { c.Endpoint, c.Region = "http://127.0.0.1:7070/", "us-east-1" }, nil},
		{"empty", func(c *S3Config) { *c = S3Config{} }, []string{"Endpoint", "Bucket", "AccessKeyID", "SecretAccessKey"}},
		{"credentials in endpoint", func(c *S3Config) { c.Endpoint = "https://AKIDVALID:SECRETVALUE@host.example" }, []string{"Endpoint"}},
		{"unparsable endpoint", func(c *S3Config) { c.Endpoint = "https://SECRETVALUE@host:port:bad" }, []string{"Endpoint"}},
		{"no scheme", func(c *S3Config) { c.Endpoint = "host.example" }, []string{"Endpoint"}},
		{"other scheme", func(c *S3Config) { c.Endpoint = "ftp://host.example" }, []string{"Endpoint"}},
		{"no host", func(c *S3Config) { c.Endpoint = "https:///path" }, []string{"Endpoint"}},
		{"path", func(c *S3Config) { c.Endpoint = "https://host.example/bucket" }, []string{"Endpoint"}},
		{"query", func(c *S3Config) { c.Endpoint = "https://host.example?x=1" }, []string{"Endpoint"}},
		{"bucket uppercase", func(c *S3Config) { c.Bucket = "Outputs" }, []string{"Bucket"}},
		{"bucket short", func(c *S3Config) { c.Bucket = "ab" }, []string{"Bucket"}},
		{"bucket long", func(c *S3Config) { c.Bucket = strings.Repeat("a", 64) }, []string{"Bucket"}},
		{"bucket edge", func(c *S3Config) { c.Bucket = "-outputs" }, []string{"Bucket"}},
		{"bucket slash", func(c *S3Config) { c.Bucket = "a/b/c" }, []string{"Bucket"}},
		{"region", func(c *S3Config) { c.Region = "US East" }, []string{"Region"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			cfg := valid
			tc.mutate(&cfg)
			err := cfg.Validate()
			if (err == nil) != (tc.want == nil) {
				t.Fatalf("Validate = %v, want error naming %v", err, tc.want)
			}
			if _, nerr := NewS3(cfg, nil); (nerr == nil) != (err == nil) {
				t.Errorf("NewS3 error %v disagrees with Validate %v", nerr, err)
			}
			if err == nil {
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error does not name %s:\n%v", w, err)
				}
			}
			if got := len(strings.Split(err.Error(), "\n")); got != len(tc.want) {
				t.Errorf("Validate reported %d problems, want %d:\n%v", got, len(tc.want), err)
			}
			if strings.Contains(err.Error(), "SECRETVALUE") {
				t.Errorf("Validate error contains the secret:\n%v", err)
			}
		})
	}
}

// Printing or logging a config never shows its credentials.
func TestS3ConfigRedacts(t *testing.T) {
	t.Parallel()
	cfg := S3Config{Endpoint: "https://AKIDSECRET:PASTEDSECRET@host.example", Bucket: "outputs", AccessKeyID: "AKIDSECRET", SecretAccessKey: "SECRETVALUE"}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "s3", cfg)
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), logged.String()} {
		if !strings.Contains(out, "outputs") || !strings.Contains(out, "host.example") {
			t.Errorf("output lacks the bucket or host: %s", out)
		}
		for _, secret := range []string{"SECRETVALUE", "AKIDSECRET", "PASTEDSECRET"} {
			if strings.Contains(out, secret) {
				t.Errorf("output contains %s: %s", secret, out)
			}
		}
	}
}
