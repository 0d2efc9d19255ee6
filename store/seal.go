package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// seal encrypts plaintext with key (AES-256-GCM, random nonce). aad binds
// the ciphertext to where it is stored, so sealed bytes copied into another
// record do not open.
func seal(key []byte, aad string, plaintext []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plaintext)+gcm.Overhead())
	rand.Read(out)
	return gcm.Seal(out, out, plaintext, []byte(aad)), nil
}

// unseal reverses seal.
func unseal(key []byte, aad string, sealed []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize()+gcm.Overhead() {
		return nil, errors.New("store: sealed value too short")
	}
	n := gcm.NonceSize()
	pt, err := gcm.Open(nil, sealed[:n], sealed[n:], []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("store: unseal: %w", err)
	}
	return pt, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("store: cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// ownerTag labels an account's key slot.
func ownerTag(accountID string) [tagLen]byte {
	sum := sha256.Sum256([]byte("account-key\x00" + accountID))
	var t [tagLen]byte
	copy(t[:], sum[:])
	return t
}
