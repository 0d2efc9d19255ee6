package store_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/storetest"
)

// TestConformance runs the shared store suite on the bbolt store.
func TestConformance(t *testing.T) {
	var paths sync.Map // store → bbolt file
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, now func() time.Time) (storetest.Store, string) {
			path := filepath.Join(t.TempDir(), "imagegate.db")
			db, err := store.Open(store.Config{Path: path, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			paths.Store(storetest.Store(db), path)
			return db, path
		},
		Reopen: func(t *testing.T, s storetest.Store, now func() time.Time) storetest.Store {
			p, _ := paths.Load(s)
			if err := s.(*store.DB).Close(); err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(store.Config{Path: p.(string), Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			paths.Store(storetest.Store(db), p)
			return db
		},
		Contains: func(t *testing.T, s storetest.Store, needle []byte) bool {
			t.Helper()
			p, _ := paths.Load(s)
			path := p.(string)
			for _, p := range []string{path, path + ".keys", path + ".daykeys", path + ".reportkeys"} {
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
