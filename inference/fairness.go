package inference

import (
	"crypto/hmac"
	"crypto/sha256"
)

// FairnessKey returns the opaque key the tier shares capacity by for
// subject (an account ID, or a visitor's network): HMAC-SHA256 under salt,
// truncated to 16 bytes. The gateway keeps salt; the tier sees only the
// key, compares keys for equality, and cannot tell whose key it is or link
// keys across salts (promise X1). A salt of at least 32 random bytes is
// expected; rotating it makes every key new.
func FairnessKey(salt []byte, subject string) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(subject))
	return m.Sum(nil)[:16]
}
