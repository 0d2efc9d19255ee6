package gateway

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkGenerationHit runs a cache-hit generation request through the
// gateway's whole middleware chain and handler, without the network: the
// per-request cost the load benchmark measures over HTTP.
func BenchmarkGenerationHit(b *testing.B) {
	e := newEnv(b, envOptions{})
	body := []byte(`{"prompt":"a synthwave sunset over a grid","size":"512x512"}`)
	e.postJSON(string(body))
	h := e.gw.App().Handler()
	var ctx fasthttp.RequestCtx
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
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}
