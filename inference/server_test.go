package inference

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
	"github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1/inferencev1connect"
)

func TestServerGenerateRoundTrip(t *testing.T) {
	t.Parallel()
	s, err := NewServer(ServerConfig{}, []Backend{newTestBackend("test")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var proto2 atomic.Bool
	srv := serveH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto2.Store(r.ProtoMajor == 2)
		s.Handler().ServeHTTP(w, r)
	}))
	client := newClient(t, srv.URL)

	req := testRequest("a lighthouse at dusk")
	req.Width, req.Height = 16, 8
	res, err := client.Generate(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if !proto2.Load() {
		t.Error("request did not arrive over HTTP/2")
	}
	img, err := png.Decode(bytes.NewReader(res.Msg.GetImage()))
	if err != nil {
		t.Fatalf("image is not a PNG: %v", err)
	}
	if got := img.Bounds().Size(); got.X != 16 || got.Y != 8 {
		t.Errorf("image size = %v, want 16x8", got)
	}
	want := &inferencev1.GenerateResponse{
		ContentType: "image/png", Width: 16, Height: 8, Model: "test", ModelVersion: "7", Seed: 42,
	}
	got := proto.CloneOf(res.Msg)
	got.Image = nil
	if diff := cmp.Diff(want, got, cmpProto); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}

	models, err := client.ListModels(t.Context(), connect.NewRequest(&inferencev1.ListModelsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	wantModels := []*inferencev1.Model{{
		Name: "test", Version: "7", Kind: "procedural", Description: "test pattern",
		Styles: []string{"auto"}, Sizes: []uint32{8, 16}, CaseInsensitive: true,
	}}
	if diff := cmp.Diff(wantModels, models.Msg.GetModels(), cmpProto); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
}

// cmpProto compares protobuf messages by content.
var cmpProto = cmp.Comparer(proto.Equal)

func TestServerNeverCompressesImages(t *testing.T) {
	t.Parallel()
	_, srv, _ := startServer(t, ServerConfig{}, newTestBackend("test"))
	body, err := proto.Marshal(testRequest("gzip me"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
		srv.URL+inferencev1connect.InferenceServiceGenerateProcedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	req.Header.Set("Accept-Encoding", "gzip")
	// The transport leaves compression alone, so the header is what the
	// server sent.
	transport := newTransport(true)
	defer transport.CloseIdleConnections()
	res, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, data)
	}
	if enc := res.Header.Get("Content-Encoding"); enc != "" {
		t.Errorf("Content-Encoding = %q, want none", enc)
	}
	var msg inferencev1.GenerateResponse
	if err := proto.Unmarshal(data, &msg); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(msg.GetImage())); err != nil {
		t.Errorf("image is not a PNG: %v", err)
	}
}

func TestServerStreamProgressThenResult(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.steps = 1000
	b.release = make(chan struct{})
	_, srv, _ := startServer(t, ServerConfig{}, b)
	client := newClient(t, srv.URL)

	stream, err := client.GenerateStream(t.Context(), connect.NewRequest(testRequest("stream")))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var fractions []float32
	var result *inferencev1.GenerateResponse
	for stream.Receive() {
		if result != nil {
			t.Fatal("message after the result")
		}
		switch ev := stream.Msg().GetEvent().(type) {
		case *inferencev1.GenerateStreamResponse_Progress:
			f := ev.Progress.GetFraction()
			if n := len(fractions); n > 0 && f <= fractions[n-1] {
				t.Fatalf("progress not increasing: %v then %v", fractions, f)
			}
			if f < 0 || f > 1 || ev.Progress.GetStage() != "render" {
				t.Fatalf("bad progress %v", ev.Progress)
			}
			fractions = append(fractions, f)
			if f == 1 {
				// The backend reported everything and now waits: the
				// events arrived while it was still working.
				close(b.release)
			}
		case *inferencev1.GenerateStreamResponse_Result:
			result = ev.Result
		default:
			t.Fatalf("unexpected event %T", ev)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if result == nil || len(result.GetImage()) == 0 {
		t.Fatal("no result")
	}
	if len(fractions) == 0 || len(fractions) > progressSteps+1 {
		t.Errorf("got %d progress events, want 1..%d: %v", len(fractions), progressSteps+1, fractions)
	}
}

func TestServerValidation(t *testing.T) {
	t.Parallel()
	broken := newTestBackend("broken")
	broken.err = errors.New("secret gpu detail")
	_, srv, reg := startServer(t, ServerConfig{}, newTestBackend("test"), broken)
	client := newClient(t, srv.URL)

	tests := []struct {
		name    string
		edit    func(*inferencev1.GenerateRequest)
		code    connect.Code
		message string // substring of the error message
	}{
		{"zero width", func(r *inferencev1.GenerateRequest) { r.Width = 0 }, connect.CodeInvalidArgument, "width 0"},
		{"huge height", func(r *inferencev1.GenerateRequest) { r.Height = 4097 }, connect.CodeInvalidArgument, "height 4097"},
		{"negative strength", func(r *inferencev1.GenerateRequest) { r.Strength = -0.1 }, connect.CodeInvalidArgument, "strength"},
		{"strength above one", func(r *inferencev1.GenerateRequest) { r.Strength = 1.5 }, connect.CodeInvalidArgument, "strength"},
		{"NaN strength", func(r *inferencev1.GenerateRequest) { r.Strength = float32(math.NaN()) }, connect.CodeInvalidArgument, "strength"},
		{"infinite guidance", func(r *inferencev1.GenerateRequest) { r.Guidance = float32(math.Inf(1)) }, connect.CodeInvalidArgument, "guidance"},
		{"long prompt", func(r *inferencev1.GenerateRequest) { r.Prompt = strings.Repeat("x", 4001) }, connect.CodeInvalidArgument, "prompt longer"},
		{"long negative prompt", func(r *inferencev1.GenerateRequest) { r.NegativePrompt = strings.Repeat("x", 4001) }, connect.CodeInvalidArgument, "negative prompt"},
		{"large reference", func(r *inferencev1.GenerateRequest) { r.ReferenceImage = make([]byte, 20<<20+1) }, connect.CodeInvalidArgument, "reference"},
		{"jpeg output", func(r *inferencev1.GenerateRequest) { r.OutputFormat = "jpeg" }, connect.CodeInvalidArgument, "output format"},
		{"backend refuses", func(r *inferencev1.GenerateRequest) { r.Style = "bad" }, connect.CodeInvalidArgument, "unknown style"},
		{"unknown model", func(r *inferencev1.GenerateRequest) { r.Model = "sdxl" }, connect.CodeNotFound, "unknown model"},
		{"backend fails", func(r *inferencev1.GenerateRequest) { r.Model = "broken" }, connect.CodeInternal, "generation failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := testRequest("validate " + tt.name)
			tt.edit(req)
			_, err := client.Generate(t.Context(), connect.NewRequest(req))
			if got := connect.CodeOf(err); got != tt.code {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not mention %q", err, tt.message)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q leaks the backend's failure", err)
			}
		})
	}
	t.Cleanup(func() {
		if got := metricValue(t, reg, "imagegate_inference_errors_total", map[string]string{"model": "broken", "code": "internal"}); got != 1 {
			t.Errorf("internal errors for broken = %v, want 1", got)
		}
		if got := metricValue(t, reg, "imagegate_inference_errors_total", map[string]string{"model": "unknown", "code": "not_found"}); got != 1 {
			t.Errorf("not_found errors = %v, want 1", got)
		}
	})
}

func TestServerToken(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token"
	_, srv, _ := startServer(t, ServerConfig{Token: token}, newTestBackend("test"))
	client := newClient(t, srv.URL)
	base, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	transport := newTransport(true)
	t.Cleanup(transport.CloseIdleConnections)
	health := newEndpoint(0, base, &http.Client{Transport: transport}, nil)

	tests := []struct {
		name          string
		authorization string
		want          connect.Code
	}{
		{"none", "", connect.CodeUnauthenticated},
		{"wrong token", "Bearer nope", connect.CodeUnauthenticated},
		{"token prefix", "Bearer " + token[:4], connect.CodeUnauthenticated},
		{"wrong scheme", "Basic " + token, connect.CodeUnauthenticated},
		{"bare token", token, connect.CodeUnauthenticated},
		{"right token", "Bearer " + token, 0},
		{"scheme in lower case", "bearer " + token, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gen := connect.NewRequest(testRequest("token " + tt.name))
			list := connect.NewRequest(&inferencev1.ListModelsRequest{})
			for _, h := range []http.Header{gen.Header(), list.Header()} {
				if tt.authorization != "" {
					h.Set("Authorization", tt.authorization)
				}
			}
			_, err := client.Generate(t.Context(), gen)
			if got := connect.CodeOf(err); err != nil && got != tt.want || err == nil && tt.want != 0 {
				t.Errorf("Generate: err = %v, want code %v", err, tt.want)
			}
			_, err = client.ListModels(t.Context(), list)
			if got := connect.CodeOf(err); err != nil && got != tt.want || err == nil && tt.want != 0 {
				t.Errorf("ListModels: err = %v, want code %v", err, tt.want)
			}
			// The health check goes through the same gate.
			check := connect.NewRequest(&wrapperspb.StringValue{Value: inferencev1connect.InferenceServiceName})
			if tt.authorization != "" {
				check.Header().Set("Authorization", tt.authorization)
			}
			_, err = health.health.CallUnary(t.Context(), check)
			if got := connect.CodeOf(err); err != nil && got != tt.want || err == nil && tt.want != 0 {
				t.Errorf("health: err = %v, want code %v", err, tt.want)
			}
		})
	}
}

func TestServerCoalescesIdenticalRequests(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	// Room for the first call's signal plus the three sequential calls at
	// the end, which nobody waits on.
	b.started = make(chan struct{}, 4)
	b.release = make(chan struct{})
	s, srv, reg := startServer(t, ServerConfig{}, b)
	joined := make(chan struct{})
	s.flights.joined = func() { joined <- struct{}{} }
	client := newClient(t, srv.URL)

	const n = 50
	type reply struct {
		image []byte
		err   error
	}
	replies := make(chan reply, n)
	for i := range n {
		go func() {
			req := testRequest("popular prompt")
			if i%2 == 1 {
				// Spelling out the defaults changes nothing.
				req.Model, req.OutputFormat = "test", "png"
			}
			res, err := client.Generate(t.Context(), connect.NewRequest(req))
			if err != nil {
				replies <- reply{err: err}
				return
			}
			replies <- reply{image: res.Msg.GetImage()}
		}()
	}
	<-b.started
	for range n - 1 {
		<-joined
	}
	close(b.release)
	var first []byte
	for range n {
		r := <-replies
		if r.err != nil {
			t.Fatal(r.err)
		}
		if first == nil {
			first = r.image
		} else if !bytes.Equal(first, r.image) {
			t.Fatal("coalesced callers received different images")
		}
	}
	if got := b.calls.Load(); got != 1 {
		t.Errorf("backend ran %d times, want 1", got)
	}
	model := map[string]string{"model": "test"}
	if got := metricValue(t, reg, "imagegate_inference_generations_total", model); got != 1 {
		t.Errorf("generations_total = %v, want 1", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_coalesced_total", model); got != n-1 {
		t.Errorf("coalesced_total = %v, want %d", got, n-1)
	}
	if got := metricValue(t, reg, "imagegate_inference_generation_seconds", model); got != 1 {
		t.Errorf("generation_seconds count = %v, want 1", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_in_flight", nil); got != 0 {
		t.Errorf("in_flight = %v after all finished, want 0", got)
	}

	// Only concurrent requests share work: the tier keeps no results, so
	// the same request again, and different ones, each run the backend.
	s.flights.joined = nil
	for _, prompt := range []string{"popular prompt", "another", "a third"} {
		if _, err := client.Generate(t.Context(), connect.NewRequest(testRequest(prompt))); err != nil {
			t.Fatal(err)
		}
	}
	if got := metricValue(t, reg, "imagegate_inference_generations_total", model); got != 4 {
		t.Errorf("generations_total = %v, want 4", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_coalesced_total", model); got != n-1 {
		t.Errorf("coalesced_total = %v, want %d", got, n-1)
	}
}

func TestServerCallerLeavingKeepsSharedGeneration(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.started = make(chan struct{}, 1)
	b.release = make(chan struct{})
	b.finished = make(chan error, 1)
	s, srv, _ := startServer(t, ServerConfig{}, b)
	joined := make(chan struct{}, 1)
	s.flights.joined = func() { joined <- struct{}{} }
	client := newClient(t, srv.URL)

	ctxA, cancelA := context.WithCancel(t.Context())
	defer cancelA()
	errA := make(chan error, 1)
	go func() {
		_, err := client.Generate(ctxA, connect.NewRequest(testRequest("shared")))
		errA <- err
	}()
	<-b.started

	type reply struct {
		res *connect.Response[inferencev1.GenerateResponse]
		err error
	}
	replyB := make(chan reply, 1)
	go func() {
		res, err := client.Generate(t.Context(), connect.NewRequest(testRequest("shared")))
		replyB <- reply{res, err}
	}()
	<-joined

	cancelA()
	if err := <-errA; connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("cancelled caller got %v, want canceled", err)
	}
	close(b.release)
	if err := <-b.finished; err != nil {
		t.Errorf("shared generation's context ended: %v", err)
	}
	r := <-replyB
	if r.err != nil {
		t.Fatalf("remaining caller failed: %v", r.err)
	}
	if len(r.res.Msg.GetImage()) == 0 {
		t.Error("remaining caller got no image")
	}
	if got := b.calls.Load(); got != 1 {
		t.Errorf("backend ran %d times, want 1", got)
	}
}

func TestServerBoundsConcurrency(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.started = make(chan struct{}, 2)
	b.release = make(chan struct{})
	s, srv, reg := startServer(t, ServerConfig{MaxConcurrent: 1}, b)
	queued := make(chan struct{}, 1)
	s.queued = func() { queued <- struct{}{} }
	client := newClient(t, srv.URL)

	errs := make(chan error, 2)
	generate := func(prompt string) {
		_, err := client.Generate(t.Context(), connect.NewRequest(testRequest(prompt)))
		errs <- err
	}
	go generate("first")
	<-b.started
	go generate("second")
	<-queued // the second found the only slot taken
	if got := b.calls.Load(); got != 1 {
		t.Fatalf("backend running %d generations, want 1", got)
	}
	if got := metricValue(t, reg, "imagegate_inference_in_flight", nil); got != 1 {
		t.Errorf("in_flight = %v, want 1", got)
	}
	close(b.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := b.calls.Load(); got != 2 {
		t.Errorf("backend ran %d times, want 2", got)
	}
}

func TestServerGenerateTimeout(t *testing.T) {
	t.Parallel()
	b := newTestBackend("test")
	b.release = make(chan struct{}) // never closed: only the timeout ends it
	b.finished = make(chan error, 1)
	// Long enough that the job is surely admitted first: admission refuses
	// a job whose deadline has passed, which is another answer.
	_, srv, _ := startServer(t, ServerConfig{GenerateTimeout: time.Second}, b)
	client := newClient(t, srv.URL)

	_, err := client.Generate(t.Context(), connect.NewRequest(testRequest("slow")))
	if got := connect.CodeOf(err); got != connect.CodeDeadlineExceeded {
		t.Fatalf("err = %v, want deadline_exceeded", err)
	}
	if err := <-b.finished; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("backend context ended with %v, want deadline exceeded", err)
	}
}

func TestNewServerRejectsBadSetups(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      ServerConfig
		backends []Backend
	}{
		{"no backends", ServerConfig{}, nil},
		{"nil backend", ServerConfig{}, []Backend{nil}},
		{"unnamed backend", ServerConfig{}, []Backend{newTestBackend("")}},
		{"duplicate names", ServerConfig{}, []Backend{newTestBackend("a"), newTestBackend("a")}},
		{"negative concurrency", ServerConfig{MaxConcurrent: -1}, []Backend{newTestBackend("a")}},
		{"negative timeout", ServerConfig{GenerateTimeout: -time.Second}, []Backend{newTestBackend("a")}},
		{"token with newline", ServerConfig{Token: "a\nb"}, []Backend{newTestBackend("a")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewServer(tt.cfg, tt.backends, nil, nil); err == nil {
				t.Error("NewServer succeeded, want an error")
			}
		})
	}
}

func TestFlightProgressIsThrottledAndMonotonic(t *testing.T) {
	t.Parallel()
	f := &flight{step: -1, changed: make(chan struct{})}
	announcements := 0
	var last float32 = -1
	report := func(fraction float32) {
		_, _, _, before := f.progress()
		f.report(fraction, "x")
		select {
		case <-before:
			announcements++
			_, got, _, _ := f.progress()
			if got <= last {
				t.Fatalf("announced %v after %v", got, last)
			}
			last = got
		default:
		}
	}
	for i := range 1001 {
		report(float32(i) / 1000)
		report(0)                       // going back is ignored
		report(float32(math.NaN()))     // nonsense is ignored
		report(float32(i) / 1000 * 0.5) // so is lagging behind
	}
	report(7) // clamped to 1, already announced
	if announcements != progressSteps+1 {
		t.Errorf("%d announcements, want %d", announcements, progressSteps+1)
	}
	if last != 1 {
		t.Errorf("last announced %v, want 1", last)
	}
}
