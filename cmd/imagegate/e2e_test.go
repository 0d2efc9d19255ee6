package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// binary is the imagegate command built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "imagegate-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "imagegate")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build imagegate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running imagegate process.
type proc struct {
	cmd    *exec.Cmd
	url    string
	stderr *testpeer.Buffer
}

// start runs imagegate with args and waits for its "listening on" line.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with extra environment variables, for settings a test
// gives the way an operator's secrets arrive.
func startEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn"), env...)
	return startCmd(t, cmd)
}

// startCmd starts cmd (an imagegate process, however launched), stops it
// when the test ends, and waits for its "listening on" line.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &testpeer.Buffer{}}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, u, ok := strings.Cut(sc.Text(), "listening on "); ok {
			p.url = strings.TrimSpace(u)
			go io.Copy(io.Discard, out)
			return p
		}
	}
	t.Fatalf("%v exited before listening:\n%s", cmd.Args, p.logs())
	return nil
}

func (p *proc) logs() string {
	return p.stderr.String()
}

var client = &http.Client{Timeout: 60 * time.Second}

// generate posts like the README's curl: form content type, JSON body.
func generate(t *testing.T, base, body string) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := client.Post(base+"/v1/images/generations", "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &out)
	if resp.StatusCode == 200 && out == nil {
		t.Fatalf("200 with a body that is not JSON: %s", raw)
	}
	return resp, out
}

func firstURL(t *testing.T, out map[string]any) string {
	t.Helper()
	data, _ := out["data"].([]any)
	if len(data) == 0 {
		t.Fatalf("no data in %v", out)
	}
	u, _ := data[0].(map[string]any)["url"].(string)
	if u == "" {
		t.Fatalf("no url in %v", out)
	}
	return u
}

// waitReady polls /readyz; readiness is an event the process reports, so
// this is a bounded poll, not a timing assumption.
func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", base)
}

func TestQuickstartOnEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gw := start(t, "--addr", "127.0.0.1:0", "--data-dir", dir)
	waitReady(t, gw.url)
	const body = `{"prompt":"a synthwave sunset over a grid","size":"512x512"}`
	resp, out := generate(t, gw.url, body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %v\n%s", resp.StatusCode, out, gw.logs())
	}
	link := firstURL(t, out)
	img, err := client.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	pngBytes, _ := io.ReadAll(img.Body)
	img.Body.Close()
	cfg, err := png.DecodeConfig(bytes.NewReader(pngBytes))
	if err != nil || cfg.Width != 512 || cfg.Height != 512 {
		t.Fatalf("object is not a 512×512 PNG: %v %dx%d", err, cfg.Width, cfg.Height)
	}
	resp, _ = generate(t, gw.url, body)
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
		t.Errorf("repeat Cache-Status = %q, want a hit", cs)
	}

	// Restart on the same data directory: L2 and objects survive.
	gw.cmd.Process.Signal(syscall.SIGTERM)
	if err := gw.cmd.Wait(); err != nil {
		t.Fatalf("graceful shutdown failed: %v\n%s", err, gw.logs())
	}
	gw2 := start(t, "--addr", "127.0.0.1:0", "--data-dir", dir)
	waitReady(t, gw2.url)
	resp, out = generate(t, gw2.url, body)
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
		t.Errorf("after restart Cache-Status = %q, want a hit (%v)", cs, out)
	}
}

var generationsRE = regexp.MustCompile(`(?m)^imagegate_inference_generations_total\{[^}]*\} (\d+)`)

func tierGenerations(t *testing.T, tierURL string) int {
	t.Helper()
	resp, err := client.Get(tierURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	total := 0
	for _, m := range generationsRE.FindAllStringSubmatch(string(raw), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total
}

func TestHundredIdenticalMissesOneGeneration(t *testing.T) {
	t.Parallel()
	tier := start(t, "inference", "--addr", "127.0.0.1:0", "--inference-token", "s3cret")
	// A load from one address: rate limits and the free quota are off, as
	// for any benchmark.
	gw := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--inference", tier.url, "--inference-token", "s3cret",
		"--rate-limits", "off", "--free-images-per-day", "unlimited")
	waitReady(t, gw.url)
	const n = 100
	urls := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, out := generate(t, gw.url, `{"prompt":"a hundred visitors, one sunset","size":"512x512"}`)
			if resp.StatusCode != 200 {
				t.Errorf("status %d: %v", resp.StatusCode, out)
				return
			}
			u := firstURL(t, out)
			urls[i] = u[:strings.Index(u, "?")]
		}()
	}
	wg.Wait()
	for i := range n {
		if urls[i] != urls[0] {
			t.Fatalf("request %d got %s, request 0 got %s", i, urls[i], urls[0])
		}
	}
	if got := tierGenerations(t, tier.url); got != 1 {
		t.Errorf("tier counted %d generations, want exactly 1", got)
	}
}

func TestInferenceTierNeedsToken(t *testing.T) {
	t.Parallel()
	tier := start(t, "inference", "--addr", "127.0.0.1:0", "--inference-token", "right")
	gw := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--inference", tier.url, "--inference-token", "wrong", "--inference-timeout", "2s")
	resp, out := generate(t, gw.url, `{"prompt":"no entry","size":"256x256"}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("wrong token: status %d %v, want 503 with Retry-After", resp.StatusCode, out)
	}
	if got := tierGenerations(t, tier.url); got != 0 {
		t.Errorf("the tier generated for an unauthenticated gateway")
	}
}

func TestKillingOneTierUnderLoad(t *testing.T) {
	t.Parallel()
	a := start(t, "inference", "--addr", "127.0.0.1:0")
	b := start(t, "inference", "--addr", "127.0.0.1:0")
	const requestTimeout = 20 * time.Second
	gw := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--rate-limits", "off", "--free-images-per-day", "unlimited",
		"--inference", a.url+","+b.url, "--inference-timeout", "5s", "--request-timeout", requestTimeout.String())
	waitReady(t, gw.url)

	const workers, total, killAfter = 8, 96, 24
	var next, done, ok, unavailable atomic.Int64
	killed := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				start := time.Now()
				resp, out := generate(t, gw.url, fmt.Sprintf(`{"prompt":"distinct prompt %d","size":"256x256"}`, i))
				elapsed := time.Since(start)
				switch {
				case resp.StatusCode == 200:
					ok.Add(1)
				case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
					unavailable.Add(1)
				default:
					t.Errorf("request %d: status %d %v", i, resp.StatusCode, out)
				}
				// The slack is for a loaded machine; a request that ignored
				// its deadline would run into the client's 60 s timeout.
				if elapsed > requestTimeout+20*time.Second {
					t.Errorf("request %d took %s, past its deadline", i, elapsed)
				}
				if done.Add(1) == killAfter {
					once.Do(func() {
						a.cmd.Process.Kill()
						close(killed)
					})
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatal("the tier was never killed")
	}
	if ok.Load() < total-killAfter {
		t.Errorf("only %d of %d requests succeeded (%d clean 503s) with one tier left", ok.Load(), total, unavailable.Load())
	}
	t.Logf("%d ok, %d clean 503", ok.Load(), unavailable.Load())
}
