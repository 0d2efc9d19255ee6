package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// newFakeClock is a clock tests move by hand.
func newFakeClock() *testpeer.Clock {
	return testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
}

// testDB opens a store in a temp dir on a fake clock.
func testDB(t *testing.T) (*DB, *testpeer.Clock, string) {
	t.Helper()
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	db, err := Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, clock, path
}

// fileContains reports whether any of the store's files (the bbolt file
// and both key files) contains needle, freed pages included.
func fileContains(t *testing.T, path string, needle []byte) bool {
	t.Helper()
	for _, p := range []string{path, path + ".keys", path + ".daykeys"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, needle) {
			return true
		}
	}
	return false
}

func mustAccount(t *testing.T, db *DB, email string) Account {
	t.Helper()
	a, err := db.CreateAccount(NewAccount{Email: email, PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: db.now()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
