package postgres_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"net/http"
	"net/http/httptest"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/keyservice"
	"github.com/imagegate/imagegate/store/postgres"
	"github.com/imagegate/imagegate/store/storetest"
)

// TestConformance runs the shared store suite on a real PostgreSQL
// server: one throwaway cluster, a fresh database per test, key files
// opened by the store itself.
func TestConformance(t *testing.T) {
	runConformance(t, nil)
}

// TestConformanceWithKeyService runs the suite again with every store's
// keys kept by a key service (store/keyservice) on a real HTTP server over
// the test's key files, as gateways without a shared disk use it: every
// seal, open and crypto-shred goes over HTTP, and the suite's checks of
// the key files (a destroyed key reads as an empty slot, nothing erased is
// readable in them) look at the service's files.
func TestConformanceWithKeyService(t *testing.T) {
	runConformance(t, func(t *testing.T, keyPath string) string { return serveKeys(t, keyPath, nil) })
}

// serveKeys serves the key files at keyPath with a key service on a real
// HTTP server (behind wrap, if set) until the test ends, and returns its
// URL.
func serveKeys(tb testing.TB, keyPath string, wrap func(http.Handler) http.Handler) string {
	tb.Helper()
	files, err := store.OpenKeyFiles(keyPath)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := keyservice.NewServer(keyservice.ServerConfig{Keys: files, Token: serviceToken})
	if err != nil {
		tb.Fatal(err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	tb.Cleanup(func() {
		hs.Close()
		files.Close()
	})
	return hs.URL
}

const serviceToken = "conformance-key-service-token-0123456789"

// runConformance runs the suite; with serve set, each store's key files
// are served by the key service serve starts, and the stores use it.
func runConformance(t *testing.T, serve func(t *testing.T, keyPath string) (url string)) {
	pg := testpeer.StartPostgres(t)
	type opened struct{ url, keyPath, serviceURL string }
	var dbs sync.Map // store → opened
	openDB := func(t *testing.T, o opened, now func() time.Time) *postgres.DB {
		t.Helper()
		cfg := postgres.Config{URL: o.url, KeyPath: o.keyPath, Now: now}
		if o.serviceURL != "" {
			c, err := keyservice.NewClient(keyservice.ClientConfig{URL: o.serviceURL, Token: serviceToken})
			if err != nil {
				t.Fatal(err)
			}
			cfg.KeyPath, cfg.Keys = "", c
		}
		db, err := postgres.Open(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs.Store(storetest.Store(db), o)
		return db
	}
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, now func() time.Time) (storetest.Store, string) {
			o := opened{url: pg.NewDatabase(t), keyPath: filepath.Join(t.TempDir(), "imagegate.db")}
			if serve != nil {
				o.serviceURL = serve(t, o.keyPath)
			}
			return openDB(t, o, now), o.keyPath
		},
		Reopen: func(t *testing.T, s storetest.Store, now func() time.Time) storetest.Store {
			v, _ := dbs.Load(s)
			s.(*postgres.DB).Close()
			return openDB(t, v.(opened), now)
		},
		Share: func(t *testing.T, s storetest.Store, now func() time.Time) storetest.Store {
			v, _ := dbs.Load(s)
			return openDB(t, v.(opened), now)
		},
		Contains: func(t *testing.T, s storetest.Store, needle []byte) bool {
			t.Helper()
			v, _ := dbs.Load(s)
			o := v.(opened)
			if storetest.ContainsText(dumpDatabase(t, o.url), needle) {
				return true
			}
			for _, p := range []string{o.keyPath + ".keys", o.keyPath + ".daykeys", o.keyPath + ".reportkeys"} {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(data, needle) {
					return true
				}
			}
			return false
		},
	})
}

// dumpDatabase renders every row of every table as text (bytea as hex).
func dumpDatabase(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, table := range tables {
		var dump *string
		if err := c.QueryRow(ctx, `SELECT string_agg(t::text, E'\n') FROM `+pgx.Identifier{table}.Sanitize()+` t`).Scan(&dump); err != nil {
			t.Fatal(err)
		}
		if dump != nil {
			b.WriteString(*dump)
		}
	}
	return b.String()
}
