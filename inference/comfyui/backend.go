package comfyui

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // ComfyUI can save JPEG and WebP through custom nodes
	"image/png"
	"io"
	"maps"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	_ "golang.org/x/image/webp"

	"github.com/imagegate/imagegate/inference"
)

// Defaults.
const (
	DefaultMaxImageBytes = 64 << 20
	// maxMessageBytes bounds one websocket frame: previews are JPEGs of
	// the latent, far smaller.
	maxMessageBytes = 16 << 20
	// maxJSONBytes bounds a JSON response (history, prompt, upload).
	maxJSONBytes = 8 << 20
	// cleanupTimeout bounds the calls made after a generation ends or is
	// canceled (queue delete, interrupt, overwriting the reference).
	cleanupTimeout = 10 * time.Second
)

// Server is one ComfyUI server.
type Server struct {
	// URL is the server's base, e.g. http://10.0.0.5:8188 or a pod's
	// proxy URL https://POD-8188.proxy.runpod.net. Its websocket is the
	// same URL with ws:// or wss://.
	URL string
	// Slots is how many prompts the tier sends it at once. ComfyUI runs one
	// prompt at a time, so 1 (the default) keeps the queue, and with it
	// fairness, in the tier; 2 overlaps upload and download with sampling.
	Slots int
	// Token, when set, is sent as "Authorization: Bearer <Token>", for a
	// server behind an authenticating proxy.
	Token string
}

// Config configures a Backend.
type Config struct {
	// Info describes the model; Kind should be "neural". Styles are set
	// from Workflows when empty.
	Info inference.ModelInfo
	// Servers run the workflows; at least one.
	Servers []Server
	// Workflows by style.
	Workflows map[string]Workflow
	// DefaultStyle serves requests that name no style or "auto"; empty
	// means the first style in sorted order.
	DefaultStyle string
	// EditWorkflow, when set, serves requests with a reference image; it
	// must use {{image}}.
	EditWorkflow *Workflow
	// DefaultSteps and DefaultGuidance fill requests that leave them zero.
	DefaultSteps    int
	DefaultGuidance float64
	// Checkpoints the model may load; the first fills {{checkpoint}}.
	Checkpoints []string
	// MaxImageBytes bounds a fetched image. Zero means 64 MiB.
	MaxImageBytes int64
	// HTTPClient makes every call; nil means a client with dial and
	// header timeouts (a generation's length is bounded by its context).
	HTTPClient *http.Client
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Info.Name == "" {
		errs = append(errs, errors.New("comfyui: model has no name"))
	}
	if len(c.Servers) == 0 {
		errs = append(errs, fmt.Errorf("comfyui: model %s has no servers", c.Info.Name))
	}
	for _, s := range c.Servers {
		if _, err := parseServerURL(s.URL); err != nil {
			errs = append(errs, err)
		}
		if s.Slots < 0 {
			errs = append(errs, fmt.Errorf("comfyui: server %s has negative slots", s.URL))
		}
	}
	if len(c.Workflows) == 0 {
		errs = append(errs, fmt.Errorf("comfyui: model %s has no workflows", c.Info.Name))
	}
	if c.DefaultStyle != "" {
		if _, ok := c.Workflows[c.DefaultStyle]; !ok {
			errs = append(errs, fmt.Errorf("comfyui: default style %q has no workflow", c.DefaultStyle))
		}
	}
	if c.EditWorkflow != nil && !c.EditWorkflow.Uses("image") {
		errs = append(errs, errors.New("comfyui: the edit workflow has no {{image}} placeholder"))
	}
	for style, w := range c.Workflows {
		if w.Uses("image") {
			errs = append(errs, fmt.Errorf("comfyui: workflow %q uses {{image}}: only the edit workflow may", style))
		}
	}
	if len(c.Info.Sizes) == 0 {
		errs = append(errs, fmt.Errorf("comfyui: model %s lists no sizes", c.Info.Name))
	}
	for _, s := range c.Info.Sizes {
		if s < 64 || s > 8192 || s%8 != 0 {
			errs = append(errs, fmt.Errorf("comfyui: size %d: want a multiple of 8 in 64..8192", s))
		}
	}
	if c.DefaultSteps < 0 || c.DefaultGuidance < 0 || c.MaxImageBytes < 0 {
		errs = append(errs, errors.New("comfyui: negative default"))
	}
	return errors.Join(errs...)
}

func parseServerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("comfyui: server URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("comfyui: server URL %q: want http(s)://host[:port][/path] without credentials", u.Redacted())
	}
	return u, nil
}

// Backend runs one model's workflows on ComfyUI servers. It is safe for
// concurrent use.
type Backend struct {
	cfg     Config
	info    inference.ModelInfo
	servers map[string]*server // by worker ID
	order   []string           // worker IDs in configuration order
	client  *http.Client
}

type server struct {
	base  *url.URL
	slots int
	token string
}

// New returns a backend for cfg.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxImageBytes == 0 {
		cfg.MaxImageBytes = DefaultMaxImageBytes
	}
	if cfg.DefaultStyle == "" {
		cfg.DefaultStyle = slices.Sorted(maps.Keys(cfg.Workflows))[0]
	}
	b := &Backend{cfg: cfg, info: cfg.Info, servers: map[string]*server{}, client: cfg.HTTPClient}
	if b.client == nil {
		b.client = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			Proxy:                 http.ProxyFromEnvironment,
		}}
	}
	if len(b.info.Styles) == 0 {
		b.info.Styles = slices.Sorted(maps.Keys(cfg.Workflows))
	}
	b.info.SupportsEdits = cfg.EditWorkflow != nil
	if b.info.Kind == "" {
		b.info.Kind = "neural"
	}
	for _, s := range cfg.Servers {
		u, _ := parseServerURL(s.URL)
		u.Path = strings.TrimSuffix(u.Path, "/")
		id := WorkerID(s.URL)
		if _, dup := b.servers[id]; dup {
			return nil, fmt.Errorf("comfyui: server %s listed twice", u.Redacted())
		}
		b.servers[id] = &server{base: u, slots: max(s.Slots, 1), token: s.Token}
		b.order = append(b.order, id)
	}
	return b, nil
}

// WorkerID names the worker a server URL is: models on the same server
// share it.
func WorkerID(serverURL string) string {
	return "comfyui " + strings.TrimSuffix(serverURL, "/")
}

// Info describes the model.
func (b *Backend) Info() inference.ModelInfo { return b.info }

// Workers lists the servers as the tier's scheduler sees them.
func (b *Backend) Workers() []inference.Worker {
	out := make([]inference.Worker, 0, len(b.order))
	for _, id := range b.order {
		out = append(out, inference.Worker{ID: id, Slots: b.servers[id].slots})
	}
	return out
}

// Generate runs req on the first server. The tier's scheduler calls
// GenerateOn instead, choosing the server.
func (b *Backend) Generate(ctx context.Context, req inference.Request, progress inference.ProgressFunc) (inference.Result, error) {
	return b.GenerateOn(ctx, b.order[0], req, progress, nil)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("comfyui: "+format+": %w", append(args, inference.ErrInvalidArgument)...)
}

// params checks req against the model and fills its defaults.
func (b *Backend) params(req inference.Request) (Workflow, Params, error) {
	for _, side := range [2]int{req.Width, req.Height} {
		if !slices.Contains(b.info.Sizes, side) {
			return Workflow{}, Params{}, invalid("size %dx%d: each side must be one of %v", req.Width, req.Height, b.info.Sizes)
		}
	}
	style := req.Style
	if style == "" || style == "auto" {
		style = b.cfg.DefaultStyle
	}
	w, ok := b.cfg.Workflows[style]
	if !ok {
		return Workflow{}, Params{}, invalid("unknown style %q", req.Style)
	}
	p := Params{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt,
		Width: req.Width, Height: req.Height, Seed: req.Seed,
		Steps: req.Steps, Guidance: float64(req.Guidance), Denoise: 1,
	}
	if len(req.Reference) > 0 {
		if b.cfg.EditWorkflow == nil {
			return Workflow{}, Params{}, invalid("model %s does not edit images", b.info.Name)
		}
		w = *b.cfg.EditWorkflow
		p.Denoise = float64(req.Strength)
		if p.Denoise == 0 {
			p.Denoise = 0.6
		}
	}
	if p.Steps == 0 {
		p.Steps = b.cfg.DefaultSteps
	}
	if p.Steps == 0 {
		p.Steps = 20
	}
	if p.Steps > 150 {
		return Workflow{}, Params{}, invalid("steps %d above 150", p.Steps)
	}
	if p.Guidance == 0 {
		p.Guidance = b.cfg.DefaultGuidance
	}
	if p.Guidance == 0 {
		p.Guidance = 7
	}
	if p.Guidance < 0 || p.Guidance > 30 {
		return Workflow{}, Params{}, invalid("guidance %v not in 0..30", p.Guidance)
	}
	if len(b.cfg.Checkpoints) > 0 {
		p.Checkpoint = b.cfg.Checkpoints[0]
	}
	return w, p, nil
}

// GenerateOn runs req on the server that is worker, passing ComfyUI's
// latent previews (when the server makes them, --preview-method) to
// preview.
func (b *Backend) GenerateOn(ctx context.Context, worker string, req inference.Request, progress inference.ProgressFunc, preview inference.PreviewFunc) (inference.Result, error) {
	srv, ok := b.servers[worker]
	if !ok {
		return inference.Result{}, fmt.Errorf("comfyui: no worker %q", worker)
	}
	if progress == nil {
		progress = func(float32, string) {}
	}
	if preview == nil {
		preview = func([]byte, string) {}
	}
	wf, p, err := b.params(req)
	if err != nil {
		return inference.Result{}, err
	}
	clientID := randomID()
	// The socket opens first so no message about the prompt is missed.
	ws, err := srv.dial(ctx, b.client, clientID)
	if err != nil {
		return inference.Result{}, err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(maxMessageBytes)
	progress(0.01, "connected") // each step of the way tells the watchdog it is alive

	if len(req.Reference) > 0 {
		name := "imagegate-" + randomID() + ".png"
		if p.Image, err = srv.upload(ctx, b.client, name, req.Reference); err != nil {
			return inference.Result{}, err
		}
		defer srv.blank(b.client, p.Image)
		progress(0.02, "uploaded")
	}

	// Submitting is not canceled with ctx: a prompt the server queued
	// while the caller left would run for nobody, its ID unknown. The
	// submission is short and has its own bound.
	qctx, qcancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	promptID, err := srv.queue(qctx, b.client, clientID, wf.Render(p))
	qcancel()
	if err != nil {
		return inference.Result{}, err
	}
	finished := false
	defer func() {
		if !finished {
			srv.cancel(b.client, promptID)
		}
	}()
	if err := ctx.Err(); err != nil {
		return inference.Result{}, err
	}
	progress(0.05, "queued")
	if err := follow(ctx, ws, promptID, progress, preview); err != nil {
		return inference.Result{}, err
	}
	finished = true
	ref, err := srv.history(ctx, b.client, promptID)
	if err != nil {
		return inference.Result{}, err
	}
	img, err := srv.view(ctx, b.client, ref, b.cfg.MaxImageBytes)
	if err != nil {
		return inference.Result{}, err
	}
	progress(1, "done")
	return toResult(img)
}

// follow reads the socket until promptID finishes, reporting progress:
// sampler steps map to 5–95 %, every other message keeps the report (and
// so the tier's watchdog) alive.
func follow(ctx context.Context, ws *websocket.Conn, promptID string, progress inference.ProgressFunc, preview inference.PreviewFunc) error {
	fraction := float32(0.05)
	stage := "queued"
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return fmt.Errorf("comfyui: websocket: %w", err)
		}
		if typ != websocket.MessageText {
			if img, ct, ok := decodePreview(data); ok {
				preview(img, ct)
			}
			progress(fraction, stage) // alive
			continue
		}
		ev, err := decodeMessage(data)
		if err != nil {
			return err
		}
		if ev.promptID != "" && ev.promptID != promptID {
			continue // the socket is ours alone, but be safe
		}
		switch ev.kind {
		case eventProgress:
			if ev.max > 0 {
				fraction = max(fraction, 0.05+0.9*float32(ev.value)/float32(ev.max))
			}
			stage = "sampling"
		case eventExecuting:
			stage = "running"
		case eventExecuted:
			stage = "saved"
		case eventDone:
			if ev.promptID == promptID {
				return nil
			}
		case eventFailed:
			return fmt.Errorf("comfyui: prompt failed: %s", ev.detail)
		case eventInterrupted:
			return errors.New("comfyui: prompt interrupted on the server")
		}
		progress(fraction, stage)
	}
}

func toResult(img []byte) (inference.Result, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return inference.Result{}, fmt.Errorf("comfyui: output is not an image: %w", err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > 8192 || cfg.Height > 8192 {
		return inference.Result{}, fmt.Errorf("comfyui: output is %dx%d", cfg.Width, cfg.Height)
	}
	if format != "png" {
		// The tier serves PNG: re-encode what a custom save node wrote.
		m, _, err := image.Decode(bytes.NewReader(img))
		if err != nil {
			return inference.Result{}, fmt.Errorf("comfyui: decode %s output: %w", format, err)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, m); err != nil {
			return inference.Result{}, fmt.Errorf("comfyui: encode png: %w", err)
		}
		img = buf.Bytes()
	}
	return inference.Result{Image: img, ContentType: "image/png", Width: cfg.Width, Height: cfg.Height}, nil
}

func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// endpoint returns the server URL for path with query q.
func (s *server) endpoint(path string, q url.Values) string {
	u := *s.base
	u.Path += path
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *server) name() string { return s.base.Redacted() }

func (s *server) dial(ctx context.Context, client *http.Client, clientID string) (*websocket.Conn, error) {
	u := *s.base
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path += "/ws"
	u.RawQuery = url.Values{"clientId": {clientID}}.Encode()
	h := http.Header{}
	if s.token != "" {
		h.Set("Authorization", "Bearer "+s.token)
	}
	ws, _, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: client, HTTPHeader: h})
	if err != nil {
		return nil, fmt.Errorf("comfyui: %s: open websocket: %w", s.name(), err)
	}
	return ws, nil
}

// do sends req and decodes a JSON answer into out, mapping HTTP failures.
func (s *server) do(client *http.Client, req *http.Request, out any) error {
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("comfyui: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJSONBytes+1))
	if err != nil {
		return fmt.Errorf("comfyui: %s %s: read: %w", req.Method, req.URL.Path, err)
	}
	if len(body) > maxJSONBytes {
		return fmt.Errorf("comfyui: %s %s: answer larger than %d bytes", req.Method, req.URL.Path, maxJSONBytes)
	}
	if res.StatusCode == http.StatusBadRequest {
		return refusal(req.URL.Path, body)
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("comfyui: %s %s: HTTP %d", req.Method, req.URL.Path, res.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("comfyui: %s %s: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

// refusal maps ComfyUI's 400 answer. Values out of a node's range are the
// request's fault; anything else (an unknown node, a missing model file)
// is the deployment's, and another server may have what this one lacks.
func refusal(path string, body []byte) error {
	var e struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
		NodeErrors map[string]struct {
			Errors []struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"errors"`
		} `json:"node_errors"`
	}
	_ = json.Unmarshal(body, &e)
	// Only ComfyUI's error types go into the error, never its messages:
	// they quote input values, the prompt among them, and errors are
	// logged (promise C4).
	var types []string
	for _, ne := range e.NodeErrors {
		for _, d := range ne.Errors {
			if d.Type == "value_bigger_than_max" || d.Type == "value_smaller_than_min" {
				return invalid("%s refused a value out of range (%s)", path, d.Type)
			}
			types = append(types, d.Type)
		}
	}
	slices.Sort(types)
	return fmt.Errorf("comfyui: %s refused the workflow: %s %v", path, e.Error.Type, slices.Compact(types))
}

// queue submits a rendered workflow and returns its prompt ID.
func (s *server) queue(ctx context.Context, client *http.Client, clientID string, graph map[string]Node) (string, error) {
	body, err := json.Marshal(map[string]any{"prompt": graph, "client_id": clientID})
	if err != nil {
		return "", fmt.Errorf("comfyui: encode prompt: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint("/prompt", nil), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		PromptID string `json:"prompt_id"`
	}
	if err := s.do(client, req, &out); err != nil {
		return "", err
	}
	if out.PromptID == "" {
		return "", errors.New("comfyui: /prompt answered without a prompt_id")
	}
	return out.PromptID, nil
}

// upload sends a reference image to the server's input folder under name
// and returns the name ComfyUI gave it.
func (s *server) upload(ctx context.Context, client *http.Client, name string, img []byte) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	part, err := mw.CreateFormFile("image", name)
	if err != nil {
		return "", err
	}
	part.Write(img)
	mw.WriteField("type", "input")
	mw.WriteField("overwrite", "true")
	if err := mw.Close(); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint("/upload/image", nil), &buf)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var out struct {
		Name      string `json:"name"`
		Subfolder string `json:"subfolder"`
	}
	if err := s.do(client, req, &out); err != nil {
		return "", err
	}
	if out.Name == "" {
		return "", errors.New("comfyui: /upload/image answered without a name")
	}
	if out.Subfolder != "" {
		return out.Subfolder + "/" + out.Name, nil
	}
	return out.Name, nil
}

// blank overwrites an uploaded reference with a 1×1 image, so the
// reference does not stay in the server's input folder (promise C2; see
// DEPLOY.md for keeping that folder off disk altogether).
func (s *server) blank(client *http.Client, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1)))
	_, _ = s.upload(ctx, client, name, buf.Bytes())
}

// cancel removes promptID from the queue and interrupts it if running.
// Both calls are best effort: the server may be gone.
func (s *server) cancel(client *http.Client, promptID string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, call := range []struct {
		path string
		body any
	}{
		{"/queue", map[string]any{"delete": []string{promptID}}},
		{"/interrupt", map[string]any{"prompt_id": promptID}},
	} {
		body, _ := json.Marshal(call.body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint(call.path, nil), bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		if err := s.do(client, req, nil); err != nil {
			return
		}
	}
}

func (s *server) history(ctx context.Context, client *http.Client, promptID string) (imageRef, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint("/history/"+url.PathEscape(promptID), nil), nil)
	if err != nil {
		return imageRef{}, err
	}
	var raw json.RawMessage
	if err := s.do(client, req, &raw); err != nil {
		return imageRef{}, err
	}
	return decodeHistory(raw, promptID)
}

func (s *server) view(ctx context.Context, client *http.Client, ref imageRef, limit int64) ([]byte, error) {
	q := url.Values{"filename": {ref.Filename}, "subfolder": {ref.Subfolder}, "type": {ref.Type}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint("/view", q), nil)
	if err != nil {
		return nil, err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("comfyui: GET /view: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("comfyui: GET /view: HTTP %d", res.StatusCode)
	}
	if res.ContentLength > limit {
		return nil, fmt.Errorf("comfyui: image of %d bytes exceeds the %d-byte limit", res.ContentLength, limit)
	}
	img, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("comfyui: GET /view: %w", err)
	}
	if int64(len(img)) > limit {
		return nil, fmt.Errorf("comfyui: image exceeds the %d-byte limit", limit)
	}
	return img, nil
}
