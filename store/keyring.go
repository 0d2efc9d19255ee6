package store

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// ErrKeyDestroyed reports that the key protecting a record was destroyed:
// the record belonged to an erased account or an expired retention period
// and can no longer be read by anyone.
var ErrKeyDestroyed = errors.New("store: key destroyed")

// ErrKeyOwner reports a key slot that holds another owner's key: a create
// for an occupied slot, or a read naming the wrong owner. It means a slot
// number was handed out twice or a record points at the wrong slot.
var ErrKeyOwner = errors.New("store: key slot belongs to another owner")

const (
	keyLen   = 32 // AES-256
	tagLen   = 16
	slotSize = tagLen + keyLen
)

// keyFile is a file of fixed-size key slots that are overwritten in place.
//
// It exists because bbolt never wipes freed pages: a record deleted from
// the database stays readable in the file until its page is reused. Data
// that must become unrecoverable on erasure or at the end of its retention
// is therefore sealed with a key kept here, outside bbolt, and destroying
// the key — zeroing its slot and syncing — makes every copy of the sealed
// bytes (in freed pages, in old backups of the database file) unreadable.
// Slots are never reused, so a zeroed slot stays zero.
//
// A slot holds a 16-byte tag naming its owner, then the key. A read checks
// the tag so a record can never be opened with another owner's key.
type keyFile struct {
	mu sync.Mutex // with flock, serialises writes; reads use ReadAt and need no lock
	f  *os.File
}

func openKeyFile(path string) (*keyFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open key file: %w", err)
	}
	return &keyFile{f: f}, nil
}

func (k *keyFile) close() error { return k.f.Close() }

// create generates a key for slot, labelled tag, and makes it durable. A
// slot that already holds a key for the same tag keeps it (create is
// idempotent for a retried operation); any other non-empty slot is an error.
func (k *keyFile) create(slot uint64, tag [tagLen]byte) ([]byte, error) {
	unlock, err := k.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	cur, err := k.read(slot)
	if err != nil {
		return nil, err
	}
	if !isZero(cur) {
		if subtle.ConstantTimeCompare(cur[:tagLen], tag[:]) == 1 {
			return cur[tagLen:], nil
		}
		return nil, fmt.Errorf("%w: slot %d is already in use", ErrKeyOwner, slot)
	}
	var buf [slotSize]byte
	copy(buf[:tagLen], tag[:])
	rand.Read(buf[tagLen:])
	if _, err := k.f.WriteAt(buf[:], int64(slot)*slotSize); err != nil {
		return nil, fmt.Errorf("store: write key slot: %w", err)
	}
	if err := k.f.Sync(); err != nil {
		return nil, fmt.Errorf("store: sync key file: %w", err)
	}
	return append([]byte(nil), buf[tagLen:]...), nil
}

// get returns the key in slot, or ErrKeyDestroyed if it was destroyed or
// never created.
func (k *keyFile) get(slot uint64, tag [tagLen]byte) ([]byte, error) {
	cur, err := k.read(slot)
	if err != nil {
		return nil, err
	}
	if isZero(cur) {
		return nil, ErrKeyDestroyed
	}
	if subtle.ConstantTimeCompare(cur[:tagLen], tag[:]) != 1 {
		return nil, fmt.Errorf("%w: slot %d", ErrKeyOwner, slot)
	}
	return cur[tagLen:], nil
}

// destroy overwrites slot with zeros and syncs the file. Destroying an
// empty slot is a no-op, so erasure can be retried.
func (k *keyFile) destroy(slot uint64) error {
	unlock, err := k.lock()
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := k.read(slot)
	if err != nil {
		return err
	}
	if isZero(cur) {
		return nil
	}
	var zero [slotSize]byte
	if _, err := k.f.WriteAt(zero[:], int64(slot)*slotSize); err != nil {
		return fmt.Errorf("store: wipe key slot: %w", err)
	}
	if err := k.f.Sync(); err != nil {
		return fmt.Errorf("store: sync key file: %w", err)
	}
	return nil
}

// lock serialises writers in this process (mu) and across processes
// sharing the file (flock): two gateways creating the same day key must
// not both write a fresh one.
func (k *keyFile) lock() (func(), error) {
	k.mu.Lock()
	if err := syscall.Flock(int(k.f.Fd()), syscall.LOCK_EX); err != nil {
		k.mu.Unlock()
		return nil, fmt.Errorf("store: lock key file: %w", err)
	}
	return func() {
		syscall.Flock(int(k.f.Fd()), syscall.LOCK_UN)
		k.mu.Unlock()
	}, nil
}

// read returns slot's bytes; past the end of the file a slot reads as zero.
func (k *keyFile) read(slot uint64) ([]byte, error) {
	buf := make([]byte, slotSize)
	n, err := k.f.ReadAt(buf, int64(slot)*slotSize)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("store: read key slot: %w", err)
	}
	clear(buf[n:])
	return buf, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// dayTag labels a security-log day key.
func dayTag(day uint64) [tagLen]byte {
	var t [tagLen]byte
	copy(t[:], "seclog-day")
	binary.BigEndian.PutUint64(t[8:], day)
	return t
}

// reserveSlot takes the next key slot from bucket's sequence in a
// transaction of its own, committed before any key is written. A record
// whose transaction later fails leaves a gap (or an orphan key sealing
// nothing), never a slot that a later record would collide with.
func (db *DB) reserveSlot(bucket []byte) (uint64, error) {
	var slot uint64
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		slot, err = tx.Bucket(bucket).NextSequence()
		return err
	})
	return slot, err
}
