// Command loadbench measures the gateway's two hot routes against two
// peers, in one run on one machine, and prints requests per second, p99
// latency and the ratio to the baseline. Speed claims in the README come
// from its output. The peers are
//
//   - a bare fasthttp server returning the very same bytes (the physical
//     limit of this machine, client and network stack included), and
//   - nginx from Debian with proxy_cache in front of the gateway, caching
//     the same POST (by method, URI and request body) and GET (an
//     operator's obvious alternative to a fast hit path).
//
// It starts `imagegate serve` (path given by -imagegate) on a fresh data
// directory with rate limits on (quotas large enough that the load is never
// refused, so every request pays for its charge and RateLimit headers),
// itself (with -baseline) as the baseline server and nginx (-nginx) with a
// config of its own in a temp dir, each as its own process; warms the
// gateway's cache with one generation, captures the exact response bodies,
// and then loads each target in turn with wrk (-wrk) with the same
// settings, in alternating rounds.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/gateway"
	"github.com/valyala/fasthttp"
)

const genBody = `{"prompt":"a synthwave sunset over a grid","size":"512x512"}`

func main() {
	baseline := flag.Bool("baseline", false, "run as the baseline server (internal)")
	genFile := flag.String("gen-body", "", "baseline: file with the generation response body")
	objFile := flag.String("obj-body", "", "baseline: file with the object bytes")
	bin := flag.String("imagegate", "", "path to the imagegate binary")
	nginx := flag.String("nginx", "/usr/sbin/nginx", "path to nginx (the proxy_cache peer); empty: no nginx peer")
	wrk := flag.String("wrk", "wrk", "path to wrk, the load generator")
	dur := flag.Duration("duration", 5*time.Second, "load duration per target")
	conns := flag.Int("conns", 32, "concurrent connections")
	threads := flag.Int("threads", 1, "wrk threads")
	rounds := flag.Int("rounds", 3, "alternating rounds; the best round per target is reported")
	flag.Parse()
	if *baseline {
		runBaseline(*genFile, *objFile)
		return
	}
	if *bin == "" {
		log.Fatal("loadbench: -imagegate is required")
	}
	cfg := benchConfig{bin: *bin, nginx: *nginx, wrk: *wrk, dur: *dur, conns: *conns, threads: *threads, rounds: *rounds}
	if err := bench(cfg); err != nil {
		log.Fatal("loadbench: ", err)
	}
}

type benchConfig struct {
	bin, nginx, wrk        string
	dur                    time.Duration
	conns, threads, rounds int
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
	// The same buffers as the gateway's server, so the baseline is the
	// limit of that configuration, not of fasthttp's defaults.
	srv := &fasthttp.Server{Handler: h, WriteBufferSize: gateway.WriteBufferSize}
	log.Fatal(srv.Serve(ln))
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

// gatewayConfig keeps every rate limit on, with quotas no load from one
// address exhausts: each request still pays for its charge and carries
// RateLimit headers, as an anonymous visitor's does.
const gatewayConfig = `
[rate_limits.ip]
quota = 1000000000
window = "60s"
[rate_limits.anonymous]
quota = 1000000000
window = "60s"
`

func bench(cfg benchConfig) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "loadbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "imagegate.toml"), []byte(gatewayConfig), 0o600); err != nil {
		return err
	}

	gw, gwCmd, err := start(ctx, cfg.bin, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir + "/data", "--log-level", "warn",
		"--config", filepath.Join(dir, "imagegate.toml")}, nil)
	if err != nil {
		return err
	}
	defer gwCmd.Process.Kill()
	c := &fasthttp.Client{MaxConnsPerHost: 4, ReadTimeout: 30 * time.Second}

	// Warm the cache (first call generates; wait until the tier is ready).
	for i := 0; ; i++ {
		status, body, err := post(c, gw+"/v1/images/generations", genBody)
		if err == nil && status == 200 {
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
		baseline                bool
		pid                     int // the server process, whose CPU time per request is reported
	}
	targets := []target{
		{name: "baseline POST (bare fasthttp, same body)", method: "POST", url: base + "/v1/images/generations", body: genBody, baseline: true, pid: baseCmd.Process.Pid},
		{name: "gateway POST /v1/images/generations (cache hit)", method: "POST", url: gw + "/v1/images/generations", body: genBody, pid: gwCmd.Process.Pid},
	}
	var nginxURL string
	var nginxPID int
	if cfg.nginx != "" {
		var stop func()
		nginxURL, nginxPID, stop, err = startNginx(ctx, cfg.nginx, filepath.Join(dir, "nginx"), gw)
		if err != nil {
			return err
		}
		defer stop()
		// Fill nginx's cache, and check it answers from it.
		for _, fill := range []func() (int, []byte, error){
			func() (int, []byte, error) { return post(c, nginxURL+"/v1/images/generations", genBody) },
			func() (int, []byte, error) { return get(c, nginxURL+objPath) },
		} {
			if status, body, err := fill(); err != nil || status != 200 {
				return fmt.Errorf("nginx: status %d, err %v, body %.200s", status, err, body)
			}
		}
		if hit, err := nginxHit(nginxURL + "/v1/images/generations"); err != nil || !hit {
			return fmt.Errorf("nginx does not answer the generation from its cache (err %v)", err)
		}
		targets = append(targets, target{name: "nginx proxy_cache POST in front of the gateway", method: "POST", url: nginxURL + "/v1/images/generations", body: genBody, pid: nginxPID})
	}
	targets = append(targets,
		target{name: "baseline GET (bare fasthttp, same 512px PNG)", method: "GET", url: base + objPath, baseline: true, pid: baseCmd.Process.Pid},
		target{name: "gateway GET /o/<hash>.png (signed)", method: "GET", url: gw + objPath, pid: gwCmd.Process.Pid},
	)
	if nginxURL != "" {
		targets = append(targets, target{name: "nginx proxy_cache GET in front of the gateway", method: "GET", url: nginxURL + objPath, pid: nginxPID})
	}

	script := filepath.Join(dir, "post.lua")
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = %q\n", genBody)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		return err
	}
	best := make([]result, len(targets))
	cpu := make([][]float64, len(targets)) // server CPU µs per request, every round
	for r := 0; r < cfg.rounds; r++ {
		for i, t := range targets {
			s := ""
			if t.method == "POST" {
				s = script
			}
			before := cpuTime(t.pid)
			res, err := load(ctx, cfg, t.url, s)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if used := cpuTime(t.pid) - before; used > 0 && res.requests > 0 {
				cpu[i] = append(cpu[i], float64(used.Microseconds())/float64(res.requests))
			}
			if res.rps > best[i].rps {
				best[i] = res
			}
		}
	}
	fmt.Printf("\nloadbench: wrk -t%d -c%d, %s per target, best of %d alternating rounds, %d-byte JSON body, %d-byte PNG\n\n",
		cfg.threads, cfg.conns, cfg.dur, cfg.rounds, len(genResp), len(objBody))
	// CPU per request is the median round's: on a machine shared with
	// other work it moves far less than throughput does.
	fmt.Println("| target | req/s | p99 | vs baseline | server CPU per request | vs baseline |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	var baseRPS, baseCPU float64
	for i, t := range targets {
		ratio, cpuRatio := "—", "—"
		c := median(cpu[i])
		if t.baseline {
			baseRPS, baseCPU = best[i].rps, c
		} else {
			ratio = fmt.Sprintf("%.2f×", best[i].rps/baseRPS)
			if c > 0 {
				cpuRatio = fmt.Sprintf("%.2f×", baseCPU/c)
			}
		}
		fmt.Printf("| %s | %.0f | %s | %s | %.1f µs | %s |\n", t.name, best[i].rps, best[i].p99.Round(10*time.Microsecond), ratio, c, cpuRatio)
	}
	return nil
}

// nginxConfig puts nginx's proxy_cache in front of the gateway and caches
// both hot routes, the generation POST included: its key is the method,
// the URI and the request body, and it ignores the gateway's
// Cache-Control: no-store (an operator would have to, to cache it at all).
// Settings are Debian's defaults otherwise, with access logs off as the
// gateway has none.
const nginxConfig = `%s
worker_processes auto;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	proxy_cache_path %[2]s/cache levels=1:2 keys_zone=imagegate:10m max_size=1g;
	upstream gateway { server %[3]s; keepalive 32; }
	server {
		listen 127.0.0.1:%[4]d;
		client_body_buffer_size 64k;
		location / {
			proxy_pass http://gateway;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $host;
			proxy_cache imagegate;
			proxy_cache_methods GET HEAD POST;
			proxy_cache_key "$request_method|$request_uri|$request_body";
			proxy_cache_valid 200 10m;
			proxy_ignore_headers Cache-Control Expires Set-Cookie;
			add_header X-Nginx-Cache $upstream_cache_status;
		}
	}
}
`

// startNginx runs nginx in the foreground with a config of its own under
// dir, proxying to the gateway at gw, and returns its base URL and the
// master's pid (its workers are its children).
func startNginx(ctx context.Context, bin, dir, gw string) (string, int, func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	userLine := ""
	if os.Geteuid() == 0 {
		// As root nginx would run its workers as nobody, who cannot
		// write the cache under our temp dir.
		u, err := user.Current()
		if err != nil {
			return "", 0, nil, err
		}
		userLine = "user " + u.Username + ";"
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConfig, userLine, dir, strings.TrimPrefix(gw, "http://"), port)), 0o600); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("nginx: %w", err)
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://")); err == nil {
			conn.Close()
			return url, cmd.Process.Pid, stop, nil
		}
		if i > 100 {
			stop()
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return "", 0, nil, fmt.Errorf("nginx never listened: %s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nginxHit reports whether nginx answered the generation from its cache.
func nginxHit(url string) (bool, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyString(genBody)
	if err := fasthttp.Do(req, resp); err != nil {
		return false, err
	}
	return string(resp.Header.Peek("X-Nginx-Cache")) == "HIT", nil
}

type result struct {
	rps      float64
	p99      time.Duration
	requests int64
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// cpuTime is the user and system CPU time used so far by process pid and
// its direct children (nginx's workers), from /proc; 0 when unknown.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	total := procCPU(pid)
	if kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, f := range strings.Fields(string(kids)) {
			if k, err := strconv.Atoi(f); err == nil {
				total += procCPU(k)
			}
		}
	}
	return total
}

// procCPU is utime+stime of one process.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clockTicks
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs    = regexp.MustCompile(`(\d+) requests in`)
	reP99     = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors: (.*)`)
)

// load drives one target with wrk for cfg.dur and reports throughput and
// the 99th-percentile latency. Any error or non-2xx answer fails the run:
// a benchmark of errors measures nothing.
func load(ctx context.Context, cfg benchConfig, url, script string) (result, error) {
	args := []string{"-t", strconv.Itoa(cfg.threads), "-c", strconv.Itoa(cfg.conns), "-d", strconv.Itoa(int(cfg.dur.Seconds())) + "s", "--latency"}
	if script != "" {
		args = append(args, "-s", script)
	}
	out, err := exec.CommandContext(ctx, cfg.wrk, append(args, url)...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	if m := reNon2xx.FindSubmatch(out); m != nil {
		return result{}, fmt.Errorf("%s non-2xx answers", m[1])
	}
	if m := reSockErr.FindSubmatch(out); m != nil {
		return result{}, fmt.Errorf("socket errors: %s", m[1])
	}
	m := reRPS.FindSubmatch(out)
	p := reP99.FindSubmatch(out)
	if m == nil || p == nil {
		return result{}, errors.New("wrk output not understood: " + string(out))
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	var requests int64
	if n := reReqs.FindSubmatch(out); n != nil {
		requests, _ = strconv.ParseInt(string(n[1]), 10, 64)
	}
	v, _ := strconv.ParseFloat(string(p[1]), 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(p[2])]
	return result{rps: rps, p99: time.Duration(v * float64(unit)), requests: requests}, nil
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
