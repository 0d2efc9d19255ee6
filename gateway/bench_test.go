package gateway

import (
	"encoding/json"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/gateway/ratelimit"
)

// benchEnv is a gateway as an anonymous visitor meets it: rate limits on
// (with quotas no benchmark exhausts, so every request pays for its charge
// and its RateLimit headers), the free quota at its default.
func benchEnv(b *testing.B) *env {
	huge := ratelimit.Policy{Quota: 1 << 30, Window: time.Minute}
	var cfg Config
	cfg.RateLimits.IP, cfg.RateLimits.Anonymous = huge, huge
	return newEnv(b, envOptions{cfg: cfg, limits: true})
}

// benchRemote is the client address of benchmark requests.
var benchRemote = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}

const benchGenBody = `{"prompt":"a synthwave sunset over a grid","size":"512x512"}`

// BenchmarkGenerationHit runs a cache-hit generation request through the
// gateway's whole middleware chain and handler, without the network: the
// per-request cost the load benchmark measures over HTTP. allocs/op is
// the same at any b.N: nothing on the hit path grows with request count.
func BenchmarkGenerationHit(b *testing.B) {
	e := benchEnv(b)
	body := []byte(benchGenBody)
	if resp, out := e.postJSON(benchGenBody); resp.StatusCode != 200 {
		b.Fatalf("warm-up: %d %s", resp.StatusCode, out)
	}
	h := e.gw.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(new(fasthttp.Request), benchRemote, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/images/generations")
		ctx.Request.Header.SetContentType("application/json")
		ctx.Request.Header.SetHost("localhost")
		ctx.Request.SetBody(body)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "imagegate; hit; detail=l1" ||
			len(ctx.Response.Header.Peek("RateLimit")) == 0 {
			b.Fatalf("status %d, Cache-Status %q: %s", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Cache-Status"), ctx.Response.Body())
		}
	}
}

// BenchmarkObjectHit serves a signed output link from L1 through every
// middleware, without the network.
func BenchmarkObjectHit(b *testing.B) {
	e := benchEnv(b)
	resp, out := e.postJSON(benchGenBody)
	if resp.StatusCode != 200 {
		b.Fatalf("warm-up: %d %s", resp.StatusCode, out)
	}
	var r struct {
		Data []struct{ URL string } `json:"data"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Data) != 1 {
		b.Fatalf("warm-up body %s: %v", out, err)
	}
	u, err := url.Parse(r.Data[0].URL)
	if err != nil {
		b.Fatal(err)
	}
	uri := u.RequestURI()
	h := e.gw.Handler()
	var ctx fasthttp.RequestCtx
	ctx.Init(new(fasthttp.Request), benchRemote, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("GET")
		ctx.Request.SetRequestURI(uri)
		ctx.Request.Header.SetHost("localhost")
		h(&ctx)
		if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) == 0 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}
