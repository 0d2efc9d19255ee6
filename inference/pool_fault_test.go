package inference

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/faultnet"
)

// TestPoolFaultsBetweenGatewayAndTier puts a fault proxy in front of one
// of two tiers and checks that the pool (the gateway's side) still gets
// its image, from the healthy tier when the faulty one cannot answer, and
// that no call outlives its deadline when neither can.
func TestPoolFaultsBetweenGatewayAndTier(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		mode    faultnet.Mode
		latency time.Duration
		viaA    bool // the faulty tier still serves the call
	}{
		{"reset", faultnet.Reset, 0, false},
		{"blackhole", faultnet.Blackhole, 0, false},
		{"latency", faultnet.Pass, 2 * time.Millisecond, true},
		{"slow close", faultnet.SlowClose, 200 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := newTestBackend("test"), newTestBackend("test")
			_, srvA, _ := startServer(t, ServerConfig{}, a)
			_, srvB, _ := startServer(t, ServerConfig{}, b)
			proxy := faultnet.Start(t, strings.TrimPrefix(srvA.URL, "http://"))
			proxy.Set(tc.mode, tc.latency)
			p, err := newPool(PoolConfig{URLs: []string{"http://" + proxy.Addr(), srvB.URL}, CallTimeout: 2 * time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			// Without probes both start healthy and untried; make the
			// faulty one the first choice.
			p.endpoints[1].active.Add(1)
			defer p.endpoints[1].active.Add(-1)
			res, _, err := p.Generate(t.Context(), "", Request{Prompt: "x", Width: 8, Height: 8, Style: "auto"})
			if err != nil {
				t.Fatalf("generate: %v", err)
			}
			if len(res.Image) == 0 {
				t.Fatal("no image")
			}
			if tc.viaA && (a.calls.Load() != 1 || b.calls.Load() != 0) {
				t.Errorf("calls a=%d b=%d: a slow but working tier should have served it", a.calls.Load(), b.calls.Load())
			}
			if !tc.viaA && b.calls.Load() != 1 {
				t.Errorf("calls a=%d b=%d: want the healthy tier to serve it", a.calls.Load(), b.calls.Load())
			}
		})
	}

	t.Run("both silent", func(t *testing.T) {
		t.Parallel()
		var urls []string
		for range 2 {
			_, srv, _ := startServer(t, ServerConfig{}, newTestBackend("test"))
			proxy := faultnet.Start(t, strings.TrimPrefix(srv.URL, "http://"))
			proxy.Set(faultnet.Blackhole, 0)
			urls = append(urls, "http://"+proxy.Addr())
		}
		p, err := newPool(PoolConfig{URLs: urls, CallTimeout: time.Hour}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, _, err := p.Generate(ctx, "", Request{Prompt: "x", Width: 8, Height: 8, Style: "auto"})
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want the caller's deadline", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the call hung past its deadline")
		}
	})
}
