package inference_test

import (
	"bytes"
	"image/png"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/comfyui"
	"github.com/imagegate/imagegate/internal/fakecomfy"
	"github.com/imagegate/imagegate/internal/faultnet"
	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
	"github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1/inferencev1connect"
)

// comfyTier runs a tier whose one model runs on the ComfyUI servers at
// urls, in that order of preference when all are idle.
func comfyTier(t *testing.T, cfg inference.ServerConfig, urls ...string) (inferencev1connect.InferenceServiceClient, *prometheus.Registry, string) {
	t.Helper()
	data, err := os.ReadFile("comfyui/testdata/txt2img.json")
	if err != nil {
		t.Fatal(err)
	}
	ckpt := []string{"sd_xl_base_1.0.safetensors"}
	w, err := comfyui.ParseWorkflow(data, ckpt, nil)
	if err != nil {
		t.Fatal(err)
	}
	var servers []comfyui.Server
	for _, u := range urls {
		servers = append(servers, comfyui.Server{URL: u})
	}
	b, err := comfyui.New(comfyui.Config{
		Info:    inference.ModelInfo{Name: "sdxl", Kind: "neural", Sizes: []int{512}},
		Servers: servers, Workflows: map[string]comfyui.Workflow{"auto": w}, Checkpoints: ckpt, DefaultSteps: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := inference.NewServer(cfg, []inference.Backend{b}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := inference.ServeH2C(t, s.Handler())
	return inferencev1connect.NewInferenceServiceClient(srv.Client(), srv.URL), reg, srv.URL
}

func request(prompt string) *connect.Request[inferencev1.GenerateRequest] {
	return connect.NewRequest(&inferencev1.GenerateRequest{Prompt: prompt, Width: 512, Height: 512, Seed: 7})
}

// generate calls Generate and fails the test if the call outlives guard,
// which is far beyond any deadline in these tests: a hang fails, it does
// not stall the suite.
func generate(t *testing.T, client inferencev1connect.InferenceServiceClient, prompt string) (*inferencev1.GenerateResponse, error) {
	t.Helper()
	type reply struct {
		res *connect.Response[inferencev1.GenerateResponse]
		err error
	}
	done := make(chan reply, 1)
	go func() {
		res, err := client.Generate(t.Context(), request(prompt))
		done <- reply{res, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		return r.res.Msg, nil
	case <-time.After(60 * time.Second):
		t.Fatal("the call hung past every deadline")
		return nil, nil
	}
}

func retries(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, _ := reg.Gather()
	total := 0.0
	for _, f := range families {
		if f.GetName() == "imagegate_inference_tier_retries_total" {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func TestFaultsBetweenTierAndBackend(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		mode     faultnet.Mode
		latency  time.Duration
		failOver bool // the job must end on the healthy server
	}{
		{"reset", faultnet.Reset, 0, true},
		{"blackhole", faultnet.Blackhole, 0, true},
		{"latency", faultnet.Pass, 2 * time.Millisecond, false},
		{"slow close", faultnet.SlowClose, 300 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			faulty, healthy := fakecomfy.Start(t), fakecomfy.Start(t)
			proxy := faultnet.Start(t, faulty.Listener.Addr().String())
			proxy.Set(tc.mode, tc.latency)
			client, reg, _ := comfyTier(t, inference.ServerConfig{
				GenerateTimeout: 30 * time.Second,
				// Generous: on a loaded machine a healthy attempt
				// must not look stalled.
				Queue: inference.QueueConfig{StallTimeout: 5 * time.Second, MaxAttempts: 4},
			}, "http://"+proxy.Addr(), healthy.URL)
			res, err := generate(t, client, "a lighthouse")
			if err != nil {
				t.Fatalf("generation failed: %v", err)
			}
			if cfg, err := png.DecodeConfig(bytes.NewReader(res.GetImage())); err != nil || cfg.Width != 512 {
				t.Fatalf("image: %+v %v", cfg, err)
			}
			onFaulty, onHealthy := faulty.Counts().Executed, healthy.Counts().Executed
			if tc.failOver {
				if onFaulty != 0 || onHealthy != 1 || retries(t, reg) < 1 {
					t.Errorf("executed faulty %d healthy %d, retries %v: want the job failed over", onFaulty, onHealthy, retries(t, reg))
				}
			} else if onFaulty != 1 || onHealthy != 0 {
				t.Errorf("executed faulty %d healthy %d: a slow but working server should have served it", onFaulty, onHealthy)
			}
		})
	}
}

func TestBackendKilledMidJobFailsOver(t *testing.T) {
	t.Parallel()
	doomed, healthy := fakecomfy.Start(t), fakecomfy.Start(t)
	doomed.Hold()
	client, reg, _ := comfyTier(t, inference.ServerConfig{GenerateTimeout: 30 * time.Second}, doomed.URL, healthy.URL)
	done := make(chan error, 1)
	go func() {
		_, err := generate(t, client, "a lighthouse")
		done <- err
	}()
	<-doomed.Started() // the job is running on the doomed server
	doomed.Close()     // as SIGKILL would: every connection drops
	if err := <-done; err != nil {
		t.Fatalf("the job did not fail over: %v", err)
	}
	if healthy.Counts().Executed != 1 || retries(t, reg) != 1 {
		t.Errorf("healthy executed %d, retries %v", healthy.Counts().Executed, retries(t, reg))
	}
}

func TestNoCallHangsPastItsDeadline(t *testing.T) {
	t.Parallel()
	silent := fakecomfy.Start(t)
	proxy := faultnet.Start(t, silent.Listener.Addr().String())
	proxy.Set(faultnet.Blackhole, 0)
	// One worker, silent; the watchdog is slower than the deadline, so
	// only the deadline can end the call.
	client, reg, _ := comfyTier(t, inference.ServerConfig{
		GenerateTimeout: 300 * time.Millisecond,
		Queue:           inference.QueueConfig{StallTimeout: time.Hour},
	}, "http://"+proxy.Addr())
	_, err := generate(t, client, "a lighthouse")
	if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("got %v, want deadline_exceeded", err)
	}
	families, _ := reg.Gather()
	found := false
	for _, f := range families {
		if f.GetName() == "imagegate_inference_cancellations_total" {
			for _, m := range f.GetMetric() {
				found = found || m.GetCounter().GetValue() >= 1
			}
		}
	}
	if !found {
		t.Error("the expired generation was not counted as canceled")
	}
	// With every attempt refused fast (resets), the generation fails after
	// the attempt cap instead of spinning until its deadline.
	proxy.Set(faultnet.Reset, 0)
	client2, reg2, _ := comfyTier(t, inference.ServerConfig{GenerateTimeout: time.Minute, Queue: inference.QueueConfig{MaxAttempts: 3}}, "http://"+proxy.Addr())
	_, err = generate(t, client2, "a lighthouse")
	if connect.CodeOf(err) != connect.CodeAborted || retries(t, reg2) != 2 {
		t.Errorf("got %v after %v retries, want aborted after 2 retries", err, retries(t, reg2))
	}
}

func TestStreamCarriesProgressAndPreviews(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	fake.Previews = true
	_, _, url := comfyTier(t, inference.ServerConfig{}, fake.URL)
	pool, err := inference.NewPool(inference.PoolConfig{URLs: []string{url}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var events []inference.Progress
	res, info, err := pool.GenerateStream(t.Context(), "sdxl", inference.Request{Prompt: "a lighthouse", Width: 512, Height: 512, Seed: 2},
		func(p inference.Progress) { events = append(events, p) })
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "sdxl" || len(res.Image) == 0 {
		t.Fatalf("result %q, %d bytes", info.Name, len(res.Image))
	}
	previews := 0
	for i, e := range events {
		if i > 0 && e.Fraction < events[i-1].Fraction {
			t.Errorf("progress went back: %+v", events)
		}
		if len(e.PartialImage) > 0 {
			previews++
			if _, err := png.DecodeConfig(bytes.NewReader(e.PartialImage)); err != nil || e.PartialImageType != "image/png" {
				t.Errorf("partial image %q: %v", e.PartialImageType, err)
			}
		}
	}
	if len(events) < 3 || previews == 0 {
		t.Errorf("%d events, %d with previews: want progress and at least one preview", len(events), previews)
	}
}
