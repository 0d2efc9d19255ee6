package inference

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
	"github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1/inferencev1connect"
)

// testBackend renders a tiny deterministic PNG. Tests make it report
// progress, block until released, or fail.
type testBackend struct {
	name  string
	calls atomic.Int64
	// steps progress reports are made before blocking on release.
	steps int
	// started, if non-nil, receives once per call as it starts.
	started chan struct{}
	// release, if non-nil, blocks each call until it is closed or the
	// call's context ends.
	release chan struct{}
	// finished, if non-nil, receives the call's ctx.Err() as it returns.
	finished chan error
	// err, if non-nil, is returned instead of an image.
	err error

	mu  sync.Mutex
	ran []string // prompts in the order their calls started
}

func newTestBackend(name string) *testBackend { return &testBackend{name: name} }

func (b *testBackend) Info() ModelInfo {
	return ModelInfo{
		Name: b.name, Version: "7", Kind: "procedural", Description: "test pattern",
		Styles: []string{"auto"}, Sizes: []int{8, 16}, CaseInsensitive: true,
	}
}

func (b *testBackend) Generate(ctx context.Context, req Request, progress ProgressFunc) (Result, error) {
	b.calls.Add(1)
	b.mu.Lock()
	b.ran = append(b.ran, req.Prompt)
	b.mu.Unlock()
	if b.finished != nil {
		defer func() { b.finished <- ctx.Err() }()
	}
	if b.started != nil {
		b.started <- struct{}{}
	}
	if req.Style == "bad" {
		return Result{}, fmt.Errorf("testbackend: unknown style %q: %w", req.Style, ErrInvalidArgument)
	}
	for i := 1; i <= b.steps; i++ {
		if progress != nil {
			progress(float32(i)/float32(b.steps), "render")
		}
	}
	if b.release != nil {
		select {
		case <-b.release:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	if b.err != nil {
		return Result{}, b.err
	}
	return renderTestPNG(req)
}

// startOrder returns the prompts of the calls so far, in the order they
// started.
func (b *testBackend) startOrder() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.ran)
}

// renderTestPNG fills the requested size with a colour derived from the
// prompt and seed.
func renderTestPNG(req Request) (Result, error) {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s|%d", req.Prompt, req.Seed))
	img := image.NewNRGBA(image.Rect(0, 0, req.Width, req.Height))
	c := color.NRGBA{R: sum[0], G: sum[1], B: sum[2], A: 255}
	for y := range req.Height {
		for x := range req.Width {
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return Result{}, err
	}
	return Result{Image: buf.Bytes(), ContentType: "image/png", Width: req.Width, Height: req.Height}, nil
}

// serveH2C serves h over loopback speaking HTTP/1.1 and h2c, as
// `imagegate inference` does.
func serveH2C(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = protocols
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// startServer runs a Server for backends over h2c and returns it with its
// metrics registry.
func startServer(t testing.TB, cfg ServerConfig, backends ...Backend) (*Server, *httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewServer(cfg, backends, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, serveH2C(t, s.Handler()), reg
}

// newClient returns a raw Connect client for url over h2c.
func newClient(t testing.TB, url string) inferencev1connect.InferenceServiceClient {
	t.Helper()
	transport := newTransport(true)
	t.Cleanup(transport.CloseIdleConnections)
	return inferencev1connect.NewInferenceServiceClient(&http.Client{Transport: transport}, url)
}

func testRequest(prompt string) *inferencev1.GenerateRequest {
	return &inferencev1.GenerateRequest{Prompt: prompt, Width: 8, Height: 8, Seed: 42, Style: "auto"}
}

// metricValue reads one series from g: a counter's or gauge's value, or a
// histogram's sample count. It fails the test when the series is missing.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	if m := findMetric(t, g, name, labels); m != nil {
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

// metricValueOrZero is a counter's value, or 0 for a series that does not
// exist yet.
func metricValueOrZero(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	if m := findMetric(t, g, name, labels); m != nil {
		return m.GetCounter().GetValue()
	}
	return 0
}

// findMetric is the series of g named name with exactly labels, or nil.
func findMetric(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelsMatch(m, labels) {
				return m
			}
		}
	}
	return nil
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return len(got) == len(want)
}
