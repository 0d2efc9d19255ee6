package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/store"
)

// generationJSON is the body of POST /v1/images/generations. Unknown fields
// are refused so a typo ("sise") is not silently ignored; fields the OpenAI
// API defines but imagegate does not use are accepted and ignored so
// existing SDKs work unchanged.
type generationJSON struct {
	Prompt         string   `json:"prompt"`
	N              *int     `json:"n"`
	Size           string   `json:"size"`
	ResponseFormat string   `json:"response_format"`
	Seed           *int64   `json:"seed"`
	Style          string   `json:"style"`
	Model          string   `json:"model"`
	NegativePrompt string   `json:"negative_prompt"`
	Private        bool     `json:"private"`
	Steps          *int     `json:"steps"`
	Guidance       *float64 `json:"guidance"`
	// Stream answers with server-sent events; PartialImages (0–3) is how
	// many previews per image the stream may carry.
	Stream        bool `json:"stream"`
	PartialImages *int `json:"partial_images"`

	// OpenAI fields accepted and ignored.
	User              string `json:"user"`
	Quality           string `json:"quality"`
	Background        string `json:"background"`
	Moderation        string `json:"moderation"`
	OutputFormat      string `json:"output_format"`
	OutputCompression *int   `json:"output_compression"`
}

// imagesResponse is the OpenAI Images response shape.
type imagesResponse struct {
	Created int64       `json:"created"`
	Data    []imageData `json:"data"`
}

type imageData struct {
	URL     string `json:"url,omitempty"`
	B64JSON string `json:"b64_json,omitempty"`
	Seed    uint32 `json:"seed"`
}

func (g *Gateway) generations(c *fiber.Ctx) error {
	body := c.Body()
	if len(body) > g.cfg.MaxJSONBytes { // the route skips smallBody: it is charged first
		return errBodyTooLarge(g.cfg.MaxJSONBytes)
	}
	catalog := g.catalog.models.Load()
	pg := g.parsed.get(body, catalog)
	var p params
	var stream bool
	partials := 0
	if pg != nil {
		p, stream, partials = pg.p, pg.stream, pg.partials
	} else {
		var req generationJSON
		if err := decodeJSON(body, &req); err != nil {
			return err
		}
		var err error
		p, err = g.validate(raw{
			Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, N: req.N, Size: req.Size,
			Format: req.ResponseFormat, Seed: req.Seed, Style: req.Style, Model: req.Model,
			Steps: req.Steps, Guidance: req.Guidance, Private: req.Private,
		})
		if err != nil {
			return err
		}
		if req.PartialImages != nil {
			if *req.PartialImages < 0 || *req.PartialImages > maxPartialImages {
				return badRequest("invalid_partial_images", "partial_images: must be between 0 and 3")
			}
			partials = *req.PartialImages
		}
		stream = req.Stream
		if !p.Private && catalog != nil {
			// Keys of public requests depend on the body alone: keep them.
			pg = &parsedGeneration{catalog: catalog, p: p, stream: stream, partials: partials}
			pg.keys, pg.seed = contentKeys(p, "")
			pg.refs = make([]string, len(pg.keys))
			pg.links = make([]atomic.Pointer[signedLink], len(pg.keys))
			for i, k := range pg.keys {
				pg.refs[i] = k.String()
			}
			g.parsed.put(body, pg)
		}
	}
	// Partner widgets get their own, synchronous answer.
	if pt := partnerOf(c); pt != nil {
		return g.respondForPartner(c, *pt, p, pg)
	}
	if async, err := g.wantsAsync(c); err != nil {
		return err
	} else if async {
		return g.submitJob(c, p, body, partials)
	}
	if stream {
		return g.stream(c, p, partials)
	}
	return g.respond(c, p, pg)
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "uint32", "uint64", "float64", "float32":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "ptr":
		return "a number"
	}
	return "of another type"
}

// respond generates (or finds) every image of p and writes the response.
// keyed, when not nil, holds p's content keys already computed.
func (g *Gateway) respond(c *fiber.Ctx, p params, keyed *parsedGeneration) error {
	py := g.payerOf(c)
	if err := py.checkSize(p.Width, p.Height); err != nil {
		return err
	}
	// The request's deadline starts a timer only where work can wait:
	// on a miss (one) and when reading bytes for b64_json. A hit needs none.
	ctx := context.Background()
	// Moderation first: a blocked request reserves, generates and stores
	// nothing (promise C6).
	if err := g.moderator.CheckPrompt(ctx, moderationSubject(py), moderationRequest(p)); err != nil {
		return err
	}
	refresh := noCache(c.Get(fiber.HeaderCacheControl))
	if g.jobs != nil && g.cfg.AsyncJobs.After > 0 && p.Reference == nil {
		return g.respondOrDefer(c, p, py, refresh)
	}

	var resultsBuf [maxImages]result
	results := resultsBuf[:p.N]
	if err := g.resolveAllFrom(ctx, &p, py, refresh, keyed, nil, results, handedHits(c, keyed, refresh)); err != nil {
		return err
	}
	return g.writeImagesKeyed(c, p, results, refresh, keyed)
}

// writeImages writes the images response for results.
func (g *Gateway) writeImages(c *fiber.Ctx, p params, results []result, refresh bool) error {
	return g.writeImagesKeyed(c, p, results, refresh, nil)
}

// writeImagesKeyed writes the images response for results, appended into
// a pooled buffer; keyed, when not nil, keeps the links signed lately.
func (g *Gateway) writeImagesKeyed(c *fiber.Ctx, p params, results []result, refresh bool, keyed *parsedGeneration) error {
	bp := g.bodies.Get().(*[]byte)
	defer g.putBody(bp)
	var o origin
	if g.cfg.CDNURL == "" && g.cfg.PublicURL == "" {
		o = origin{scheme: c.Protocol(), host: c.Request().Host()}
	}
	b, err := g.appendImagesJSON((*bp)[:0], o, p, results, keyed, time.Now())
	*bp = b
	if err != nil {
		return err
	}
	setImagesHeaders(&c.Response().Header, results, refresh)
	c.Response().SetBody(b)
	return nil
}

// putBody recycles a response buffer; b64_json bodies are not worth
// keeping.
func (g *Gateway) putBody(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		g.bodies.Put(bp)
	}
}

// origin is where a request came to, for links when neither a CDN nor a
// public URL is configured: its scheme and Host.
type origin struct {
	scheme string
	host   []byte
}

// appendImagesJSON appends the images response body for results, created
// at now.
func (g *Gateway) appendImagesJSON(b []byte, o origin, p params, results []result, keyed *parsedGeneration, now time.Time) ([]byte, error) {
	b = append(b, `{"created":`...)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, `,"data":[`...)
	for i, r := range results {
		if i > 0 {
			b = append(b, ',')
		}
		if p.Format == "b64_json" {
			octx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
			data, err := g.cache.Object(octx, r.entry.Object, r.entry.Ext)
			cancel()
			if err != nil {
				return b, err
			}
			b = append(b, `{"b64_json":"`...) // base64 needs no escaping
			b = base64.StdEncoding.AppendEncode(b, data)
			b = append(b, `",`...)
		} else {
			var link *atomic.Pointer[signedLink]
			if keyed != nil {
				link = &keyed.links[i]
			}
			b = append(b, `{"url":`...)
			b = g.appendOutputURL(b, o, r.entry, link)
			b = append(b, ',')
		}
		b = append(b, `"seed":`...)
		b = strconv.AppendUint(b, uint64(uint32(r.entry.Seed)), 10)
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// setImagesHeaders sets the headers of an images response.
func setImagesHeaders(h *fasthttp.ResponseHeader, results []result, refresh bool) {
	if st := hitStatus(results); st != nil {
		h.SetCanonical(headerCacheStatus, st)
	} else {
		h.Set("Cache-Status", cacheStatus(results, refresh))
	}
	h.SetCanonical(headerCacheControl, valueNoStore)
	h.SetContentType(fiber.MIMEApplicationJSON)
}

// Header names and values the hit path sets, as bytes (no conversion).
var (
	headerCacheStatus  = []byte("Cache-Status")
	headerCacheControl = []byte(fiber.HeaderCacheControl)
	valueNoStore       = []byte("no-store")
	hitStatusL1        = []byte("imagegate; hit; detail=" + cache.TierL1.String())
	hitStatusL2        = []byte("imagegate; hit; detail=" + cache.TierL2.String())
	hitStatusL3        = []byte("imagegate; hit; detail=" + cache.TierL3.String())
)

// hitStatus is the Cache-Status of a response whose every image was a hit
// (what cacheStatus would say), or nil.
func hitStatus(rs []result) []byte {
	tier := cache.TierL1
	for _, r := range rs {
		if r.outcome.Tier == cache.TierMiss {
			return nil
		}
		tier = max(tier, r.outcome.Tier)
	}
	switch tier {
	case cache.TierL1:
		return hitStatusL1
	case cache.TierL2:
		return hitStatusL2
	case cache.TierL3:
		return hitStatusL3
	}
	return nil
}

// appendOutputURL appends the signed link of e's output as a JSON string.
// link, when not nil, keeps the last link signed for this image, reused
// within its second.
func (g *Gateway) appendOutputURL(b []byte, o origin, e cache.Entry, link *atomic.Pointer[signedLink]) []byte {
	start := len(b)
	b = append(b, '"')
	switch {
	case g.cfg.CDNURL != "":
		b = append(b, strings.TrimSuffix(g.cfg.CDNURL, "/")...)
	case g.cfg.PublicURL != "":
		b = append(b, strings.TrimSuffix(g.cfg.PublicURL, "/")...)
	default:
		b = append(b, o.scheme...)
		b = append(b, "://"...)
		b = append(b, o.host...)
	}
	issued := g.signer.Issued()
	if l := loadLink(link); l != nil && l.issued == issued && l.object == e.Object && l.ext == e.Ext {
		b = append(b, l.path...)
	} else {
		var pathBuf [128]byte
		path := append(pathBuf[:0], "/o/"...)
		path = append(path, e.Object...)
		path = append(path, '.')
		path = append(path, e.Ext...)
		at := len(b)
		b = g.signer.AppendSignAt(b, path, issued)
		if link != nil {
			link.Store(&signedLink{issued: issued, object: e.Object, ext: e.Ext, path: bytes.Clone(b[at:])})
		}
	}
	for _, ch := range b[start+1:] {
		if ch < 0x20 || ch == '"' || ch == '\\' || ch == '<' || ch == '>' || ch == '&' {
			// Rare (an odd Host header): escape as encoding/json would.
			return appendJSONString(b[:start], string(b[start+1:]))
		}
	}
	return append(b, '"')
}

func loadLink(p *atomic.Pointer[signedLink]) *signedLink {
	if p == nil {
		return nil
	}
	return p.Load()
}

// appendJSON appends the response's JSON encoding, as encoding/json would
// write it, without reflection: this is the hot path of every cache hit.
func (r imagesResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"created":`...)
	b = strconv.AppendInt(b, r.Created, 10)
	b = append(b, `,"data":[`...)
	for i, d := range r.Data {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if d.URL != "" {
			b = append(b, `"url":`...)
			b = appendJSONString(b, d.URL)
			b = append(b, ',')
		}
		if d.B64JSON != "" {
			b = append(b, `"b64_json":`...)
			b = appendJSONString(b, d.B64JSON)
			b = append(b, ',')
		}
		b = append(b, `"seed":`...)
		b = strconv.AppendUint(b, uint64(d.Seed), 10)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// appendJSONString appends s as a JSON string, escaping as encoding/json
// does for ASCII (quotes, backslashes, control characters with their short
// forms where JSON has one, and <, >, & for HTML); other bytes pass as
// they are, which is valid JSON for valid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	clean := true
	for i := 0; i < len(s) && clean; i++ {
		c := s[i]
		clean = c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	if clean { // URLs and base64: nothing to escape
		b = append(b, s...)
		return append(b, '"')
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

type result struct {
	entry   cache.Entry
	outcome cache.Outcome
}

// contentKeys returns the content keys of p's images for scope, and the
// seed of the first: image i uses seed+i, so each has its own cache entry
// and a request for n=1 shares its image with the first of an n=4 request.
func contentKeys(p params, scope string) ([]cache.Key, uint32) {
	base := cache.Request{
		Model:           p.Model.Name,
		ModelVersion:    p.Model.Version,
		CaseInsensitive: p.Model.CaseInsensitive,
		Prompt:          p.Prompt,
		NegativePrompt:  p.NegativePrompt,
		Width:           p.Width,
		Height:          p.Height,
		Steps:           p.Steps,
		Guidance:        p.Guidance,
		Style:           p.Style,
		Format:          "png",
		ReferenceSHA256: p.ReferenceSHA256,
		Strength:        p.Strength,
		Scope:           scope,
	}
	var seed uint32
	if p.Seed != nil {
		seed = *p.Seed
	} else {
		seed = uint32(cache.DeriveSeed(base))
	}
	keys := make([]cache.Key, p.N)
	for i := range keys {
		req := base
		req.Seed = uint64(seed + uint32(i))
		keys[i] = req.Key()
	}
	return keys, seed
}

// generate resolves each of the n images through the cache, concurrently.
// Image i uses seed base+i, so each has its own cache entry and a request
// for n=1 shares its image with the first of an n=4 request.
func (g *Gateway) generate(ctx context.Context, p params, py payer, refresh bool) ([]result, error) {
	return g.generateWatched(ctx, p, py, refresh, nil)
}

// generateWatched is generate reporting the progress of each image that
// reaches the GPU to w, when w is not nil.
func (g *Gateway) generateWatched(ctx context.Context, p params, py payer, refresh bool, w *genWatch) ([]result, error) {
	results := make([]result, p.N)
	if err := g.resolveAll(ctx, &p, py, refresh, nil, w, results); err != nil {
		return nil, err
	}
	return results, nil
}

// resolveAll resolves each of the n images of p through the cache into
// results (len p.N), concurrently, reporting misses' progress to w when
// not nil. keyed, when not nil, holds p's content
// keys (of a public request). A hit allocates nothing here: the misses'
// concurrent work, whose closures would move everything to the heap, is
// in generateMisses.
func (g *Gateway) resolveAll(ctx context.Context, p *params, py payer, refresh bool, keyed *parsedGeneration, w *genWatch, results []result) error {
	return g.resolveAllFrom(ctx, p, py, refresh, keyed, w, results, nil)
}

// resolveAllFrom is resolveAll going on from what the hit path did for
// the request before handing it over (pre, when not nil): images it
// found are not looked up again, and those it finished (judged, charged,
// remembered) are not finished twice.
func (g *Gateway) resolveAllFrom(ctx context.Context, p *params, py payer, refresh bool, keyed *parsedGeneration, w *genWatch, results []result, pre *hitHandoff) error {
	var keys []cache.Key
	var refs []string
	var seed uint32
	if keyed != nil {
		keys, refs, seed = keyed.keys, keyed.refs, keyed.seed
	} else {
		scope := ""
		switch {
		case !p.Private && p.Reference == nil:
		case py.accountID != "":
			// Private results are namespaced by their owner: nobody else can
			// learn from a cache hit that this account asked the same thing.
			scope = "account:" + py.accountID
		default:
			// An anonymous visitor has no stable identity to namespace by, so
			// each private request gets a scope of its own.
			var b [16]byte
			rand.Read(b[:])
			scope = "private:" + hex.EncodeToString(b[:])
		}
		keys, seed = contentKeys(*p, scope)
	}

	var missesBuf [maxImages]int
	misses := missesBuf[:0]
	start := time.Now()
	for i := range p.N {
		if pre != nil && pre.state[i] != handNone {
			results[i] = pre.results[i]
			if pre.state[i] == handRegen {
				misses = append(misses, i)
			}
			continue
		}
		if !refresh {
			if e, o, ok := g.cache.Peek(keys[i]); ok {
				results[i] = result{entry: e, outcome: o}
				continue
			}
		}
		misses = append(misses, i)
	}
	var regen [maxImages]bool // hits on outputs being reaped: generated again
	for i := range p.N {
		if pre != nil && pre.state[i] >= handDone {
			regen[i] = pre.state[i] == handRegen
			continue
		}
		if !slices.Contains(misses, i) {
			ks := keyRef(keys, refs, i)
			if err := g.rejudge(ctx, py, *p, keys[i], &results[i]); err != nil {
				return err
			}
			if err := g.chargeHit(py, ks); err != nil {
				return err
			}
			if err := g.remember(py, *p, ks, results[i].entry, results[i].outcome, start); err != nil {
				regen[i] = true
				misses = append(misses, i)
			}
		}
	}
	if len(misses) == 0 {
		return nil
	}
	missRefs := make([]string, len(misses))
	again := make([]bool, len(misses))
	for j, i := range misses {
		missRefs[j] = keyRef(keys, refs, i)
		again[j] = refresh || regen[i]
	}
	missed, err := g.generateMisses(ctx, *p, py, slices.Clone(misses), keys, missRefs, seed, again, start, w)
	for j, i := range misses {
		results[i] = missed[j]
	}
	return err
}

// keyRef is keys[i].String(), from refs when they were computed before.
func keyRef(keys []cache.Key, refs []string, i int) string {
	if refs != nil {
		return refs[i]
	}
	return keys[i].String()
}

// generateMisses resolves the images misses of p (indexes into keys) that
// were not in this node's tiers, concurrently; refs[j] is the key of
// misses[j] as a string, again[j] whether it must be generated afresh.
func (g *Gateway) generateMisses(ctx context.Context, p params, py payer, misses []int, keys []cache.Key, refs []string, seed uint32, again []bool, start time.Time, w *genWatch) ([]result, error) {
	// Every image that may reach the GPU is paid for first, all or none:
	// rate-limit units, then credits or quota.
	costs := g.cfg.RateLimits.Costs
	if err := py.rate.Extra(len(misses) * (costs.GenerationMiss - costs.GenerationHit)); err != nil {
		return make([]result, len(misses)), err
	}
	// A model the tier's catalogue prices costs that per image; others
	// cost the plan table's price for the size (as GET /v1/models says).
	cost := g.imagePrice(p.Model, max(p.Width, p.Height))
	// A job's run records its credit holds' IDs on the job before the
	// holds exist, so whichever moment its gateway dies, a gateway taking
	// the job over finds every hold to give back (an ID recorded but never
	// held releases nothing).
	var holdIDs []string
	if w != nil && w.held != nil && py.holdsCredits(cost) {
		holdIDs = make([]string, len(refs))
		for i := range holdIDs {
			holdIDs[i] = store.NewID("hold_")
		}
		w.held(holdIDs)
	}
	tickets, err := g.reserveAll(py, cost, refs, holdIDs)
	if err != nil {
		return make([]result, len(misses)), err
	}
	timeout := g.cfg.RequestTimeout
	if w != nil {
		timeout = g.cfg.JobTimeout // streams and jobs outlast a CDN's limit
		for j, i := range misses {
			defer g.progress.add(refs[j], w, i)()
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Siblings are never cancelled: each image's generation runs to its
	// end and settles its own ticket, so no image is ever generated free.
	results := make([]result, len(misses))
	errs := make([]error, len(misses))
	var wg sync.WaitGroup
	for j, i := range misses {
		wg.Go(func() {
			results[j], errs[j] = g.one(ctx, p, py, keys[i], refs[j], uint64(seed+uint32(i)), again[j], tickets[j], start)
		})
	}
	wg.Wait()
	return results, errors.Join(errs...)
}

// one resolves a single image that was not in this node's tiers, with its
// ticket already reserved. The ticket is settled by the request's own
// generation if one runs, and given back here otherwise.
func (g *Gateway) one(ctx context.Context, p params, py payer, key cache.Key, ks string, seed uint64, refresh bool, t *ticket, start time.Time) (result, error) {
	leave := g.progress.join(ks)
	r, err := g.resolve(ctx, p, py, key, ks, seed, refresh, t)
	// A job cancelled by its owner, stopped by a shutdown to run again
	// after it, or taken over by another gateway, leaves no reason to keep
	// the GPU busy.
	cause := context.Cause(ctx)
	leave(errors.Is(cause, errJobCancelled) || errors.Is(cause, errGatewayStopping) || errors.Is(cause, errLeaseLost))
	if ctx.Err() != nil {
		t.waiterGone.Store(true) // a generation still running is refunded
	}
	g.releaseUnlessLoading(t)
	if err == nil && r.outcome.Tier != cache.TierMiss {
		err = g.rejudge(ctx, py, p, key, &r)
	}
	if err == nil && r.outcome.Tier != cache.TierMiss {
		err = g.chargeHit(py, ks)
	}
	if err == nil {
		err = g.remember(py, p, ks, r.entry, r.outcome, start)
	}
	return r, err
}

// errRequestGone stops a generation whose request stopped waiting before it
// began: nobody would pay for it.
var errRequestGone = unavailable("the request ended before its generation began; retry", 1, nil)

// pendingFor is how long a just-generated output is kept before its
// requester records an owner (longer than any request may take).
const pendingFor = time.Hour

// resolve finds or generates the image for key.
func (g *Gateway) resolve(ctx context.Context, p params, py payer, key cache.Key, ks string, seed uint64, refresh bool, t *ticket) (result, error) {
	m := p.Model
	load := func(ctx context.Context) (_ cache.Generated, err error) {
		if !t.claimForLoad() {
			return cache.Generated{}, errRequestGone
		}
		produced := false
		defer func() { g.finishLoad(t, produced) }()
		res, info, err := g.generateOne(ctx, m.Name, ks, inference.Request{
			Prompt:         p.Prompt,
			NegativePrompt: p.NegativePrompt,
			Width:          p.Width,
			Height:         p.Height,
			Seed:           seed,
			Steps:          p.Steps,
			Guidance:       p.Guidance,
			Style:          p.Style,
			Reference:      p.Reference,
			Strength:       p.Strength,
			Scheduling:     g.schedulingFor(py),
		})
		if err != nil {
			return cache.Generated{}, err
		}
		if info.Version != m.Version {
			// The tier was upgraded under us: this key names the old
			// version, so storing the new bytes under it would be a lie.
			go g.catalog.refresh(context.WithoutCancel(ctx), g.gen)
			return cache.Generated{}, unavailable("the model was just upgraded; retry", 1,
				fmt.Errorf("gateway: model %s version changed from %s to %s", m.Name, m.Version, info.Version))
		}
		ext, err := extFor(res.ContentType)
		if err != nil {
			return cache.Generated{}, err
		}
		// Checked before the cache stores anything: a flagged output is
		// never written to the object store (promise C6).
		policy, err := g.moderator.JudgeOutput(ctx, moderationSubject(py), moderationRequest(p), res.Image, res.ContentType)
		if err != nil {
			return cache.Generated{}, err
		}
		// Referenced before it is stored: whatever becomes of the request
		// (it gives up, fails, its account is being erased), the output
		// expires with this reference rather than being kept forever.
		// Under life.deleting: this node's reaper is never midway through
		// deleting the same bytes (equal requests make equal images).
		g.life.deleting.Lock()
		err = g.store.PendingObject(edge.HashHex(res.Image), ext, m.Name, info.Version, ks, g.now().Add(pendingFor))
		g.life.deleting.Unlock()
		if err != nil {
			return cache.Generated{}, err
		}
		produced = true
		return cache.Generated{
			Data: res.Image, ContentType: res.ContentType, Ext: ext,
			Width: res.Width, Height: res.Height, Seed: seed,
			Model: m.Name, ModelVersion: info.Version, Policy: policy,
		}, nil
	}
	e, o, err := g.cache.Get(ctx, key, refresh, load)
	return result{entry: e, outcome: o}, err
}

// generateOne asks the tier for one image, streaming its progress to the
// requests waiting for ks when the client can.
func (g *Gateway) generateOne(ctx context.Context, model, ks string, req inference.Request) (inference.Result, inference.ModelInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer g.progress.loading(ks, cancel)()
	if sg, ok := g.gen.(streamGenerator); ok {
		return sg.GenerateStream(ctx, model, req, func(pr inference.Progress) { g.progress.publish(ks, pr) })
	}
	return g.gen.Generate(ctx, model, req)
}

// rejudge judges a cached output again when it was judged under another
// content policy than this gateway's (a rule added since it was made),
// before it is served or charged: a refusal is the same 400 a fresh
// output would get. A pass is recorded, so the next hit costs only the
// version comparison.
func (g *Gateway) rejudge(ctx context.Context, py payer, p params, key cache.Key, r *result) error {
	version := g.moderator.Version()
	if r.entry.Policy == version {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	data, err := g.cache.Object(octx, r.entry.Object, r.entry.Ext)
	if err != nil {
		return err
	}
	policy, err := g.moderator.JudgeOutput(octx, moderationSubject(py), moderationRequest(p), data, r.entry.ContentType)
	if err != nil {
		return err
	}
	if policy == 0 {
		return nil // passed with a classifier unheard (fail open): judged again next time
	}
	r.entry.Policy = policy
	if err := g.cache.Rejudged(key, policy); err != nil {
		g.logger.Warn("re-judged output not recorded", "err", err)
	}
	return nil
}

func extFor(contentType string) (string, error) {
	switch contentType {
	case "image/png":
		return "png", nil
	case "image/jpeg":
		return "jpg", nil
	case "image/webp":
		return "webp", nil
	}
	return "", fmt.Errorf("gateway: inference returned unsupported content type %q", contentType)
}

// noCache reports whether a request's Cache-Control asks for a fresh
// generation.
func noCache(cc string) bool {
	if cc == "" {
		return false
	}
	for _, d := range strings.Split(cc, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "no-cache" || d == "no-store" {
			return true
		}
		if v, ok := strings.CutPrefix(d, "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil && n == 0 {
				return true
			}
		}
	}
	return false
}

// cacheStatus renders the RFC 9211 Cache-Status for the whole response: a
// hit only if every image was; otherwise why we went forward and what
// happened.
func cacheStatus(rs []result, refresh bool) string {
	hit, collapsed, stored := true, false, false
	tier := cache.TierL1
	for _, r := range rs {
		if r.outcome.Tier == cache.TierMiss {
			hit = false
		} else if r.outcome.Tier > tier {
			tier = r.outcome.Tier
		}
		collapsed = collapsed || r.outcome.Collapsed
		stored = stored || r.outcome.Stored
	}
	if hit {
		return "imagegate; hit; detail=" + tier.String()
	}
	s := "imagegate; fwd=miss"
	if refresh {
		s = "imagegate; fwd=request"
	}
	if collapsed {
		s += "; collapsed"
	}
	if stored {
		s += "; stored"
	}
	return s
}

// baseURL is the origin output links start with.
func (g *Gateway) baseURL(c *fiber.Ctx) string {
	switch {
	case g.cfg.CDNURL != "":
		return strings.TrimSuffix(g.cfg.CDNURL, "/")
	case g.cfg.PublicURL != "":
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	return c.Protocol() + "://" + string(c.Request().Host())
}
