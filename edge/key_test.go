package edge

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "nested", "signing.key")

	key, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	// 32 random bytes as 64 hex characters; the characters are the key.
	if len(key) != 64 {
		t.Fatalf("key is %d bytes, want 64 hex characters", len(key))
	}
	if raw, err := hex.DecodeString(string(key)); err != nil || len(raw) != 32 {
		t.Fatalf("key %d bytes is not 32 bytes of hex: %v", len(key), err)
	}
	data, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(data, append(bytes.Clone(key), '\n')) {
		t.Fatalf("file holds %d bytes (%v), want the key and a newline", len(data), err)
	}
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key file mode = %v, %v; want 0600", fi.Mode(), err)
		}
	}

	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("second call returned a different key (%v)", err)
	}
	other, err := LoadOrCreateKey(filepath.Join(dir, "other.key"))
	if err != nil || bytes.Equal(other, key) {
		t.Fatalf("two key files hold the same key (%v)", err)
	}
	if _, err := NewSigner(SignerConfig{Current: key, Previous: other}, nil); err != nil {
		t.Errorf("generated keys do not make a signer: %v", err)
	}
	assertNoTempFiles(t, filepath.Dir(path))
}

func TestLoadOrCreateKeyOperatorSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"with newline", "an operator chosen secret of 32+ bytes\n", "an operator chosen secret of 32+ bytes"},
		{"with CRLF", "an operator chosen secret of 32+ bytes\r\n", "an operator chosen secret of 32+ bytes"},
		{"without newline", strings.Repeat("k", 32), strings.Repeat("k", 32)},
		{"inner spaces kept", " spaced secret spaced secret spaced ", " spaced secret spaced secret spaced "},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := LoadOrCreateKey(path)
		if err != nil || string(key) != tc.want {
			t.Errorf("%s: LoadOrCreateKey = %q, %v; want %q", tc.name, key, err, tc.want)
		}
	}
}

func TestLoadOrCreateKeyRefusesShortKey(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"", "\n", "short", strings.Repeat("k", 31) + "\n\n"} {
		path := filepath.Join(t.TempDir(), "signing.key")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateKey(path)
		if err == nil || !strings.Contains(err.Error(), "need at least 32") {
			t.Errorf("%q: LoadOrCreateKey = %v, want a too-short error", content, err)
		}
		if data, _ := os.ReadFile(path); string(data) != content {
			t.Errorf("%q: the short key file was replaced with %d bytes", content, len(data))
		}
	}
}

func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "signing.key")
	keys := make([][]byte, 16)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			key, err := LoadOrCreateKey(path)
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			keys[i] = key
		})
	}
	wg.Wait()
	for i, k := range keys {
		if len(k) != 64 || !bytes.Equal(k, keys[0]) {
			t.Fatalf("caller %d got a different or empty key", i)
		}
	}
	assertNoTempFiles(t, filepath.Dir(path))
}

func TestLoadOrCreateKeyWithoutHardLinks(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "signing.key")
	ops := defaultFSOps()
	ops.link = func(*os.Root, string, string) error { return &os.LinkError{Op: "link", Err: syscall.EPERM} }
	key, err := loadOrCreateKey(path, ops)
	if err != nil || len(key) != 64 {
		t.Fatalf("loadOrCreateKey = %d bytes, %v", len(key), err)
	}
	if again, err := LoadOrCreateKey(path); err != nil || !bytes.Equal(again, key) {
		t.Fatalf("reload = %v; key changed", err)
	}
	assertNoTempFiles(t, filepath.Dir(path))
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
