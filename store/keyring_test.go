package store

import (
	"bytes"
	"errors"
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
