package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
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
