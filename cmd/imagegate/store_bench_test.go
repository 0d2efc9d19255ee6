package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// BenchmarkGenerationMissByStore measures a signed-out generation miss
// (retro at 256 px, its output recorded in the account store before the
// answer) and a hit through the whole composed gateway, once on the
// embedded bbolt store and once on PostgreSQL, in the same run, and
// reports PostgreSQL's miss time relative to bbolt's. Hits do not touch
// the store, so their ratio should be 1 within noise.
func BenchmarkGenerationMissByStore(b *testing.B) {
	pg := testpeer.StartPostgres(b)
	measure := func(databaseURL string) (miss, hit time.Duration) {
		var cfg serveConfig
		cfg.DataDir = b.TempDir()
		cfg.DatabaseURL = databaseURL
		cfg.Mail.OutboxDir = filepath.Join(cfg.DataDir, "outbox")
		cfg.Gateway.RateLimits.Disabled = true
		cfg.Gateway.FreeQuota.FreeImagesPerDay = gateway.UnlimitedFreeImages()
		if err := cfg.Retention.Validate(); err != nil {
			b.Fatal(err)
		}
		if err := cfg.Gateway.Validate(); err != nil {
			b.Fatal(err)
		}
		sys, err := newSystem(b.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		defer sys.close(b.Context())
		if err := sys.gateway.RefreshModels(b.Context()); err != nil {
			b.Fatal(err)
		}
		h := sys.gateway.App().Handler()
		var ctx fasthttp.RequestCtx
		do := func(prompt string) {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI("/v1/images/generations")
			ctx.Request.Header.SetContentType("application/json")
			ctx.Request.Header.SetHost("localhost")
			ctx.Request.SetBody([]byte(`{"prompt":"` + prompt + `","size":"256x256"}`))
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
		start := time.Now()
		for i := range b.N {
			do(fmt.Sprintf("a benchmark miss number %d", i))
		}
		miss = time.Since(start) / time.Duration(b.N)
		start = time.Now()
		for range b.N {
			do("a benchmark miss number 0")
		}
		hit = time.Since(start) / time.Duration(b.N)
		return miss, hit
	}
	b.ResetTimer()
	boltMiss, boltHit := measure("")
	pgMiss, pgHit := measure(pg.NewDatabase(b))
	b.StopTimer()
	b.ReportMetric(float64(boltMiss.Microseconds()), "bbolt-miss-µs")
	b.ReportMetric(float64(pgMiss.Microseconds()), "pg-miss-µs")
	b.ReportMetric(float64(pgMiss)/float64(boltMiss), "pg/bbolt-miss")
	b.ReportMetric(float64(boltHit.Microseconds()), "bbolt-hit-µs")
	b.ReportMetric(float64(pgHit.Microseconds()), "pg-hit-µs")
	b.ReportMetric(float64(pgHit)/float64(boltHit), "pg/bbolt-hit")
}
