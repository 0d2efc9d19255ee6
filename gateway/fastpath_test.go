package gateway

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/gateway/ratelimit"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// hitEnv is a gateway with rate limits on (a signed-out address may make
// ten generation hits a minute, so a test can exhaust it) on a fake
// clock, so two requests from two fresh addresses see the same buckets,
// with one public body cached and its output's signed link.
type hitEnv struct {
	*env
	clock   *testpeer.Clock
	body    string // cached, parsed and its prompt passed
	objPath string // signed link of its output: path and query
	key     cache.Key
}

const hitTestBody = `{"prompt":"a lighthouse in a storm","size":"256x256"}`

func newHitEnv(t *testing.T) *hitEnv {
	clock := testpeer.NewClock(time.Now().Truncate(time.Second))
	var cfg Config
	cfg.RateLimits.IP = ratelimit.Policy{Quota: 1000, Window: time.Minute}
	cfg.RateLimits.Anonymous = ratelimit.Policy{Quota: 40, Window: time.Minute}
	e := newEnv(t, envOptions{cfg: cfg, limits: true, now: clock.Now})
	h := &hitEnv{env: e, clock: clock, body: hitTestBody}
	resp, out := e.postJSON(hitTestBody) // generated, parsed and judged
	if resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, out)
	}
	var r struct {
		Data []struct{ URL string } `json:"data"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Data) != 1 {
		t.Fatalf("warm-up body %s: %v", out, err)
	}
	u, err := url.Parse(r.Data[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	h.objPath = u.RequestURI()
	pg := e.gw.parsed.get([]byte(hitTestBody), e.gw.catalog.models.Load())
	if pg == nil {
		t.Fatal("the warm-up body was not kept parsed")
	}
	h.key = pg.keys[0]
	// The output is in L1 (the generation put it there).
	if _, ok := e.gw.cache.PeekObject(strings.TrimPrefix(u.Path, "/o/")[:64], "png"); !ok {
		t.Fatal("the output is not in L1")
	}
	return h
}

// hitRequest is one request of the equivalence table.
type hitRequest struct {
	name    string
	method  string
	uri     string
	host    string // "" → localhost
	body    string
	headers []string
	// setup runs before each of the two answers (hit path, app), to put
	// the gateway in the same state for both.
	setup func(t *testing.T, h *hitEnv, addr net.Addr)
	// fast: the hit path answers it itself (else it hands it to the app).
	fast bool
	// check, if set, asserts something of the state after each answer.
	check func(t *testing.T, h *hitEnv)
	// want, if set, is the status both must answer.
	want int
}

// answer is a response as the comparison sees it.
type answer struct {
	status  int
	headers []string // "Name: value", sorted; Date left out
	body    string
}

var (
	createdRE = regexp.MustCompile(`"created":\d+`)
	verifyRE  = regexp.MustCompile(`verify=\d{10}-[A-Za-z0-9_-]+`)
)

// serveWith answers r from addr with the hit path in front of the app
// (as Serve does) or the app alone.
func (h *hitEnv) serveWith(t *testing.T, r hitRequest, addr net.Addr, hitPath bool) (answer, bool) {
	t.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Init(new(fasthttp.Request), addr, nil)
	ctx.Request.Header.SetMethod(r.method)
	ctx.Request.SetRequestURI(r.uri)
	host := r.host
	if host == "" {
		host = "localhost"
	}
	ctx.Request.Header.SetHost(host)
	if r.body != "" {
		ctx.Request.Header.SetContentType("application/json")
		ctx.Request.SetBodyString(r.body)
	}
	for i := 0; i+1 < len(r.headers); i += 2 {
		ctx.Request.Header.Set(r.headers[i], r.headers[i+1])
	}
	served := false
	if hitPath {
		served = h.gw.serveHit(&ctx)
	}
	if !served {
		h.gw.App().Handler()(&ctx)
	}
	a := answer{status: ctx.Response.StatusCode(), body: string(ctx.Response.Body())}
	ctx.Response.Header.VisitAll(func(k, v []byte) {
		if string(k) != "Date" {
			a.headers = append(a.headers, string(k)+": "+string(v))
		}
	})
	slices.Sort(a.headers)
	// Responses are created at the real second of the answer, which may
	// have ticked between the two.
	a.body = createdRE.ReplaceAllString(a.body, `"created":0`)
	return a, served
}

// TestHitPathEquivalence answers a table of requests twice, each time
// from a fresh client address in the same gateway state: through the hit
// path in front of the app, as the gateway serves, and through the app
// alone. Status, every header but Date and the body must be the same, and
// the hit path must answer exactly the requests it is meant to (the
// others it hands to the app, with what it did for them).
func TestHitPathEquivalence(t *testing.T) {
	t.Parallel()
	h := newHitEnv(t)
	drain := func(t *testing.T, h *hitEnv, addr net.Addr) {
		// Ten hits from addr empty its anonymous bucket (40 units, 4
		// each): the next one is refused.
		for i := range 10 {
			a, _ := h.serveWith(t, hitRequest{method: "POST", uri: "/v1/images/generations", body: h.body}, addr, false)
			if a.status != 200 {
				t.Fatalf("drain %d: %d %s", i, a.status, a.body)
			}
		}
	}
	policyVersion := h.gw.moderator.Version()
	otherPolicy := func(t *testing.T, h *hitEnv, _ net.Addr) {
		if err := h.gw.cache.Rejudged(h.key, policyVersion+1); err != nil {
			t.Fatal(err)
		}
	}
	rejudged := func(t *testing.T, h *hitEnv) {
		e, _, ok := h.gw.cache.Peek(h.key)
		if !ok || e.Policy != policyVersion {
			t.Errorf("after the hit the output's policy is %d (found %v), want %d: it was not judged again", e.Policy, ok, policyVersion)
		}
	}
	evicted := func(t *testing.T, h *hitEnv, _ net.Addr) {
		if err := h.gw.cache.Invalidate(h.key); err != nil {
			t.Fatal(err)
		}
	}
	gen := func(name string, fast bool, want int, headers ...string) hitRequest {
		return hitRequest{name: name, method: "POST", uri: "/v1/images/generations", body: hitTestBody, headers: headers, fast: fast, want: want}
	}
	obj := func(name, uri string, fast bool, want int, headers ...string) hitRequest {
		return hitRequest{name: name, method: "GET", uri: uri, headers: headers, fast: fast, want: want}
	}
	badSig := h.objPath[:len(h.objPath)-3] + "AAA"
	// Two images, the second evicted before each answer: the hit path
	// hands the first over as found, and the app neither looks it up
	// again (one L1 hit per answer) nor fails to generate the second.
	const twoBody = `{"prompt":"a lighthouse in a storm","size":"256x256","n":2}`
	if resp, out := h.postJSON(twoBody); resp.StatusCode != 200 {
		t.Fatalf("two images: %d %s", resp.StatusCode, out)
	}
	two := h.gw.parsed.get([]byte(twoBody), h.gw.catalog.models.Load())
	if two == nil || len(two.keys) != 2 {
		t.Fatal("the two-image body was not kept parsed")
	}
	var hitsBefore uint64
	secondEvicted := func(t *testing.T, h *hitEnv, _ net.Addr) {
		if err := h.gw.cache.Invalidate(two.keys[1]); err != nil {
			t.Fatal(err)
		}
		hitsBefore = h.cache.Stats().HitsL1
	}
	firstLookedUpOnce := func(t *testing.T, h *hitEnv) {
		if d := h.cache.Stats().HitsL1 - hitsBefore; d != 1 {
			t.Errorf("L1 counted %d hits for one cached image, want 1", d)
		}
		if _, _, ok := h.gw.cache.Peek(two.keys[1]); !ok {
			t.Error("the evicted image was not generated again")
		}
	}
	reqs := []hitRequest{
		gen("anonymous hit", true, 200),
		gen("anonymous hit with a user agent and accept", true, 200, "User-Agent", "sdk/1.0", "Accept", "application/json"),
		gen("consent cookie", false, 200, "Cookie", "ig_consent=v1.analytics"),
		gen("session cookie", false, 200, "Cookie", "ig_session=not-a-session"),
		gen("API key", false, 401, "Authorization", "Bearer sk_not_a_key"),
		gen("other Authorization", false, 401, "Authorization", "Basic Zm9vOmJhcg=="),
		gen("publishable key", false, 0, "Imagegate-Key", "pk_not_a_key"),
		gen("partner secret", false, 0, "Authorization", "Bearer ps_not_a_secret"),
		gen("cross-site Origin", false, 403, "Origin", "https://evil.example"),
		gen("same-host Origin", false, 200, "Origin", "http://localhost"),
		gen("cross-site Sec-Fetch-Site", false, 403, "Sec-Fetch-Site", "cross-site"),
		gen("same-origin Sec-Fetch-Site", false, 200, "Sec-Fetch-Site", "same-origin"),
		gen("gzip body", false, 0, "Content-Encoding", "gzip"),
		gen("no-cache refresh", false, 200, "Cache-Control", "no-cache"),
		gen("forwarded proto", false, 200, "X-Forwarded-Proto", "https"),
		{name: "upper-case Host", method: "POST", uri: "/v1/images/generations", host: "LocalHost", body: hitTestBody, want: 200},
		{name: "trailing slash", method: "POST", uri: "/v1/images/generations/", body: hitTestBody, want: 200},
		{name: "with a query", method: "POST", uri: "/v1/images/generations?x=1", body: hitTestBody},
		{name: "body never parsed", method: "POST", uri: "/v1/images/generations", body: `{"prompt":"a lighthouse in a storm","size":"256x256","n":1}`, want: 200},
		{name: "invalid body", method: "POST", uri: "/v1/images/generations", body: `{"prompt":`, want: 400},
		{name: "rate limit exhausted", method: "POST", uri: "/v1/images/generations", body: hitTestBody, setup: drain, want: 429},
		{name: "output judged under another policy", method: "POST", uri: "/v1/images/generations", body: hitTestBody, setup: otherPolicy, check: rejudged, want: 200},
		{name: "two images, both cached", method: "POST", uri: "/v1/images/generations", body: twoBody, fast: true, want: 200},
		{name: "two images, the second evicted", method: "POST", uri: "/v1/images/generations", body: twoBody, setup: secondEvicted, check: firstLookedUpOnce, want: 200},
		{name: "output no longer cached", method: "POST", uri: "/v1/images/generations", body: hitTestBody, setup: evicted, want: 200},
		obj("signed object", h.objPath, true, 200),
		obj("signed object with cookies and a key", h.objPath, true, 200, "Cookie", "ig_session=x", "Authorization", "Bearer sk_x"),
		obj("bad signature", badSig, false, 403),
		obj("unsigned", strings.Split(h.objPath, "?")[0], false, 403),
		obj("conditional", h.objPath, false, 304, "If-None-Match", `"`+strings.Split(strings.TrimPrefix(h.objPath, "/o/"), ".")[0]+`"`),
		obj("signed link to an unknown object", h.signer.Sign("/o/"+strings.Repeat("ab", 32)+".png"), false, 404),
		obj("nested path", "/o/a/b", false, 404),
		{name: "HEAD object", method: "HEAD", uri: h.objPath, want: 200},
		{name: "object rate limited", method: "GET", uri: h.objPath, setup: func(t *testing.T, h *hitEnv, addr net.Addr) {
			drain(t, h, addr) // the anonymous bucket is shared by every route
		}, want: 429},
	}
	for i, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			var got [2]answer
			for j, hitPath := range []bool{true, false} {
				addr := &net.TCPAddr{IP: net.IPv4(198, 51, byte(i), byte(1+j)), Port: 40000}
				if r.setup != nil {
					r.setup(t, h, addr)
				}
				a, served := h.serveWith(t, r, addr, hitPath)
				if hitPath && served != r.fast {
					t.Errorf("answered by the hit path: %v, want %v", served, r.fast)
				}
				if r.check != nil {
					r.check(t, h)
				}
				got[j] = a
			}
			// Links are signed at that real second too: the hit path's
			// must verify, and they are compared without their token.
			fast, slow := got[0], got[1]
			if err := checkLinks(h, fast.body); err != nil {
				t.Errorf("hit path: %v", err)
			}
			fast.body = verifyRE.ReplaceAllString(fast.body, "verify=…")
			slow.body = verifyRE.ReplaceAllString(slow.body, "verify=…")
			if fast.status != slow.status || fast.body != slow.body || !slices.Equal(fast.headers, slow.headers) {
				t.Errorf("hit path and app differ:\nhit path %d\n%s\n%s\napp      %d\n%s\n%s",
					fast.status, strings.Join(fast.headers, "\n"), fast.body, slow.status, strings.Join(slow.headers, "\n"), slow.body)
			}
			if r.want != 0 && slow.status != r.want {
				t.Errorf("status %d, want %d: %s", slow.status, r.want, slow.body)
			}
			if r.fast && fast.status != 200 {
				t.Errorf("status %d, want a 200 hit: %s", fast.status, fast.body)
			}
		})
	}
}

// checkLinks verifies every signed link in body.
func checkLinks(h *hitEnv, body string) error {
	var r struct {
		Data []struct{ URL string } `json:"data"`
	}
	if json.Unmarshal([]byte(body), &r) != nil {
		return nil // not an images response
	}
	for _, d := range r.Data {
		u, err := url.Parse(d.URL)
		if err != nil {
			return err
		}
		if err := h.signer.Verify(u.Path, u.RawQuery); err != nil {
			return fmt.Errorf("link %s: %w", d.URL, err)
		}
	}
	return nil
}

// requestCount is imagegate_http_requests_total for route, method and
// code.
func (h *hitEnv) requestCount(t *testing.T, route, method, code string) float64 {
	t.Helper()
	mfs, err := h.gwReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "imagegate_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["method"] == method && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestHitPathCountsAndCharges serves hits through the hit path alone and
// checks that each is counted in the request metrics and the cache's hit
// counts, and charged to the client's ip and anon buckets, as the app
// would: the headers say what the buckets hold, the limiter counts every
// charge, and a hit once the anon bucket is spent is refused (by
// the app, which the refused request is handed to, charged once).
func TestHitPathCountsAndCharges(t *testing.T) {
	t.Parallel()
	h := newHitEnv(t)
	addr := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 40000}
	genBefore := h.requestCount(t, routeGenerations, "POST", "200")
	objBefore := h.requestCount(t, routeObject, "GET", "200")
	allowedBefore := h.gw.limiter.Stats().Allowed
	hitsBefore := h.cache.Stats().HitsL1
	gen := hitRequest{method: "POST", uri: "/v1/images/generations", body: h.body}
	obj := hitRequest{method: "GET", uri: h.objPath}
	for i := range 8 {
		a, served := h.serveWith(t, gen, addr, true)
		if !served || a.status != 200 {
			t.Fatalf("hit %d: served by the hit path %v, status %d %s", i, served, a.status, a.body)
		}
		// The ip bucket pays 4 per generation and 1 per object, anon the same.
		spent := 4*(i+1) + i
		want := fmt.Sprintf(`Ratelimit: "ip";r=%d;t=%d, "anon";r=%d;t=%d`, 1000-spent, (spent*60+999)/1000, 40-spent, (spent*60+39)/40)
		if !slices.Contains(a.headers, want) {
			t.Fatalf("hit %d: headers %q, want %q", i, a.headers, want)
		}
		if a, served := h.serveWith(t, obj, addr, true); !served || a.status != 200 {
			t.Fatalf("object %d: served by the hit path %v, status %d", i, served, a.status)
		}
	}
	if d := h.requestCount(t, routeGenerations, "POST", "200") - genBefore; d != 8 {
		t.Errorf("imagegate_http_requests_total for generations grew by %v, want 8", d)
	}
	if d := h.requestCount(t, routeObject, "GET", "200") - objBefore; d != 8 {
		t.Errorf("imagegate_http_requests_total for objects grew by %v, want 8", d)
	}
	if d := h.gw.limiter.Stats().Allowed - allowedBefore; d != 16 {
		t.Errorf("the limiter allowed %d charges, want 16", d)
	}
	if d := h.cache.Stats().HitsL1 - hitsBefore; d != 8 {
		t.Errorf("L1 counted %d hits, want 8", d)
	}
	// The anon bucket is spent (8 × 4 + 8 × 1 = 40): the next hit is
	// refused.
	refusedBefore := h.gw.limiter.Stats().Refused
	a, served := h.serveWith(t, gen, addr, true)
	if served || a.status != 429 {
		t.Fatalf("over the limit: served by the hit path %v, status %d %s", served, a.status, a.body)
	}
	if d := h.gw.limiter.Stats().Refused - refusedBefore; d != 1 {
		t.Errorf("the limiter refused %d times for one refused request, want 1", d)
	}
	if d := h.requestCount(t, routeGenerations, "POST", "429"); d != 1 {
		t.Errorf("imagegate_http_requests_total for refused generations is %v, want 1", d)
	}
}
