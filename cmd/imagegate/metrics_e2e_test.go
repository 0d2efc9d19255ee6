package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMetricsNeverOnThePublicListener runs the binary as an operator would
// and asks the public port for /metrics under every setting: it never
// answers there. With --metrics-addr the figures are on that listener
// only; an address that shares the public port is refused at start.
func TestMetricsNeverOnThePublicListener(t *testing.T) {
	t.Parallel()
	publicMetrics := func(t *testing.T, gw *proc) {
		t.Helper()
		for _, path := range []string{"/metrics", "/metrics/", "/METRICS"} {
			resp, err := client.Get(gw.url + path)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 || bytes.Contains(raw, []byte("imagegate_")) || bytes.Contains(raw, []byte("go_goroutines")) {
				t.Errorf("public %s: %d %.200s, want 404 without figures", path, resp.StatusCode, raw)
			}
		}
	}

	t.Run("default flags", func(t *testing.T) {
		t.Parallel()
		gw := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir())
		waitReady(t, gw.url)
		publicMetrics(t, gw)
	})

	t.Run("with --metrics-addr", func(t *testing.T) {
		t.Parallel()
		// Port 0: the gateway binds a port of its own and logs it, so no
		// other process can take it between a test's pick and the bind.
		gw := startEnv(t, []string{"IMAGEGATE_METRICS_ADDR=127.0.0.1:0"},
			"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "info", "--log-format", "json")
		waitReady(t, gw.url)
		metricsAddr := loggedMetricsAddr(t, gw)
		publicMetrics(t, gw)
		resp, err := client.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(raw, []byte("imagegate_http_requests_total")) {
			t.Errorf("metrics listener: %d, want 200 with the gateway's figures", resp.StatusCode)
		}
	})

	t.Run("--metrics-addr on the public port", func(t *testing.T) {
		t.Parallel()
		addr := freeLoopbackAddr(t)
		_, port, _ := net.SplitHostPort(addr)
		for _, metrics := range []string{addr, ":" + port, "0.0.0.0:" + port} {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			cmd := exec.CommandContext(ctx, binary, "serve", "--addr", addr, "--metrics-addr", metrics, "--data-dir", t.TempDir())
			cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn")
			out, err := cmd.CombinedOutput()
			cancel()
			if err == nil || !strings.Contains(string(out), "must not share the public --addr") {
				t.Errorf("--addr %s --metrics-addr %s: %v\n%s\nwant a refusal to start", addr, metrics, err, out)
			}
			if strings.Contains(string(out), "listening on") {
				t.Errorf("--metrics-addr %s: the gateway started listening", metrics)
			}
		}
	})
}

// loggedMetricsAddr reads the address of the metrics listener from the
// gateway's log. The log is copied from the process's stderr as it comes,
// so the line can trail the "listening on" line: the test waits for it.
func loggedMetricsAddr(t *testing.T, gw *proc) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // polling the copied log
		for _, line := range strings.Split(gw.logs(), "\n") {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "metrics listening" && rec.Addr != "" {
				return rec.Addr
			}
		}
	}
	t.Fatalf("no metrics listener in the log:\n%s", gw.logs())
	return ""
}

func TestSharesPort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{":8080", ":8080", true},
		{"127.0.0.1:8080", ":8080", true},
		{":8080", "127.0.0.1:8080", true},
		{"[::]:8080", "10.0.0.1:8080", true},
		{"127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:9091", ":8080", false},
		{"127.0.0.2:8080", "127.0.0.1:8080", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
	} {
		if got := sharesPort(tc.a, tc.b); got != tc.want {
			t.Errorf("sharesPort(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
