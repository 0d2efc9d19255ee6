package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestKeyFile(t *testing.T) {
	t.Parallel()
	kf, err := openKeyFile(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.close()
	alice, bob := ownerTag("alice"), ownerTag("bob")
	if _, err := kf.get(5, alice); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("never-created slot: %v, want ErrKeyDestroyed", err)
	}
	k1, err := kf.create(5, alice)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := kf.create(5, alice)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("create is not idempotent for the same owner: %v", err)
	}
	if _, err := kf.create(5, bob); err == nil {
		t.Errorf("another owner took an occupied slot")
	}
	if _, err := kf.get(5, bob); err == nil {
		t.Errorf("another owner read the key")
	}
	sealed, _ := seal(k1, "aad", []byte("secret"))
	if err := kf.destroy(5); err != nil {
		t.Fatal(err)
	}
	if err := kf.destroy(5); err != nil {
		t.Errorf("second destroy: %v", err)
	}
	if _, err := kf.get(5, alice); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("after destroy: %v", err)
	}
	if _, err := unseal(k1, "other aad", sealed); err == nil {
		t.Errorf("sealed bytes opened under another record's aad")
	}
}

func TestOpenRefusesAMissingOrForeignKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "imagegate.db")
	db, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, db, "kept@example.com")
	db.Close()
	keys, _ := os.ReadFile(path + ".keys")

	// The bbolt file restored without its key file.
	os.Remove(path + ".keys")
	if db, err := Open(Config{Path: path}); err == nil {
		db.Close()
		t.Fatal("opened without the key file")
	}
	// With another store's key file.
	other := filepath.Join(dir, "other.db")
	odb, _ := Open(Config{Path: other})
	odb.Close()
	foreign, _ := os.ReadFile(other + ".keys")
	os.WriteFile(path+".keys", foreign, 0o600)
	if db, err := Open(Config{Path: path}); err == nil {
		db.Close()
		t.Fatal("opened with another store's key file")
	}
	// With its own, everything is readable again.
	os.WriteFile(path+".keys", keys, 0o600)
	db, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if a, err := db.AccountByEmail("kept@example.com"); err != nil || a.Email != "kept@example.com" {
		t.Errorf("after restoring the key file: %+v, %v", a, err)
	}
}

// Two handles on one key file (two gateways sharing it) creating the same
// day key at once agree on it: the write takes an flock, so the second
// finds the first's key instead of overwriting it with its own.
func TestSharedKeyFileCreatesOneKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "imagegate.db")
	a, err := OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for day := uint64(20000); day < 20040; day++ {
		keys := make([][]byte, 8)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() {
				k := a
				if i%2 == 1 {
					k = b
				}
				key, err := k.CreateDayKey(day)
				if err != nil {
					t.Error(err)
				}
				keys[i] = key
			})
		}
		wg.Wait()
		for i := range keys {
			if !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("day %d: handles got different keys", day)
			}
		}
		if got, err := b.DayKey(day); err != nil || !bytes.Equal(got, keys[0]) {
			t.Fatalf("day %d: the stored key is not the one handed out (%v)", day, err)
		}
	}
}
