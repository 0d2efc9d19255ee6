package gateway

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/inference"
)

// streamGenerator is the part of the inference client that streams
// progress; a Generator without it still works, its streams then carry no
// progress before the completed events.
type streamGenerator interface {
	GenerateStream(ctx context.Context, model string, req inference.Request, progress func(inference.Progress)) (inference.Result, inference.ModelInfo, error)
}

// progressHub fans the progress of one generation out to every request
// waiting for it: coalesced waiters share one generation, so they share
// its one progress stream. Keyed by content key.
type progressHub struct {
	mu   sync.Mutex
	subs map[string]map[*genWatch]int // content key → watch → image index
	// waiting counts the requests of this gateway waiting for each
	// content key; loads cancels the generation running for it.
	waiting map[string]int
	loads   map[string]context.CancelFunc
}

func newProgressHub() *progressHub {
	return &progressHub{subs: map[string]map[*genWatch]int{}, waiting: map[string]int{}, loads: map[string]context.CancelFunc{}}
}

// join counts a request waiting for ks. Its leave(abandon) uncounts it;
// abandon (the owner cancelled the job) with nobody else waiting stops
// the generation, so the tier cancels it on the GPU unless another
// gateway's caller shares it. A request that merely timed out does not
// abandon: its image is still made and cached for the retry.
func (h *progressHub) join(ks string) (leave func(abandon bool)) {
	h.mu.Lock()
	h.waiting[ks]++
	h.mu.Unlock()
	return func(abandon bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.waiting[ks]--
		if h.waiting[ks] > 0 {
			return
		}
		delete(h.waiting, ks)
		if cancel := h.loads[ks]; abandon && cancel != nil {
			cancel()
		}
	}
}

// loading registers the cancel of the generation running for ks; the
// returned func unregisters it.
func (h *progressHub) loading(ks string, cancel context.CancelFunc) func() {
	h.mu.Lock()
	h.loads[ks] = cancel
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.loads, ks)
		h.mu.Unlock()
	}
}

// add has w receive the progress of the generation for ks as image index;
// the returned func stops it.
func (h *progressHub) add(ks string, w *genWatch, index int) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[ks] == nil {
		h.subs[ks] = map[*genWatch]int{}
	}
	h.subs[ks][w] = index
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[ks], w)
		if len(h.subs[ks]) == 0 {
			delete(h.subs, ks)
		}
	}
}

func (h *progressHub) publish(ks string, pr inference.Progress) {
	h.mu.Lock()
	type target struct {
		w     *genWatch
		index int
	}
	var ts []target
	for w, i := range h.subs[ks] {
		ts = append(ts, target{w, i})
	}
	h.mu.Unlock()
	for _, t := range ts {
		t.w.progress(t.index, pr)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data []byte
}

// maxPartialImages is OpenAI's cap on partial_images.
const maxPartialImages = 3

// genWatch collects the events of one request's generation (a stream or
// a job): progress, partial images, then completed events or an error. It
// keeps them all, so a reader joining late (a job's second /events) sees
// the whole story; partial images are few (partial_images ≤ 3 per image).
type genWatch struct {
	size     string
	partials int // partial images wanted per image

	mu      sync.Mutex
	events  []sseEvent
	sent    map[int]int // partial images sent, by image index
	last    map[int]float32
	changed chan struct{}
	done    bool
	// held, when set, learns the credit holds a run reserved before any
	// of its images reaches the GPU (a job records them, so a gateway
	// taking the job over after a crash gives them back at once).
	held func(holdIDs []string)
}

func newGenWatch(p params, partials int) *genWatch {
	return &genWatch{
		size: strconv.Itoa(p.Width) + "x" + strconv.Itoa(p.Height), partials: min(max(partials, 0), maxPartialImages),
		sent: map[int]int{}, last: map[int]float32{}, changed: make(chan struct{}),
	}
}

func (w *genWatch) emitLocked(name string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	w.events = append(w.events, sseEvent{name: name, data: data})
	close(w.changed)
	w.changed = make(chan struct{})
}

// progressJSON is imagegate's own progress event; OpenAI defines none.
// Clients that know only OpenAI's two event types skip it.
type progressJSON struct {
	Type       string  `json:"type"`
	ImageIndex int     `json:"image_index"`
	Progress   float32 `json:"progress"`
	Stage      string  `json:"stage,omitempty"`
}

// imageEventJSON is OpenAI's image_generation.partial_image and
// image_generation.completed, plus imagegate's image_index, seed and url.
type imageEventJSON struct {
	Type              string `json:"type"`
	B64JSON           string `json:"b64_json"`
	CreatedAt         int64  `json:"created_at"`
	Size              string `json:"size"`
	Quality           string `json:"quality"`
	Background        string `json:"background"`
	OutputFormat      string `json:"output_format"`
	PartialImageIndex *int   `json:"partial_image_index,omitempty"`
	ImageIndex        int    `json:"image_index"`
	Seed              uint32 `json:"seed,omitempty"`
	URL               string `json:"url,omitempty"`
}

func (w *genWatch) progress(index int, pr inference.Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if pr.Fraction > w.last[index] || pr.Stage != "" {
		w.last[index] = max(w.last[index], pr.Fraction)
		w.emitLocked("imagegate.progress", progressJSON{Type: "imagegate.progress", ImageIndex: index, Progress: w.last[index], Stage: pr.Stage})
	}
	if len(pr.PartialImage) > 0 && w.sent[index] < w.partials {
		k := w.sent[index]
		w.sent[index]++
		w.emitLocked("image_generation.partial_image", imageEventJSON{
			Type: "image_generation.partial_image", B64JSON: base64.StdEncoding.EncodeToString(pr.PartialImage),
			CreatedAt: time.Now().Unix(), Size: w.size, Quality: "auto", Background: "opaque",
			OutputFormat: formatOf(pr.PartialImageType), PartialImageIndex: &k, ImageIndex: index,
		})
	}
}

// finish ends the watch with the completed images or the error.
func (w *genWatch) finish(completed []imageEventJSON, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if err != nil {
		ae := classify(err)
		w.emitLocked("error", map[string]any{"type": "error", "error": errorDetail{Message: ae.Msg, Type: ae.Type, Code: ae.Code}})
	}
	for _, c := range completed {
		w.emitLocked("image_generation.completed", c)
	}
	w.done = true
}

// next returns the events after the first n, a channel closed when more
// arrive, and whether the watch is finished.
func (w *genWatch) next(n int) ([]sseEvent, <-chan struct{}, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events[min(n, len(w.events)):], w.changed, w.done
}

func formatOf(contentType string) string {
	if ext, err := extFor(contentType); err == nil {
		if ext == "jpg" {
			return "jpeg"
		}
		return ext
	}
	return "png"
}

// completedEvents reads every result's bytes into OpenAI's completed event.
func (g *Gateway) completedEvents(ctx context.Context, base string, results []result) ([]imageEventJSON, error) {
	out := make([]imageEventJSON, len(results))
	for i, r := range results {
		octx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
		data, err := g.cache.Object(octx, r.entry.Object, r.entry.Ext)
		cancel()
		if err != nil {
			return nil, err
		}
		out[i] = imageEventJSON{
			Type: "image_generation.completed", B64JSON: base64.StdEncoding.EncodeToString(data),
			CreatedAt: g.now().Unix(), Size: strconv.Itoa(r.entry.Width) + "x" + strconv.Itoa(r.entry.Height),
			Quality: "auto", Background: "opaque", OutputFormat: formatOf(r.entry.ContentType),
			ImageIndex: i, Seed: uint32(r.entry.Seed), URL: base + g.signer.Sign("/o/"+r.entry.Object+"."+r.entry.Ext),
		}
	}
	return out, nil
}

// stream answers a generation with server-sent events. The response is
// committed (200) once the request is valid; what goes wrong after that
// is an error event. A comment line every StreamHeartbeat keeps CDNs and
// proxies from cutting a long generation (Cloudflare ends an origin
// response idle for 100 s).
func (g *Gateway) stream(c *fiber.Ctx, p params, partials int) error {
	py := g.payerOf(c)
	if err := py.checkSize(p.Width, p.Height); err != nil {
		return err
	}
	if err := g.moderator.CheckPrompt(context.Background(), moderationSubject(py), moderationRequest(p)); err != nil {
		return err
	}
	refresh := noCache(c.Get(fiber.HeaderCacheControl))
	base := g.baseURL(c)
	w := newGenWatch(p, partials)
	// The generation outlives the handler (fiber.Ctx is recycled) but not
	// the client: when the stream cannot be written, it stops waiting, and
	// unspent credits come back as for any request that gave up.
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.JobTimeout)
	go func() {
		results, err := g.generateWatched(ctx, p, py, refresh, w)
		var completed []imageEventJSON
		if err == nil {
			completed, err = g.completedEvents(ctx, base, results)
		}
		w.finish(completed, err)
	}()
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no") // nginx: pass events on as they come
	heartbeat := g.cfg.StreamHeartbeat
	c.Context().SetBodyStreamWriter(func(bw *bufio.Writer) {
		defer cancel()
		writeEvents(bw, w, heartbeat)
	})
	return nil
}

// writeEvents writes w's events to bw as they come, a heartbeat comment
// when none came for heartbeat, until w finishes or bw fails.
func writeEvents(bw *bufio.Writer, w *genWatch, heartbeat time.Duration) {
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	// A first comment sends the headers now: the client knows the stream
	// is open before the first event, which may be minutes away.
	bw.WriteString(": open\n\n")
	n := 0
	for {
		evs, changed, done := w.next(n)
		for _, ev := range evs {
			bw.WriteString("event: ")
			bw.WriteString(ev.name)
			bw.WriteString("\ndata: ")
			bw.Write(ev.data)
			bw.WriteString("\n\n")
		}
		n += len(evs)
		if err := bw.Flush(); err != nil || done {
			return
		}
		select {
		case <-changed:
		case <-tick.C:
			bw.WriteString(": keep-alive\n\n")
		}
	}
}
