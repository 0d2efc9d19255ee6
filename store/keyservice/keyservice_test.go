package keyservice_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/keyservice"
)

const token = "key-service-test-token-0123456789abcdef"

// service is a key service on a real HTTP server over key files in a
// temp dir.
type service struct {
	url     string
	keyPath string
	logs    *testpeer.Buffer
}

func startService(t testing.TB) service {
	t.Helper()
	srv, svc := newServer(t)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	svc.url = hs.URL
	return svc
}

// newServer is the key service's handler over key files in a temp dir,
// for a test to serve as it needs (behind a fault, over TLS).
func newServer(t testing.TB) (*keyservice.Server, service) {
	t.Helper()
	keyPath := filepath.Join(t.TempDir(), "imagegate.db")
	files, err := store.OpenKeyFiles(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { files.Close() })
	logs := &testpeer.Buffer{}
	srv, err := keyservice.NewServer(keyservice.ServerConfig{Keys: files, Token: token, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return srv, service{keyPath: keyPath, logs: logs}
}

func newClient(t testing.TB, url string) *keyservice.Client {
	t.Helper()
	c, err := keyservice.NewClient(keyservice.ClientConfig{URL: url, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// slotBytes reads a slot straight from one of the service's files.
func slotBytes(t *testing.T, path string, slot uint64) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const size = 48
	out := make([]byte, size)
	if off := int(slot) * size; off < len(raw) {
		copy(out, raw[off:])
	}
	return out
}

func tag(s string) store.KeyTag {
	var t store.KeyTag
	copy(t[:], s)
	return t
}

func TestClientCreatesReadsAndDestroysKeysInTheServiceFiles(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	c := newClient(t, svc.url)
	for _, tc := range []struct {
		file store.KeyFile
		ext  string
	}{{store.AccountKeys, ".keys"}, {store.DayKeys, ".daykeys"}, {store.ReportKeys, ".reportkeys"}} {
		t.Run(string(tc.file), func(t *testing.T) {
			path := svc.keyPath + tc.ext
			if _, err := c.Key(tc.file, 7, tag("alice")); !errors.Is(err, store.ErrKeyDestroyed) {
				t.Fatalf("never-made key: %v, want ErrKeyDestroyed", err)
			}
			k1, err := c.CreateKey(tc.file, 7, tag("alice"))
			if err != nil || len(k1) != 32 {
				t.Fatalf("create: %d bytes, %v", len(k1), err)
			}
			if got := slotBytes(t, path, 7); !bytes.Equal(got[16:], k1) {
				t.Fatalf("the key the client got is not the one in %s", path)
			}
			k2, err := c.CreateKey(tc.file, 7, tag("alice"))
			if err != nil || !bytes.Equal(k1, k2) {
				t.Errorf("a retried create made another key (%v)", err)
			}
			if got, err := c.Key(tc.file, 7, tag("alice")); err != nil || !bytes.Equal(got, k1) {
				t.Errorf("get: %v", err)
			}
			if _, err := c.Key(tc.file, 7, tag("bob")); !errors.Is(err, store.ErrKeyOwner) {
				t.Errorf("another owner's get: %v, want ErrKeyOwner", err)
			}
			if _, err := c.CreateKey(tc.file, 7, tag("bob")); !errors.Is(err, store.ErrKeyOwner) {
				t.Errorf("another owner's create: %v, want ErrKeyOwner", err)
			}
			if err := c.DestroyKey(tc.file, 7); err != nil {
				t.Fatal(err)
			}
			if got := slotBytes(t, path, 7); !bytes.Equal(got, make([]byte, 48)) {
				t.Errorf("slot 7 of %s after destroy: %x, want zeros", path, got)
			}
			if err := c.DestroyKey(tc.file, 7); err != nil {
				t.Errorf("destroying twice: %v", err)
			}
			if _, err := c.Key(tc.file, 7, tag("alice")); !errors.Is(err, store.ErrKeyDestroyed) {
				t.Errorf("get after destroy: %v, want ErrKeyDestroyed", err)
			}
		})
	}
	if strings.Contains(svc.logs.String(), token) {
		t.Errorf("the token is in the service's log")
	}
}

// post sends body to the service as a gateway would, with auth as the
// Authorization header.
func post(t *testing.T, url, auth, method, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url+"/v1/keys", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func readAll(t *testing.T, keyPath string) []byte {
	t.Helper()
	var all []byte
	for _, ext := range []string{".keys", ".daykeys", ".reportkeys"} {
		raw, err := os.ReadFile(keyPath + ext)
		if err != nil {
			t.Fatal(err)
		}
		all = append(append(all, raw...), '|')
	}
	return all
}

func TestBadTokenIs401AndChangesNothing(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	c := newClient(t, svc.url)
	key, err := c.CreateKey(store.AccountKeys, 3, tag("alice"))
	if err != nil {
		t.Fatal(err)
	}
	before := readAll(t, svc.keyPath)
	const create = `{"op":"create","file":"accounts","slot":4,"tag":"00112233445566778899aabbccddeeff"}`
	const destroy = `{"op":"destroy","file":"accounts","slot":3}`
	for _, auth := range []string{"", "Bearer", "Bearer " + token + "x", "Bearer " + token[:len(token)-1], "Basic " + token, "bearer wrong-token-wrong-token-wrong-token"} {
		for _, body := range []string{create, destroy} {
			if code, out := post(t, svc.url, auth, "POST", body); code != 401 || strings.Contains(out, "key\"") {
				t.Errorf("auth %q: %d %s, want 401", auth, code, out)
			}
		}
	}
	if after := readAll(t, svc.keyPath); !bytes.Equal(before, after) {
		t.Errorf("a refused request changed the key files")
	}
	if got, err := c.Key(store.AccountKeys, 3, tag("alice")); err != nil || !bytes.Equal(got, key) {
		t.Errorf("the key after refused destroys: %v", err)
	}
	wrong, err := keyservice.NewClient(keyservice.ClientConfig{URL: svc.url, Token: strings.Repeat("w", 40)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Key(store.AccountKeys, 3, tag("alice")); err == nil || errors.Is(err, store.ErrKeyDestroyed) || !strings.Contains(err.Error(), "401") {
		t.Errorf("a client with the wrong token: %v, want a 401 error (not ErrKeyDestroyed)", err)
	}
	if strings.Contains(svc.logs.String(), token[:20]) || strings.Contains(svc.logs.String(), "wrong-token") {
		t.Errorf("a token is in the service's log:\n%s", svc.logs)
	}
}

func TestBadRequestsAre4xxAndChangeNothing(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	c := newClient(t, svc.url)
	if _, err := c.CreateKey(store.AccountKeys, 1, tag("alice")); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, svc.keyPath)
	const tg = `"00112233445566778899aabbccddeeff"`
	for _, tc := range []struct {
		name, method, body string
		want               int
	}{
		{"unknown field", "POST", `{"op":"create","file":"accounts","slot":2,"tag":` + tg + `,"key":"AAAA"}`, 400},
		{"unknown op", "POST", `{"op":"wipe","file":"accounts","slot":1}`, 400},
		{"unknown file", "POST", `{"op":"destroy","file":"../keys","slot":1}`, 400},
		{"no slot", "POST", `{"op":"destroy","file":"accounts"}`, 400},
		{"negative slot", "POST", `{"op":"destroy","file":"accounts","slot":-1}`, 400},
		{"fractional slot", "POST", `{"op":"destroy","file":"accounts","slot":1.5}`, 400},
		{"slot as text", "POST", `{"op":"destroy","file":"accounts","slot":"1"}`, 400},
		{"slot past the maximum", "POST", `{"op":"create","file":"accounts","slot":4294967296,"tag":` + tg + `}`, 400},
		{"huge slot", "POST", `{"op":"create","file":"accounts","slot":18446744073709551615,"tag":` + tg + `}`, 400},
		{"no tag", "POST", `{"op":"create","file":"accounts","slot":2}`, 400},
		{"short tag", "POST", `{"op":"create","file":"accounts","slot":2,"tag":"0011"}`, 400},
		{"tag not hex", "POST", `{"op":"get","file":"accounts","slot":1,"tag":"zz112233445566778899aabbccddeeff"}`, 400},
		{"destroy with a tag", "POST", `{"op":"destroy","file":"accounts","slot":1,"tag":` + tg + `}`, 400},
		{"two objects", "POST", `{"op":"destroy","file":"accounts","slot":2}{"op":"destroy","file":"accounts","slot":1}`, 400},
		{"not JSON", "POST", `op=destroy&slot=1`, 400},
		{"empty", "POST", ``, 400},
		{"too large", "POST", `{"op":"destroy","file":"accounts","slot":1,"pad":"` + strings.Repeat("x", 2000) + `"}`, 413},
		{"GET", "GET", ``, 405},
		{"DELETE", "DELETE", `{"op":"destroy","file":"accounts","slot":1}`, 405},
		{"another owner", "POST", `{"op":"create","file":"accounts","slot":1,"tag":` + tg + `}`, 409},
	} {
		if code, out := post(t, svc.url, "Bearer "+token, tc.method, tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, out, tc.want)
		}
	}
	if after := readAll(t, svc.keyPath); !bytes.Equal(before, after) {
		t.Errorf("a refused request changed the key files")
	}
	if _, err := c.Key(store.AccountKeys, 1, tag("alice")); err != nil {
		t.Errorf("the key after refused requests: %v", err)
	}
}

// flaky answers 503 to the first fail requests, then passes them on.
type flaky struct {
	next  http.Handler
	fail  int32
	calls atomic.Int32
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.calls.Add(1) <= f.fail {
		http.Error(w, `{"error":"busy"}`, http.StatusServiceUnavailable)
		return
	}
	f.next.ServeHTTP(w, r)
}

func TestClientRetriesTransientFailuresOnly(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t)
	f := &flaky{next: srv, fail: 2}
	hs := httptest.NewServer(f)
	defer hs.Close()
	c, err := keyservice.NewClient(keyservice.ClientConfig{URL: hs.URL, Token: token, Attempts: 3, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(store.DayKeys, 9, tag("day")); err != nil {
		t.Fatalf("create through two 503s: %v", err)
	}
	if n := f.calls.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	// A definite answer is not retried.
	f.calls.Store(10)
	if _, err := c.Key(store.DayKeys, 10, tag("day")); !errors.Is(err, store.ErrKeyDestroyed) {
		t.Errorf("missing key: %v", err)
	}
	if n := f.calls.Load(); n != 11 {
		t.Errorf("a 404 was tried %d times, want once", n-10)
	}
	// Three 503s in a row are an error, and not ErrKeyDestroyed: a gateway
	// must never take an outage for an erasure.
	f.calls.Store(0)
	f.fail = 3
	if _, err := c.Key(store.DayKeys, 9, tag("day")); err == nil || errors.Is(err, store.ErrKeyDestroyed) {
		t.Errorf("three 503s: %v, want an error that is not ErrKeyDestroyed", err)
	}
	if n := f.calls.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

func TestClientTimesOutOnAHungService(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hs.Close()
	defer close(release)
	c, err := keyservice.NewClient(keyservice.ClientConfig{URL: hs.URL, Token: token, Timeout: 50 * time.Millisecond, Attempts: 2, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Key(store.AccountKeys, 1, tag("a")); done <- err }()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, store.ErrKeyDestroyed) {
			t.Errorf("hung service: %v, want a timeout error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client waited on a hung service without bound")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
}

func TestClientOverTLS(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t)
	ca := testpeer.NewCA(t, "key service CA")
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, time.Now().Add(time.Hour), "127.0.0.1").TLS}}
	hs.StartTLS()
	defer hs.Close()
	c, err := keyservice.NewClient(keyservice.ClientConfig{URL: hs.URL, Token: token, RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(store.ReportKeys, 2, tag("r")); err != nil {
		t.Fatalf("over TLS with the CA: %v", err)
	}
	untrusting, err := keyservice.NewClient(keyservice.ClientConfig{URL: hs.URL, Token: token, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.Key(store.ReportKeys, 2, tag("r")); err == nil {
		t.Error("a client that does not trust the CA got the key")
	}
}

func TestNewClientRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []keyservice.ClientConfig{
		{URL: "", Token: token},
		{URL: "ftp://keys.internal", Token: token},
		{URL: "http://user:pass@keys.internal", Token: token},
		{URL: "http://keys.internal?x=1", Token: token},
		{URL: "http://keys.internal", Token: "short"},
		{URL: "http://keys.internal", Token: token, Timeout: -1},
	} {
		if _, err := keyservice.NewClient(cfg); err == nil {
			t.Errorf("NewClient(%q) accepted", cfg.URL)
		}
	}
	if _, err := keyservice.NewServer(keyservice.ServerConfig{Keys: nil, Token: token}); err == nil {
		t.Error("NewServer without key files")
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		`{"op":"create","file":"accounts","slot":0,"tag":"00112233445566778899aabbccddeeff"}`,
		`{"op":"get","file":"days","slot":20415,"tag":"7365636c6f672d646179000000004fbf"}`,
		`{"op":"destroy","file":"reports","slot":4294967295}`,
		`{"op":"destroy","file":"reports","slot":4294967296}`,
		`{"op":"destroy","file":"accounts","slot":1,"tag":""}`,
		`{"op":"get","file":"accounts","slot":1e3,"tag":"00112233445566778899aabbccddeeff"}`,
		`{"op":"get","file":"accounts","slot":1,"tag":"00112233445566778899aabbccddeeff"} `,
		`{"op":"get","file":"accounts","slot":1,"tag":"00112233445566778899aabbccddeeff"}[]`,
		`{"OP":"destroy","File":"accounts","slot":1}`,
		`{"op":"destroy","file":"accounts","slot":null}`,
		`[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := keyservice.ParseRequest(body)
		if err != nil {
			if !errors.Is(err, keyservice.ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if r.Slot > keyservice.MaxSlot {
			t.Fatalf("accepted slot %d", r.Slot)
		}
		switch r.File {
		case store.AccountKeys, store.DayKeys, store.ReportKeys:
		default:
			t.Fatalf("accepted file %q", r.File)
		}
		if r.Op == keyservice.OpDestroy && r.Tag != (store.KeyTag{}) {
			t.Fatalf("destroy with a tag")
		}
		again, err := keyservice.ParseRequest(keyservice.EncodeRequest(r))
		if err != nil || again != r {
			t.Fatalf("re-encoded %+v parses as %+v, %v", r, again, err)
		}
	})
}

// BenchmarkKeyRead is the cost of one key read from the local files and
// from a key service on loopback: what caching nothing costs a gateway per
// account read, before the network's round trip.
func BenchmarkKeyRead(b *testing.B) {
	svc := startService(b)
	local, err := store.OpenKeyFiles(svc.keyPath)
	if err != nil {
		b.Fatal(err)
	}
	defer local.Close()
	remote := newClient(b, svc.url)
	if _, err := remote.CreateKey(store.AccountKeys, 5, tag("bench")); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		keys store.KeyBackend
	}{{"files", local}, {"service", remote}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.keys.Key(store.AccountKeys, 5, tag("bench")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Gateways that log their first security event of a day at once all ask
// the service to create that day's key: they must all get the same one.
func TestConcurrentCreatesAgreeOnOneKey(t *testing.T) {
	t.Parallel()
	svc := startService(t)
	clients := []*keyservice.Client{newClient(t, svc.url), newClient(t, svc.url), newClient(t, svc.url)}
	const each = 10
	keys := make([][]byte, len(clients)*each)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := clients[i%len(clients)].CreateKey(store.DayKeys, 20426, tag("seclog-day"))
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i, k := range keys {
		if !bytes.Equal(k, keys[0]) {
			t.Fatalf("create %d got another key than create 0", i)
		}
	}
	if got := slotBytes(t, svc.keyPath+".daykeys", 20426); !bytes.Equal(got[16:], keys[0]) {
		t.Error("the agreed key is not the one in the file")
	}
}
