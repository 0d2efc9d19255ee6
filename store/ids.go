package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
)

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix followed by 128 random bits in lowercase base32.
func newID(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + idEncoding.EncodeToString(b[:])
}

// newToken returns a secret with n random bytes, URL-safe base64, and the
// hash under which it is stored. The secret itself is never stored.
func newToken(prefix string, n int) (token string, hash []byte) {
	b := make([]byte, n)
	rand.Read(b)
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

// hashToken is how secrets are stored and looked up. The tokens carry at
// least 128 random bits, so a fast hash is enough: there is nothing to
// brute-force.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
