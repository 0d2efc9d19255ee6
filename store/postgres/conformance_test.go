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

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store/postgres"
	"github.com/imagegate/imagegate/store/storetest"
)

// TestConformance runs the shared store suite on a real PostgreSQL
// server: one throwaway cluster, a fresh database per test.
func TestConformance(t *testing.T) {
	pg := testpeer.StartPostgres(t)
	type opened struct{ url, keyPath string }
	var dbs sync.Map // store → opened
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, now func() time.Time) (storetest.Store, string) {
			url := pg.NewDatabase(t)
			keyPath := filepath.Join(t.TempDir(), "imagegate.db")
			db, err := postgres.Open(t.Context(), postgres.Config{URL: url, KeyPath: keyPath, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dbs.Store(storetest.Store(db), opened{url, keyPath})
			return db, keyPath
		},
		Reopen: func(t *testing.T, s storetest.Store, now func() time.Time) storetest.Store {
			v, _ := dbs.Load(s)
			o := v.(opened)
			s.(*postgres.DB).Close()
			db, err := postgres.Open(t.Context(), postgres.Config{URL: o.url, KeyPath: o.keyPath, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dbs.Store(storetest.Store(db), o)
			return db
		},
		Share: func(t *testing.T, s storetest.Store, now func() time.Time) storetest.Store {
			v, _ := dbs.Load(s)
			o := v.(opened)
			db, err := postgres.Open(t.Context(), postgres.Config{URL: o.url, KeyPath: o.keyPath, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dbs.Store(storetest.Store(db), o)
			return db
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
