// Package openaiimg is an inference backend for any server that speaks
// OpenAI's Images API: OpenAI itself, LocalAI, or a hosted provider with an
// OpenAI-compatible endpoint.
//
// Generations go to POST {base}/images/generations as JSON and edits (a
// request with a reference image) to POST {base}/images/edits as
// multipart/form-data. The image comes back as b64_json or as a url, which
// is fetched with a size limit and only from https (or the endpoint's own
// origin). The API has no seed, steps or guidance, so the backend ignores
// them and its outputs are not reproducible; the negative prompt is ignored
// too. The provider's errors map to the tier's: a 400 is the request's fault
// (inference.ErrInvalidArgument), a 401/403/404 is the deployment's
// (ErrConfig, not worth retrying), 429 and 5xx are worth retrying
// elsewhere.
package openaiimg

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // gpt-image models can answer JPEG or WebP
	"image/png"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "golang.org/x/image/webp"

	"github.com/imagegate/imagegate/inference"
)

// DefaultMaxImageBytes bounds a decoded or fetched image.
const DefaultMaxImageBytes = 64 << 20

// maxErrorBytes bounds an error body read.
const maxErrorBytes = 64 << 10

// ErrConfig marks a failure of the deployment rather than the request: a
// refused API key, an unknown model. Retrying does not help; it wraps
// inference.ErrBackendConfig, so the tier does not retry it.
var ErrConfig = fmt.Errorf("openaiimg: endpoint refused the configuration: %w", inference.ErrBackendConfig)

// Config configures a Backend.
type Config struct {
	// Info describes the model to clients; Kind should be "neural".
	Info inference.ModelInfo
	// BaseURL is the API root, e.g. https://api.openai.com/v1 or
	// http://localai:8080/v1.
	BaseURL string
	// APIKey is sent as a bearer token; empty sends none (LocalAI).
	APIKey string
	// Model is the provider's model name, e.g. "gpt-image-1".
	Model string
	// ResponseFormat is "b64_json" (default) or "url". Leave it empty for
	// gpt-image models, which always answer b64_json and refuse the field.
	ResponseFormat string
	// Slots is how many requests go to the endpoint at once. Zero means 4.
	Slots int
	// MaxImageBytes bounds an image. Zero means 64 MiB.
	MaxImageBytes int64
	// HTTPClient makes every call; nil means one with dial and header
	// timeouts.
	HTTPClient *http.Client
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Info.Name == "" {
		errs = append(errs, errors.New("openaiimg: model has no name"))
	}
	if c.Model == "" {
		errs = append(errs, fmt.Errorf("openaiimg: model %s names no provider model", c.Info.Name))
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("openaiimg: base URL %q: want http(s)://host[:port]/path without credentials", c.BaseURL))
	}
	if c.ResponseFormat != "" && c.ResponseFormat != "b64_json" && c.ResponseFormat != "url" {
		errs = append(errs, fmt.Errorf("openaiimg: response format %q: want b64_json or url", c.ResponseFormat))
	}
	if len(c.Info.Sizes) == 0 {
		errs = append(errs, fmt.Errorf("openaiimg: model %s lists no sizes", c.Info.Name))
	}
	if c.Slots < 0 || c.MaxImageBytes < 0 {
		errs = append(errs, errors.New("openaiimg: negative limit"))
	}
	for i := range len(c.APIKey) {
		if ch := c.APIKey[i]; ch <= ' ' || ch > '~' {
			errs = append(errs, errors.New("openaiimg: API key must be printable ASCII without spaces"))
			break
		}
	}
	return errors.Join(errs...)
}

// Backend sends generations to one OpenAI-compatible endpoint. It is safe
// for concurrent use.
type Backend struct {
	cfg    Config
	info   inference.ModelInfo
	base   *url.URL
	client *http.Client
}

// New returns a backend for cfg.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Slots == 0 {
		cfg.Slots = 4
	}
	if cfg.MaxImageBytes == 0 {
		cfg.MaxImageBytes = DefaultMaxImageBytes
	}
	base, _ := url.Parse(strings.TrimSuffix(cfg.BaseURL, "/"))
	b := &Backend{cfg: cfg, info: cfg.Info, base: base, client: cfg.HTTPClient}
	if b.client == nil {
		b.client = &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 5 * time.Minute, // the answer comes when the image is done
			IdleConnTimeout:       90 * time.Second,
			Proxy:                 http.ProxyFromEnvironment,
		}}
	}
	if b.info.Kind == "" {
		b.info.Kind = "neural"
	}
	b.info.SupportsEdits = true
	return b, nil
}

// Info describes the model.
func (b *Backend) Info() inference.ModelInfo { return b.info }

// WorkerID names the worker an endpoint is.
func WorkerID(baseURL string) string { return "openai " + strings.TrimSuffix(baseURL, "/") }

// Workers is the endpoint, as one worker.
func (b *Backend) Workers() []inference.Worker {
	return []inference.Worker{{ID: WorkerID(b.cfg.BaseURL), Slots: b.cfg.Slots}}
}

// GenerateOn is Generate: the endpoint is the only worker, and it makes
// no previews.
func (b *Backend) GenerateOn(ctx context.Context, _ string, req inference.Request, progress inference.ProgressFunc, _ inference.PreviewFunc) (inference.Result, error) {
	return b.Generate(ctx, req, progress)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("openaiimg: "+format+": %w", append(args, inference.ErrInvalidArgument)...)
}

// Generate renders req on the endpoint. The API reports no progress; the
// backend reports the start and the end.
func (b *Backend) Generate(ctx context.Context, req inference.Request, progress inference.ProgressFunc) (inference.Result, error) {
	if progress == nil {
		progress = func(float32, string) {}
	}
	for _, side := range [2]int{req.Width, req.Height} {
		if !slices.Contains(b.info.Sizes, side) {
			return inference.Result{}, invalid("size %dx%d: each side must be one of %v", req.Width, req.Height, b.info.Sizes)
		}
	}
	if strings.TrimSpace(req.Prompt) == "" {
		return inference.Result{}, invalid("the prompt is empty")
	}
	size := fmt.Sprintf("%dx%d", req.Width, req.Height)
	var httpReq *http.Request
	var err error
	if len(req.Reference) > 0 {
		httpReq, err = b.editRequest(ctx, req, size)
	} else {
		httpReq, err = b.generationRequest(ctx, req, size)
	}
	if err != nil {
		return inference.Result{}, err
	}
	progress(0.05, "submitted")
	img, err := b.send(ctx, httpReq)
	if err != nil {
		return inference.Result{}, err
	}
	res, err := toResult(img)
	if err != nil {
		return inference.Result{}, err
	}
	progress(1, "done")
	return res, nil
}

func (b *Backend) generationRequest(ctx context.Context, req inference.Request, size string) (*http.Request, error) {
	body := map[string]any{"model": b.cfg.Model, "prompt": req.Prompt, "n": 1, "size": size}
	if b.cfg.ResponseFormat != "" {
		body["response_format"] = b.cfg.ResponseFormat
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("openaiimg: encode request: %w", err)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base.String()+"/images/generations", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", "application/json")
	return r, nil
}

func (b *Backend) editRequest(ctx context.Context, req inference.Request, size string) (*http.Request, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fields := [][2]string{{"model", b.cfg.Model}, {"prompt", req.Prompt}, {"n", "1"}, {"size", size}}
	if b.cfg.ResponseFormat != "" {
		fields = append(fields, [2]string{"response_format", b.cfg.ResponseFormat})
	}
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	contentType, ext := sniff(req.Reference)
	if contentType == "" {
		return nil, invalid("the reference image is not PNG, JPEG or WebP")
	}
	part, err := mw.CreatePart(map[string][]string{
		"Content-Disposition": {`form-data; name="image"; filename="reference.` + ext + `"`},
		"Content-Type":        {contentType},
	})
	if err != nil {
		return nil, err
	}
	part.Write(req.Reference)
	if err := mw.Close(); err != nil {
		return nil, err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base.String()+"/images/edits", &buf)
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", mw.FormDataContentType())
	return r, nil
}

// sniff names an image's type for the multipart part; the API wants one
// it accepts, not application/octet-stream.
func sniff(img []byte) (contentType, ext string) {
	switch ct := http.DetectContentType(img); ct {
	case "image/png":
		return ct, "png"
	case "image/jpeg":
		return ct, "jpg"
	case "image/webp":
		return ct, "webp"
	}
	return "", ""
}

// send makes the call and returns the image bytes.
func (b *Backend) send(ctx context.Context, r *http.Request) ([]byte, error) {
	if b.cfg.APIKey != "" {
		r.Header.Set("Authorization", "Bearer "+b.cfg.APIKey)
	}
	res, err := b.client.Do(r)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("openaiimg: %s: %w", r.URL.Path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, mapError(res)
	}
	// A b64_json answer is 4/3 of the image plus a little JSON.
	limit := b.cfg.MaxImageBytes*4/3 + 64<<10
	data, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("openaiimg: read answer: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("openaiimg: answer exceeds %d bytes", limit)
	}
	var out struct {
		Data []struct {
			B64JSON string `json:"b64_json"`
			URL     string `json:"url"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("openaiimg: answer: %w", err)
	}
	if len(out.Data) == 0 {
		return nil, errors.New("openaiimg: answer holds no image")
	}
	d := out.Data[0]
	switch {
	case d.B64JSON != "":
		img, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			return nil, fmt.Errorf("openaiimg: b64_json: %w", err)
		}
		return img, nil
	case d.URL != "":
		return b.fetch(ctx, d.URL)
	}
	return nil, errors.New("openaiimg: answer has neither b64_json nor url")
}

// fetch downloads a url answer: https anywhere, or http only from the
// endpoint's own origin (a LocalAI on a private network), never more than
// MaxImageBytes.
func (b *Backend) fetch(ctx context.Context, raw string) ([]byte, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("openaiimg: image url: %w", err)
	}
	sameOrigin := u.Scheme == b.base.Scheme && u.Host == b.base.Host
	if u.Scheme != "https" && !sameOrigin {
		return nil, fmt.Errorf("openaiimg: image url scheme %q refused: https or the endpoint's origin only", u.Scheme)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if sameOrigin && b.cfg.APIKey != "" {
		r.Header.Set("Authorization", "Bearer "+b.cfg.APIKey)
	}
	res, err := b.client.Do(r)
	if err != nil {
		return nil, fmt.Errorf("openaiimg: fetch image: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("openaiimg: fetch image: HTTP %d", res.StatusCode)
	}
	if res.ContentLength > b.cfg.MaxImageBytes {
		return nil, fmt.Errorf("openaiimg: image of %d bytes exceeds the %d-byte limit", res.ContentLength, b.cfg.MaxImageBytes)
	}
	img, err := io.ReadAll(io.LimitReader(res.Body, b.cfg.MaxImageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("openaiimg: fetch image: %w", err)
	}
	if int64(len(img)) > b.cfg.MaxImageBytes {
		return nil, fmt.Errorf("openaiimg: image exceeds the %d-byte limit", b.cfg.MaxImageBytes)
	}
	return img, nil
}

// APIError is an error answer from the endpoint.
type APIError struct {
	Status     int
	Type, Code string
	// Message is the provider's text. Error leaves it out: some servers
	// quote the prompt in it, and errors are logged (promise C4).
	Message string
	// RetryAfter is the endpoint's Retry-After, if any.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("openaiimg: HTTP %d %s/%s", e.Status, e.Type, e.Code)
}

// mapError reads an error answer: {"error": {"message", "type", "param",
// "code"}}.
func mapError(res *http.Response) error {
	var body struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    any    `json:"code"` // a string, or null, or a number on some servers
		} `json:"error"`
	}
	data, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBytes))
	_ = json.Unmarshal(data, &body)
	e := &APIError{Status: res.StatusCode, Type: body.Error.Type, Message: body.Error.Message}
	if body.Error.Code != nil {
		e.Code = fmt.Sprint(body.Error.Code)
	}
	if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	switch {
	case res.StatusCode == http.StatusBadRequest || res.StatusCode == http.StatusUnprocessableEntity:
		// Includes content-policy refusals: the prompt is the problem.
		return fmt.Errorf("%w: %w", inference.ErrInvalidArgument, e)
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden || res.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrConfig, e)
	}
	return e // 429, 5xx: another try may work
}

func toResult(img []byte) (inference.Result, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return inference.Result{}, fmt.Errorf("openaiimg: answer is not an image: %w", err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > 8192 || cfg.Height > 8192 {
		return inference.Result{}, fmt.Errorf("openaiimg: answer is %dx%d", cfg.Width, cfg.Height)
	}
	if format != "png" {
		m, _, err := image.Decode(bytes.NewReader(img))
		if err != nil {
			return inference.Result{}, fmt.Errorf("openaiimg: decode %s answer: %w", format, err)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, m); err != nil {
			return inference.Result{}, fmt.Errorf("openaiimg: encode png: %w", err)
		}
		img = buf.Bytes()
	}
	return inference.Result{Image: img, ContentType: "image/png", Width: cfg.Width, Height: cfg.Height}, nil
}
