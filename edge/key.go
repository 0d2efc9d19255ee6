package edge

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// keyPerm is the mode of a generated key file: its owner only.
const keyPerm = 0o600

// LoadOrCreateKey returns the signing key kept in the file at path,
// creating the file first if it does not exist: 32 random bytes written as
// 64 lowercase hex characters and a newline, mode 0600. Creation is atomic
// and exclusive, so processes racing to create the key all end up with the
// one that won, and none reads a half-written file.
//
// The key is the file's content without trailing CR/LF, used verbatim:
// for a generated file that is the 64 hex characters themselves, not the
// bytes they spell, so the same text can be pasted into a Cloudflare WAF
// rule. An operator may write their own secret instead. A file holding
// fewer than MinKeyLen bytes is refused, not replaced.
func LoadOrCreateKey(path string) ([]byte, error) {
	return loadOrCreateKey(path, defaultFSOps())
}

func loadOrCreateKey(path string, ops fsOps) ([]byte, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return nil, fmt.Errorf("edge: signing key path %q names a directory", path)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("edge: signing key directory: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("edge: signing key directory: %w", err)
	}
	defer root.Close()

	if _, err := root.Lstat(base); err != nil {
		if !isNotExist(err) {
			return nil, fmt.Errorf("edge: signing key %s: %w", path, err)
		}
		var secret [32]byte
		rand.Read(secret[:]) // never fails since Go 1.24
		text := hex.AppendEncode(make([]byte, 0, 2*len(secret)+1), secret[:])
		text = append(text, '\n')
		// If another process won the race, publish leaves its key in
		// place and we read that below.
		if _, err := publish(root, base, text, keyPerm, ops); err != nil {
			return nil, fmt.Errorf("edge: create signing key %s: %w", path, err)
		}
	}

	data, err := root.ReadFile(base)
	if err != nil {
		return nil, fmt.Errorf("edge: read signing key %s: %w", path, err)
	}
	key := bytes.TrimRight(data, "\r\n")
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("edge: signing key %s holds %d bytes, need at least %d: write a longer secret or remove the file to generate one", path, len(key), MinKeyLen)
	}
	return key, nil
}
