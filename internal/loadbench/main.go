// Command loadbench measures the gateway's two hot routes against a bare
// fasthttp server that returns the very same bytes, in one run on one
// machine, and prints requests per second, p99 latency and the ratio to the
// baseline. Speed claims in the README come from its output.
//
// It starts `imagegate serve` (path given by -imagegate) on a fresh data
// directory and itself (with -baseline) as the baseline server, each as its
// own process, warms the gateway's cache with one generation, captures the
// exact response bodies, and then loads each target in turn with the same
// client settings.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

const genBody = `{"prompt":"a synthwave sunset over a grid","size":"512x512"}`

func main() {
	baseline := flag.Bool("baseline", false, "run as the baseline server (internal)")
	genFile := flag.String("gen-body", "", "baseline: file with the generation response body")
	objFile := flag.String("obj-body", "", "baseline: file with the object bytes")
	bin := flag.String("imagegate", "", "path to the imagegate binary")
	dur := flag.Duration("duration", 5*time.Second, "load duration per target")
	conns := flag.Int("conns", 32, "concurrent connections")
	rounds := flag.Int("rounds", 3, "alternating rounds; the best round per target is reported")
	flag.Parse()
	if *baseline {
		runBaseline(*genFile, *objFile)
		return
	}
	if *bin == "" {
		log.Fatal("loadbench: -imagegate is required")
	}
	if err := bench(*bin, *dur, *conns, *rounds); err != nil {
		log.Fatal("loadbench: ", err)
	}
}

// runBaseline serves the captured bodies from a bare fasthttp handler: no
// routing, no middleware, no work.
func runBaseline(genFile, objFile string) {
	gen, err := os.ReadFile(genFile)
	if err != nil {
		log.Fatal(err)
	}
	obj, err := os.ReadFile(objFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	h := func(ctx *fasthttp.RequestCtx) {
		if ctx.IsPost() {
			ctx.SetContentType("application/json")
			ctx.SetBody(gen)
			return
		}
		ctx.SetContentType("image/png")
		ctx.SetBody(obj)
	}
	log.Fatal(fasthttp.Serve(ln, h))
}

// start runs a server process and returns its base URL from the first
// stdout line that contains "listening on".
func start(ctx context.Context, name string, args []string, env []string) (string, *exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, url, ok := strings.Cut(sc.Text(), "listening on "); ok {
			go func() {
				for sc.Scan() {
				}
			}()
			return strings.TrimSpace(url), cmd, nil
		}
	}
	return "", nil, fmt.Errorf("%s exited before listening", name)
}

func bench(bin string, dur time.Duration, conns, rounds int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "loadbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	gw, gwCmd, err := start(ctx, bin, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir + "/data", "--log-level", "warn", "--rate-limits", "off", "--free-images-per-day", "unlimited"},
		[]string{"IMAGEGATE_RATE_LIMITS=off", "IMAGEGATE_FREE_IMAGES_PER_DAY=unlimited"})
	if err != nil {
		return err
	}
	defer gwCmd.Process.Kill()
	c := &fasthttp.Client{MaxConnsPerHost: conns * 2, ReadTimeout: 30 * time.Second}

	// Warm the cache (first call generates; wait until the tier is ready).
	var genResp []byte
	for i := 0; ; i++ {
		status, body, err := post(c, gw+"/v1/images/generations", genBody)
		if err == nil && status == 200 {
			genResp = body
			break
		}
		if i > 100 {
			return fmt.Errorf("gateway never answered 200 (status %d, err %v, body %s)", status, err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	status, genResp, err := post(c, gw+"/v1/images/generations", genBody)
	if err != nil || status != 200 {
		return fmt.Errorf("cache-hit request: status %d, err %v", status, err)
	}
	objURL := extractURL(string(genResp))
	status, objBody, err := get(c, objURL)
	if err != nil || status != 200 {
		return fmt.Errorf("object request: status %d, err %v", status, err)
	}
	objPath := objURL[strings.Index(objURL[len("http://"):], "/")+len("http://"):]

	if err := os.WriteFile(dir+"/gen", genResp, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(dir+"/obj", objBody, 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	base, baseCmd, err := start(ctx, self, []string{"-baseline", "-gen-body", dir + "/gen", "-obj-body", dir + "/obj"}, nil)
	if err != nil {
		return err
	}
	defer baseCmd.Process.Kill()

	type target struct {
		name, method, url, body string
	}
	targets := []target{
		{"baseline POST (bare fasthttp, same body)", "POST", base + "/v1/images/generations", genBody},
		{"gateway POST /v1/images/generations (cache hit)", "POST", gw + "/v1/images/generations", genBody},
		{"baseline GET (bare fasthttp, same 512px PNG)", "GET", base + objPath, ""},
		{"gateway GET /o/<hash>.png (signed)", "GET", gw + objPath, ""},
	}
	best := make([]result, len(targets))
	for r := 0; r < rounds; r++ {
		for i, t := range targets {
			res, err := load(t.method, t.url, t.body, conns, dur)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if res.rps > best[i].rps {
				best[i] = res
			}
		}
	}
	fmt.Printf("\nloadbench: %d connections, %s per target, best of %d rounds, %d-byte JSON body, %d-byte PNG\n\n",
		conns, dur, rounds, len(genResp), len(objBody))
	fmt.Println("| target | req/s | p99 | vs baseline |")
	fmt.Println("|---|---:|---:|---:|")
	for i, t := range targets {
		ratio := "—"
		if i%2 == 1 {
			ratio = fmt.Sprintf("%.0f%%", 100*best[i].rps/best[i-1].rps)
		}
		fmt.Printf("| %s | %.0f | %s | %s |\n", t.name, best[i].rps, best[i].p99.Round(10*time.Microsecond), ratio)
	}
	return nil
}

type result struct {
	rps float64
	p99 time.Duration
}

// load drives one target with conns closed-loop clients for dur and
// reports throughput and the 99th-percentile latency. Any non-200 answer
// fails the run: a benchmark of errors measures nothing.
func load(method, url, body string, conns int, dur time.Duration) (result, error) {
	c := &fasthttp.Client{MaxConnsPerHost: conns, ReadTimeout: 10 * time.Second}
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	lat := make([][]time.Duration, conns)
	errs := make([]error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			req.Header.SetMethod(method)
			if body != "" {
				req.Header.SetContentType("application/json")
				req.SetBodyString(body)
			}
			ls := make([]time.Duration, 0, 1<<16)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.Do(req, resp); err != nil {
					errs[i] = err
					return
				}
				if resp.StatusCode() != 200 {
					errs[i] = fmt.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
					return
				}
				ls = append(ls, time.Since(t0))
			}
			lat[i] = ls
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return result{}, err
		}
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return result{}, fmt.Errorf("no requests completed")
	}
	slices.Sort(all)
	return result{rps: float64(len(all)) / dur.Seconds(), p99: all[len(all)*99/100]}, nil
}

func post(c *fasthttp.Client, url, body string) (int, []byte, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	err := c.Do(req, resp)
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), err
}

func get(c *fasthttp.Client, url string) (int, []byte, error) {
	status, body, err := c.Get(nil, url)
	return status, body, err
}

func extractURL(body string) string {
	_, rest, _ := strings.Cut(body, `"url":"`)
	u, _, _ := strings.Cut(rest, `"`)
	return strings.ReplaceAll(u, `\u0026`, "&")
}
