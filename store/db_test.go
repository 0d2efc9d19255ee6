package store

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func TestModelsSurviveReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	db, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Models(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Models on a new store: got %v, want ErrNotFound", err)
	}
	want := []Model{{Name: "retro", Version: "1", Kind: "procedural", Styles: []string{"auto"}, Sizes: []int{256, 512}, SupportsEdits: true, CaseInsensitive: true}}
	if err := db.SaveModels(want); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Models()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("models after reopen (-want +got):\n%s", diff)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return m.Put(keySchema, []byte("99"))
	})
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if db, err := Open(Config{Path: path}); err == nil {
		db.Close()
		t.Fatal("Open accepted a file written by a newer schema")
	}
}

func TestOpenIsExclusive(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	db, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if second, err := Open(Config{Path: path}); err == nil {
		second.Close()
		t.Fatal("a second Open of a locked file succeeded")
	}
}
