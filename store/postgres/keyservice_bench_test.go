package postgres_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/keyservice"
	"github.com/imagegate/imagegate/store/postgres"
)

// BenchmarkRotateIndexKey measures the lookup-index rotation every
// erasure ends with, over 500 accounts, with the key files opened by the
// store, with a key service on loopback, and with one 2 ms away (each
// answer delayed, as a nearby region's round trip would): the rotation
// reads every account's key, a request each.
func BenchmarkRotateIndexKey(b *testing.B) {
	const accounts = 500
	pg := testpeer.StartPostgres(b)
	for _, bc := range []struct {
		name   string
		remote bool
		rtt    time.Duration
	}{{"files", false, 0}, {"service", true, 0}, {"service+2ms", true, 2 * time.Millisecond}} {
		remote := bc.remote
		b.Run(bc.name, func(b *testing.B) {
			keyPath := filepath.Join(b.TempDir(), "imagegate.db")
			cfg := postgres.Config{URL: pg.NewDatabase(b), KeyPath: keyPath}
			if remote {
				var wrap func(http.Handler) http.Handler
				if bc.rtt > 0 {
					wrap = func(srv http.Handler) http.Handler {
						return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
							time.Sleep(bc.rtt) // the network's round trip, simulated
							srv.ServeHTTP(w, r)
						})
					}
				}
				c, err := keyservice.NewClient(keyservice.ClientConfig{URL: serveKeys(b, keyPath, wrap), Token: serviceToken})
				if err != nil {
					b.Fatal(err)
				}
				cfg.KeyPath, cfg.Keys = "", c
			}
			db, err := postgres.Open(b.Context(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			for i := range accounts {
				if _, err := db.CreateAccount(store.NewAccount{Email: fmt.Sprintf("rot%d@example.com", i), Plan: "free", AgeAttested: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if err := db.RotateIndexKey(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
