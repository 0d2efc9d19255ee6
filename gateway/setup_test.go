package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/retro"
	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// env is a whole gateway on real parts: bbolt files and a local object
// store in a temp dir, the retro backend behind a real Connect server on
// loopback, and the gateway on a real listener.
type env struct {
	t   testing.TB
	dir string
	url string
	// metricsURL serves the gateway's registry the way imagegate serve
	// does, on a listener of its own: the gateway never serves /metrics.
	metricsURL string
	gw         *Gateway
	cache      *cache.Cache
	db         *store.DB
	tierReg    *prometheus.Registry
	gwReg      *prometheus.Registry
	logs       *testpeer.Buffer
	client     *http.Client
	signer     *edge.Signer
	outbox     *mail.Outbox
}

type envOptions struct {
	dir     string // reuse a data directory (restart tests)
	cfg     Config
	backend inference.Backend
	now     func() time.Time // the clock of gateway and store (nil: time.Now)
	purger  purger           // the CDN purger (nil: none)
	// limits keeps cfg's rate limits and free quota; by default tests run
	// with rate limits off and an unlimited free quota.
	limits bool
	// realHashing hashes passwords at production cost; by default tests
	// use cheap argon2id parameters (the code path is the same).
	realHashing bool
	// objects wraps the object store the cache and the gateway use (nil:
	// the local store itself), e.g. in a recorder.
	objects func(*edge.Local) envObjects
	// wrapStore, if set, wraps the real store the gateway is given (to
	// count the calls it makes).
	wrapStore func(Store) Store
	// tier configures the inference server; tierWrap, if set, wraps its
	// handler (to read what the gateway sends it).
	tier     inference.ServerConfig
	tierWrap func(http.Handler) http.Handler
}

// envObjects is what the cache and the gateway need of the object store.
type envObjects interface {
	cache.ObjectStore
	objectDeleter
}

func newEnv(t testing.TB, opts envOptions) *env {
	t.Helper()
	e := &env{t: t, dir: opts.dir, logs: &testpeer.Buffer{}, client: &http.Client{Timeout: 60 * time.Second}}
	if e.dir == "" {
		e.dir = t.TempDir()
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	backend := opts.backend
	if backend == nil {
		backend = retro.New()
	}
	e.tierReg = prometheus.NewRegistry()
	tier, err := inference.NewServer(opts.tier, []inference.Backend{backend}, e.tierReg, logger)
	if err != nil {
		t.Fatal(err)
	}
	tierHandler := tier.Handler()
	if opts.tierWrap != nil {
		tierHandler = opts.tierWrap(tierHandler)
	}
	ts := httptest.NewUnstartedServer(tierHandler)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	ts.Config.Protocols = p
	ts.Start()
	t.Cleanup(ts.Close)

	e.gwReg = prometheus.NewRegistry()
	pool, err := inference.NewPool(inference.PoolConfig{URLs: []string{ts.URL}, Registerer: e.gwReg}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	local, err := edge.NewLocal(filepath.Join(e.dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	var objects envObjects = local
	if opts.objects != nil {
		objects = opts.objects(local)
	}
	e.cache, err = cache.New(cache.Config{Path: filepath.Join(e.dir, "cache.db")}, objects, logger)
	if err != nil {
		t.Fatal(err)
	}
	e.db, err = store.Open(store.Config{Path: filepath.Join(e.dir, "imagegate.db"), Now: opts.now})
	if err != nil {
		t.Fatal(err)
	}
	key, err := edge.LoadOrCreateKey(filepath.Join(e.dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	e.signer, err = edge.NewSigner(edge.SignerConfig{Current: key, TTL: time.Hour}, nil) // time.Now, as imagegate serve has it
	if err != nil {
		t.Fatal(err)
	}
	e.outbox, err = mail.NewOutbox(mail.Config{OutboxDir: filepath.Join(e.dir, "outbox")}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if !opts.realHashing {
		opts.cfg.passwordParams = &argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}
	}
	if !opts.limits {
		opts.cfg.RateLimits.Disabled = true
		opts.cfg.FreeQuota.FreeImagesPerDay = UnlimitedFreeImages()
	}
	var st Store = e.db
	if opts.wrapStore != nil {
		st = opts.wrapStore(st)
	}
	e.gw, err = New(opts.cfg, Deps{
		Cache: e.cache, Signer: e.signer, Inference: pool, Store: st, Mailer: e.outbox, Objects: objects, Purger: opts.purger,
		OwnerTags: testOwnerTags,
		Registry:  e.gwReg, Logger: logger, Now: opts.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.gw.RefreshModels(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.ResumeJobs(t.Context()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.gw.Serve(ln)
	e.url = "http://" + ln.Addr().String()
	ms := httptest.NewServer(promhttp.HandlerFor(e.gwReg, promhttp.HandlerOpts{}))
	t.Cleanup(ms.Close)
	e.metricsURL = ms.URL + "/metrics"
	t.Cleanup(e.close)
	return e
}

// testOwnerTags derives the owner cache tags of every test gateway.
var testOwnerTags, _ = edge.NewOwnerTagger([]byte("owner-tag-key-for-tests-0123456789"))

var closeOnce sync.Map

// close shuts the gateway and releases the files, so a second env can reopen
// the same directory.
func (e *env) close() {
	if _, done := closeOnce.LoadOrStore(e, true); done {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e.gw.Shutdown(ctx)
	e.cache.Close()
	e.db.Close()
}

// generations counts backend executions on the tier.
func (e *env) generations() float64 {
	e.t.Helper()
	mfs, err := e.tierReg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "imagegate_inference_generations_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// objectCount is the number of files in the object store.
func (e *env) objectCount() int {
	e.t.Helper()
	n := 0
	filepath.Walk(filepath.Join(e.dir, "objects"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

func (e *env) postJSON(body string, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.url+"/v1/images/generations", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return e.do(req)
}

func (e *env) get(url string, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return e.do(req)
}

func filesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) == 0 {
		t.Fatalf("no files under %s", dir)
	}
	return files
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// newTestClock is a settable clock for gateway, store and their parts, so
// no test waits for time to pass.
func newTestClock() *testpeer.Clock {
	return testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
}

// checkValidation is testpeer.CheckValidation.
func checkValidation(t *testing.T, err error, want []string) bool {
	t.Helper()
	return testpeer.CheckValidation(t, err, want)
}
