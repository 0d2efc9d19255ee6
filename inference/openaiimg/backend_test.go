package openaiimg

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/internal/fakeopenai"
)

func newBackend(t testing.TB, base, key, model, format string) *Backend {
	t.Helper()
	b, err := New(Config{
		Info:    inference.ModelInfo{Name: "gpt", Sizes: []int{256, 512, 1024}},
		BaseURL: base, APIKey: key, Model: model, ResponseFormat: format,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeSize(t testing.TB, img []byte) (int, int) {
	t.Helper()
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	return cfg.Width, cfg.Height
}

func TestGenerateB64AndURL(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.Start(t)
	for _, tc := range []struct{ model, format string }{{"gpt-image-1", ""}, {"dall-e-2", "b64_json"}, {"dall-e-2", "url"}} {
		b := newBackend(t, fake.URL+"/v1", fake.Key, tc.model, tc.format)
		size := 512
		if tc.model == "gpt-image-1" {
			size = 1024
		}
		res, err := b.Generate(t.Context(), inference.Request{Prompt: "a fox", Width: size, Height: size, Seed: 9, Steps: 30}, nil)
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.model, tc.format, err)
		}
		if w, h := decodeSize(t, res.Image); w != size || h != size || res.Width != size || res.ContentType != "image/png" {
			t.Errorf("%s/%s: %dx%d %+v", tc.model, tc.format, w, h, res.Width)
		}
		last := fake.Last()
		if last["model"] != tc.model || last["prompt"] != "a fox" || last["size"] != "512x512" && size == 512 {
			t.Errorf("%s/%s: the server got %v", tc.model, tc.format, last)
		}
	}
}

func TestEditsGoMultipart(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.Start(t)
	b := newBackend(t, fake.URL+"/v1", fake.Key, "gpt-image-1", "")
	var ref bytes.Buffer
	png.Encode(&ref, image.NewGray(image.Rect(0, 0, 32, 32)))
	res, err := b.Generate(t.Context(), inference.Request{Prompt: "make it night", Width: 1024, Height: 1024, Reference: ref.Bytes()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := decodeSize(t, res.Image); w != 1024 {
		t.Errorf("width %d", w)
	}
	if fake.Last()["prompt"] != "make it night" {
		t.Errorf("edit fields %v", fake.Last())
	}
	if _, err := b.Generate(t.Context(), inference.Request{Prompt: "x", Width: 1024, Height: 1024, Reference: []byte("GIF89a...")}, nil); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("an unsupported reference: %v", err)
	}
}

func TestErrorsAreMapped(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.Start(t)
	good := newBackend(t, fake.URL+"/v1", fake.Key, "gpt-image-1", "")
	req := inference.Request{Prompt: "a fox", Width: 1024, Height: 1024}

	_, err := newBackend(t, fake.URL+"/v1", "sk-wrong", "gpt-image-1", "").Generate(t.Context(), req, nil)
	if !errors.Is(err, ErrConfig) || errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("wrong key: %v, want ErrConfig", err)
	}
	if _, err := newBackend(t, fake.URL+"/v1", fake.Key, "gpt-image-9", "").Generate(t.Context(), req, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("unknown model: %v, want ErrConfig", err)
	}
	if _, err := newBackend(t, fake.URL+"/v1", fake.Key, "gpt-image-1", "url").Generate(t.Context(), req, nil); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("response_format to gpt-image: %v (the fake refuses it as the API does)", err)
	}
	if _, err := good.Generate(t.Context(), inference.Request{Prompt: "something forbidden", Width: 1024, Height: 1024}, nil); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("content policy: %v, want ErrInvalidArgument", err)
	}
	if _, err := good.Generate(t.Context(), inference.Request{Prompt: "x", Width: 512, Height: 512}, nil); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("size the provider refuses: %v", err)
	}
	fake.FailNext(http.StatusTooManyRequests, http.StatusBadGateway)
	_, err = good.Generate(t.Context(), req, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter.Seconds() != 7 || errors.Is(err, inference.ErrInvalidArgument) || errors.Is(err, ErrConfig) {
		t.Errorf("429: %v, want a retryable APIError with Retry-After 7s", err)
	}
	if _, err := good.Generate(t.Context(), req, nil); !errors.As(err, &ae) || ae.Status != 502 {
		t.Errorf("502: %v", err)
	}
	if _, err := good.Generate(t.Context(), req, nil); err != nil {
		t.Errorf("after the failures: %v", err)
	}
	// Nothing reaches the provider that the model would refuse anyway.
	before := fake.Calls()
	good.Generate(t.Context(), inference.Request{Prompt: " ", Width: 1024, Height: 1024}, nil)
	good.Generate(t.Context(), inference.Request{Prompt: "x", Width: 100, Height: 100}, nil)
	if fake.Calls() != before {
		t.Error("requests refused locally reached the provider")
	}
}

func TestURLFetchIsBounded(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.Start(t)
	fake.PadFiles(64 << 10)
	b, err := New(Config{
		Info:    inference.ModelInfo{Name: "d2", Sizes: []int{256}},
		BaseURL: fake.URL + "/v1", APIKey: fake.Key, Model: "dall-e-2", ResponseFormat: "url",
		MaxImageBytes: 32 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Generate(t.Context(), inference.Request{Prompt: "x", Width: 256, Height: 256}, nil); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized image: %v, want a size-limit error", err)
	}
	// A url answer pointing at plain http elsewhere is not followed.
	rec, _ := os.ReadFile("testdata/generation_url.json")
	evil := bytes.Replace(rec, []byte("https://example.invalid"), []byte("http://169.254.169.254"), 1)
	srv := replay(t, http.StatusOK, evil)
	if _, err := newBackend(t, srv.URL+"/v1", "", "dall-e-2", "url").Generate(t.Context(), inference.Request{Prompt: "x", Width: 256, Height: 256}, nil); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("http url elsewhere: %v", err)
	}
}

// replay answers every request with status and body.
func replay(t testing.TB, status int, body []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "20")
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRecordedPayloads(t *testing.T) {
	t.Parallel()
	req := inference.Request{Prompt: "x", Width: 256, Height: 256}
	rec, _ := os.ReadFile("testdata/generation_b64.json")
	res, err := newBackend(t, replay(t, 200, rec).URL+"/v1", "k", "gpt-image-1", "").Generate(t.Context(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, h := decodeSize(t, res.Image); w != 16 || h != 16 {
		t.Errorf("recorded b64 answer decoded to %dx%d", w, h)
	}
	for file, tc := range map[string]struct {
		status int
		check  func(error) bool
	}{
		"error_content_policy.json": {400, func(err error) bool { return errors.Is(err, inference.ErrInvalidArgument) }},
		"error_invalid_size.json":   {400, func(err error) bool { return errors.Is(err, inference.ErrInvalidArgument) }},
		"error_invalid_key.json":    {401, func(err error) bool { return errors.Is(err, ErrConfig) }},
		"error_rate_limit.json": {429, func(err error) bool {
			var ae *APIError
			return errors.As(err, &ae) && ae.Code == "rate_limit_exceeded" && ae.RetryAfter.Seconds() == 20
		}},
	} {
		body, _ := os.ReadFile("testdata/" + file)
		_, err := newBackend(t, replay(t, tc.status, body).URL+"/v1", "k", "gpt-image-1", "").Generate(t.Context(), req, nil)
		if !tc.check(err) {
			t.Errorf("%s: %v", file, err)
		}
		if err != nil && strings.Contains(err.Error(), "sk-") && file != "error_invalid_key.json" {
			t.Errorf("%s: error carries a key: %v", file, err)
		}
	}
}

func TestCancelEndsTheCall(t *testing.T) {
	t.Parallel()
	fake := fakeopenai.Start(t)
	fake.Hold()
	t.Cleanup(fake.Release)
	b := newBackend(t, fake.URL+"/v1", fake.Key, "gpt-image-1", "")
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := b.Generate(ctx, inference.Request{Prompt: "x", Width: 1024, Height: 1024}, nil)
		errc <- err
	}()
	<-fake.Entered()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
}

func FuzzMapError(f *testing.F) {
	for _, name := range []string{"error_content_policy.json", "error_rate_limit.json", "error_invalid_key.json", "error_invalid_size.json"} {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(400, data)
	}
	f.Add(500, []byte(`{"error": {"code": 42}}`))
	f.Add(503, []byte(`not json`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 || status == 200 {
			return
		}
		res := &http.Response{StatusCode: status, Header: http.Header{}, Body: ioNopCloser(body)}
		if err := mapError(res); err == nil {
			t.Fatal("an error answer mapped to nil")
		}
	})
}

func FuzzAnswer(f *testing.F) {
	for _, name := range []string{"generation_b64.json", "generation_url.json"} {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data)
	}
	f.Add([]byte(`{"data": [{"b64_json": "!!"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b := newBackend(t, "https://api.invalid/v1", "", "gpt-image-1", "")
		b.client = &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path != "/v1/images/generations" {
				return nil, errors.New("no network in this fuzz")
			}
			return &http.Response{StatusCode: 200, Header: http.Header{}, Body: ioNopCloser(body)}, nil
		})}
		res, err := b.Generate(t.Context(), inference.Request{Prompt: "x", Width: 256, Height: 256}, nil)
		if err == nil && (len(res.Image) == 0 || res.Width < 1) {
			t.Fatal("success without an image")
		}
	})
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func ioNopCloser(b []byte) nopCloser { return nopCloser{bytes.NewReader(b)} }

func TestErrorsNeverQuoteThePrompt(t *testing.T) {
	t.Parallel()
	secret := "a very private prompt"
	srv := replay(t, http.StatusBadRequest, []byte(`{"error": {"message": "cannot draw `+secret+`", "type": "invalid_request_error", "code": "bad_prompt"}}`))
	_, err := newBackend(t, srv.URL+"/v1", "k", "gpt-image-1", "").Generate(t.Context(), inference.Request{Prompt: secret, Width: 256, Height: 256}, nil)
	var ae *APIError
	if err == nil || strings.Contains(err.Error(), secret) || !errors.As(err, &ae) || !strings.Contains(ae.Message, secret) {
		t.Errorf("got %v: want the message kept in the field but out of the text", err)
	}
}
