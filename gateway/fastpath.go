package gateway

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/gateway/ratelimit"
)

// The hit path serves the two commonest requests in front of the Fiber
// app, at the fasthttp level: a signed-out visitor's cache hit on POST
// /v1/images/generations and a signed GET /o/<hash>.<ext> from L1. It
// does what the app's middleware and handlers do for them, with the same
// functions (the security-header setter, the rate limiter, moderation's
// pass set, the cache, the history's freshness, the response writers) and
// the same results, minus the work those requests never need: Fiber's
// context and routing, a heap-allocated rate-limit charge, every
// middleware's header lookups one by one, and most clock reads.
//
// It serves a request only when it is sure the app would answer exactly
// so, and hands everything else to the app untouched. Once it has charged
// the rate limit (or found hits in the cache), it hands the request over
// with that work attached (ratelimit.Taken.HandOff, hitHandoff), so
// nothing is charged, counted or looked up twice: a refused charge, an
// image that is not cached, an output to re-judge under a changed content
// policy, or one being reaped all go on in the app from where the hit
// path stopped. TestHitPathEquivalence compares its answers with the
// app's.

// promptPasser is the moderator's read-only pass check (a
// *moderation.Moderator).
type promptPasser interface {
	PromptPassed(p moderation.Request) bool
}

// hitHandoff is what the hit path did for a generation's images before it
// handed the request to the app.
type hitHandoff struct {
	pg      *parsedGeneration
	results [maxImages]result
	state   [maxImages]uint8
}

// The state of one image in a hitHandoff.
const (
	handNone   = iota // not looked up
	handPeeked        // found in the cache; not yet judged, charged or remembered
	handDone          // found, judged, charged and remembered
	handRegen         // found, but being reaped: generate it again
)

// hitHandoffLocal is the user-value key of a *hitHandoff.
type hitHandoffLocal struct{}

// handedHits returns what the hit path did for this request's images,
// when it handed it over for keyed's body.
func handedHits(c *fiber.Ctx, keyed *parsedGeneration, refresh bool) *hitHandoff {
	h, ok := c.Context().UserValue(hitHandoffLocal{}).(*hitHandoff)
	if !ok || h == nil || keyed == nil || h.pg != keyed || refresh {
		return nil
	}
	c.Context().SetUserValue(hitHandoffLocal{}, (*hitHandoff)(nil))
	return h
}

// Routes the hit path serves, as the metrics label them.
const (
	routeGenerations = "/v1/images/generations"
	routeObject      = "/o/:name"
)

// fastSeries are the metrics series of the hit path's answers, looked up
// on first use (so a series appears only once it counts something).
type fastSeries struct {
	generation, object atomic.Pointer[requestSeries]
}

func (m *metrics) seriesOnce(p *atomic.Pointer[requestSeries], route, method string, status int) *requestSeries {
	if s := p.Load(); s != nil {
		return s
	}
	s := m.series(route, method, status)
	p.Store(s)
	return s
}

// Handler is the gateway's HTTP handler: the hit path in front of the app.
func (g *Gateway) Handler() fasthttp.RequestHandler { return g.app.Server().Handler }

// installHitPath puts the hit path in front of the app's handler.
func (g *Gateway) installHitPath() {
	next := g.app.Handler()
	lim, ok := g.limiter.(*ratelimit.Limiter) // concrete: the charge stays on the stack
	if !ok {
		return
	}
	g.fastLimiter = lim
	g.passer, _ = g.moderator.(promptPasser)
	// A deferring generation route answers from a goroutine with a timer
	// even on a hit; the hit path leaves it to the app.
	g.fastGenerations = g.passer != nil && !(g.jobs != nil && g.cfg.AsyncJobs.After > 0)
	g.app.Server().Handler = func(ctx *fasthttp.RequestCtx) {
		if !g.serveHit(ctx) {
			next(ctx)
		}
	}
}

// serveHit answers ctx if it is a hit the hit path serves, and reports
// whether it did; otherwise ctx is left for the app (with any work done
// handed over).
func (g *Gateway) serveHit(ctx *fasthttp.RequestCtx) (served bool) {
	req := &ctx.Request
	// The request target as sent: only the origin form ("/path?query")
	// is served here, so its path is the URI's PathOriginal (what the app
	// routes on) without parsing the URI.
	uri := req.Header.RequestURI()
	var generation bool
	var path, query []byte
	switch {
	case req.Header.IsPost() && g.fastGenerations && string(uri) == routeGenerations:
		generation = true
	case req.Header.IsGet() && len(uri) > 3 && string(uri[:3]) == "/o/" && bytes.IndexByte(uri, '#') < 0:
		path = uri
		if q := bytes.IndexByte(uri, '?'); q >= 0 {
			path, query = uri[:q], uri[q+1:]
		}
		if len(path) == 3 || bytes.IndexByte(path[3:], '/') >= 0 {
			return false
		}
	default:
		return false
	}
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			g.hitPanicked(ctx, generation, r, start)
			served = true
		}
	}()
	if generation {
		return g.generationHit(ctx, start)
	}
	return g.objectHit(ctx, path, query, start)
}

// clockAt is g.now() for a request whose real time is start: the same
// reading when the gateway runs on the real clock.
func (g *Gateway) clockAt(start time.Time) time.Time {
	if g.realClock {
		return start
	}
	return g.now()
}

// plainAnonymous reports whether a generation request is a signed-out
// visitor's with nothing the app's middleware would act on: no cookie
// (session, consent), no Authorization or partner key (identity, partner
// routes), neither Origin nor Sec-Fetch-Site (cross-origin protection),
// no Content-Encoding (plain bodies), no Cache-Control (a refresh), no
// Prefer (a job), and, when links are built from the request, nothing
// that would change their scheme. These are every request header the
// app reads on this route for such a visitor, except the client-address
// header, which the resolver reads the same way here.
func (g *Gateway) plainAnonymous(h *fasthttp.RequestHeader) bool {
	fromRequest := g.cfg.CDNURL == "" && g.cfg.PublicURL == ""
	plain := true
	h.VisitAll(func(k, _ []byte) {
		if !plain || len(k) < 6 {
			return
		}
		switch string(k) {
		case fiber.HeaderCookie, fiber.HeaderAuthorization, headerPartnerKey, headerEmbedToken,
			fiber.HeaderOrigin, "Sec-Fetch-Site", fiber.HeaderContentEncoding, fiber.HeaderCacheControl, "Prefer":
			plain = false
		case fiber.HeaderXForwardedProto, fiber.HeaderXForwardedProtocol, fiber.HeaderXForwardedSsl, fiber.HeaderXUrlScheme:
			plain = !fromRequest
		}
	})
	return plain
}

// handOffHits hands the request to the app with its charge and what was
// done for its images.
func handOffHits(ctx *fasthttp.RequestCtx, t *ratelimit.Taken, hh *hitHandoff) bool {
	t.HandOff(ctx)
	h := new(hitHandoff)
	*h = *hh
	ctx.SetUserValue(hitHandoffLocal{}, h)
	return false
}

// plainHost reports whether a Host header is what the app's URI would
// make of it (lower case, nothing to unescape), so links built from it
// are the same.
func plainHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// generationHit serves a signed-out visitor's cache hit: the app's
// generation route for a body it has parsed before (respond, resolveAll,
// writeImagesKeyed), in the same order.
func (g *Gateway) generationHit(ctx *fasthttp.RequestCtx, start time.Time) bool {
	req := &ctx.Request
	if !g.plainAnonymous(&req.Header) {
		return false
	}
	if (g.cfg.CDNURL == "" && g.cfg.PublicURL == "") && !plainHost(req.Header.Host()) {
		return false
	}
	body := req.Body()
	if len(body) > g.cfg.MaxJSONBytes {
		return false
	}
	pg := g.parsed.get(body, g.catalog.models.Load())
	if pg == nil || pg.stream || pg.p.Format == "b64_json" || pg.p.Private || pg.p.Reference != nil {
		return false
	}
	p := &pg.p
	py := payer{addr: g.ips.AddrOf(ctx), plan: g.cfg.Plans.plan(planAnonymous), planName: planAnonymous}
	if py.checkSize(p.Width, p.Height) != nil {
		return false
	}
	// CheckPrompt would pass without judging: nothing to judge here.
	if !g.passer.PromptPassed(moderation.Request{Prompt: p.Prompt, NegativePrompt: p.NegativePrompt}) {
		return false
	}
	now := g.clockAt(start)
	var t ratelimit.Taken
	g.fastLimiter.TakeAnonymousAt(&t, py.addr, g.cfg.RateLimits.Costs.GenerationHit, now)
	if !t.Allowed() {
		t.HandOff(ctx)
		return false
	}
	var hh hitHandoff
	hh.pg = pg
	for i := range p.N {
		e, o, ok := g.cache.Peek(pg.keys[i])
		if !ok {
			return handOffHits(ctx, &t, &hh)
		}
		hh.results[i], hh.state[i] = result{entry: e, outcome: o}, handPeeked
	}
	version := g.moderator.Version()
	for i := range p.N {
		r := &hh.results[i]
		if r.entry.Policy != version {
			return handOffHits(ctx, &t, &hh) // judged again by the app (rejudge)
		}
		if g.chargeHit(py, pg.refs[i]) != nil {
			return handOffHits(ctx, &t, &hh) // never for a signed-out visitor
		}
		if g.rememberAt(py, *p, pg.refs[i], r.entry, r.outcome, start, now) != nil {
			hh.state[i] = handRegen
			return handOffHits(ctx, &t, &hh)
		}
		hh.state[i] = handDone
	}
	results := hh.results[:p.N]

	resp := &ctx.Response
	hdr := &resp.Header
	g.setSecurityHeaders(hdr, false)
	var o origin
	if g.cfg.CDNURL == "" && g.cfg.PublicURL == "" {
		o = origin{scheme: "http", host: req.Header.Host()}
		if ctx.IsTLS() {
			o.scheme = "https"
		}
	}
	setImagesHeaders(hdr, results, false)
	resp.SetBodyRaw(g.hitBodyFor(pg, o, results, start))
	t.WriteHeaders(hdr)
	g.metrics.seriesOnce(&g.metrics.fast.generation, routeGenerations, fiber.MethodPost, fiber.StatusOK).observe(time.Since(start))
	return true
}

// hitBodyFor returns the response body for results, from pg's last one
// when that is the same bytes appendImagesJSON would write now.
func (g *Gateway) hitBodyFor(pg *parsedGeneration, o origin, results []result, now time.Time) []byte {
	created := now.Unix()
	issued := created
	if !g.signer.Realtime() {
		issued = g.signer.Issued()
	}
	if hb := pg.hit.Load(); hb != nil && hb.created == created && hb.issued == issued &&
		hb.scheme == o.scheme && hb.host == string(o.host) && sameOutputs(hb, results) {
		return hb.body
	}
	body, _ := g.appendImagesJSON(nil, o, pg.p, results, pg, now) // URLs only: no error
	hb := &hitBody{created: created, issued: issued, scheme: o.scheme, host: string(o.host), body: body}
	for i, r := range results {
		hb.objects[i], hb.seeds[i] = r.entry.Object+"."+r.entry.Ext, r.entry.Seed
	}
	pg.hit.Store(hb)
	return body
}

// sameOutputs reports whether hb was written for results' outputs.
func sameOutputs(hb *hitBody, results []result) bool {
	for i, r := range results {
		o := hb.objects[i]
		if hb.seeds[i] != r.entry.Seed || len(o) != len(r.entry.Object)+1+len(r.entry.Ext) ||
			o[:len(r.entry.Object)] != r.entry.Object || o[len(r.entry.Object)+1:] != r.entry.Ext {
			return false
		}
	}
	return true
}

// objectHit serves a signed link to an output L1 holds: the app's object
// route (a rate-limit charge, the signature, the bytes) for a request
// that is not conditional.
func (g *Gateway) objectHit(ctx *fasthttp.RequestCtx, path, query []byte, start time.Time) bool {
	req := &ctx.Request
	if len(req.Header.Peek(fiber.HeaderIfNoneMatch)) > 0 {
		return false
	}
	var t ratelimit.Taken
	g.fastLimiter.TakeAnonymousAt(&t, g.ips.AddrOf(ctx), g.cfg.RateLimits.Costs.Object, g.clockAt(start))
	if !t.Allowed() {
		t.HandOff(ctx)
		return false
	}
	spath := utils.UnsafeString(path)
	var err error
	if g.signer.Realtime() {
		err = g.signer.VerifyAt(spath, utils.UnsafeString(query), start)
	} else {
		err = g.signer.Verify(spath, utils.UnsafeString(query))
	}
	if err != nil {
		t.HandOff(ctx)
		return false
	}
	hash, ext, ok := edge.ParseOutputPath(spath)
	if !ok {
		t.HandOff(ctx)
		return false
	}
	data, ok := g.cache.PeekObject(hash, ext)
	if !ok {
		t.HandOff(ctx)
		return false
	}
	resp := &ctx.Response
	h := &resp.Header
	g.setSecurityHeaders(h, true)
	var etagBuf [80]byte
	g.setObjectHeaders(h, hash, ext, objectETag(&etagBuf, hash))
	resp.SetBodyRaw(data)
	t.WriteHeaders(h)
	g.metrics.seriesOnce(&g.metrics.fast.object, routeObject, fiber.MethodGet, fiber.StatusOK).observe(time.Since(start))
	return true
}

// hitPanicked answers a request whose hit path panicked as the app's
// recover middleware and error handler would: a 500, counted.
func (g *Gateway) hitPanicked(ctx *fasthttp.RequestCtx, generation bool, r any, start time.Time) {
	err, ok := r.(error)
	if !ok {
		err = fmt.Errorf("%v", r)
	}
	ctx.Response.Reset()
	g.setSecurityHeaders(&ctx.Response.Header, !generation)
	c := g.app.AcquireCtx(ctx)
	defer g.app.ReleaseCtx(c)
	g.onError(c, err)
	route, method := routeObject, fiber.MethodGet
	if generation {
		route, method = routeGenerations, fiber.MethodPost
	}
	g.metrics.series(route, method, ctx.Response.StatusCode()).observe(time.Since(start))
}
