package cache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	// bucketEntries maps a Key's 32 bytes to an encoded Entry.
	bucketEntries = []byte("entries")
	// bucketByObject indexes entries by output: its keys are the object
	// hash (64 hex bytes) followed by a Key's 32 bytes, its values empty,
	// so a prefix scan finds every key pointing at one object.
	bucketByObject = []byte("by-object")
)

// errCorrupt reports an L2 record that does not decode.
var errCorrupt = errors.New("cache: corrupt l2 record")

// l2 is this node's durable tier: a bbolt file of key → Entry.
//
// Hits read through one read-only transaction shared by every goroutine
// (a snapshot), not one transaction each: beginning and ending one costs
// five allocations, the database's meta lock and the freelist's reader
// bookkeeping, and a lookup of the entries bucket from the root, on every
// hit. bbolt's read-only transactions are only ever read (the cursor
// count is atomic), which is what etcd's backend relies on to share one
// among its readers too. The snapshot is safe because every write in this
// package goes through write, which closes it first and keeps readers
// from opening another until the write has returned:
//
//   - no reader ever sees a snapshot older than the last write that
//     returned (a new entry is never a miss, a deleted one never a hit);
//   - the snapshot never pins pages a later write frees, so the file does
//     not grow because of it;
//   - a write that must grow the memory map (which waits for every read
//     transaction to end) never waits for it.
//
// While a write is in flight, readers fall back to a transaction of their
// own.
type l2 struct {
	db *bolt.DB

	mu   sync.RWMutex // readers of snap hold it shared
	snap *l2Snapshot  // nil: none open
	shut bool         // closed: no snapshot may open

	writers atomic.Int32 // writes in flight: no snapshot may open
}

// l2Snapshot is the shared read-only transaction and cursors over its
// entries bucket, reused so that a seek allocates nothing.
type l2Snapshot struct {
	tx      *bolt.Tx
	entries *bolt.Bucket
	cursors sync.Pool // of *bolt.Cursor over entries
}

// readEntries calls fn with the entries bucket of the snapshot, opening
// one if none is, or of a transaction of its own while a write is in
// flight. A nil cursor means "use entries.Get".
func (s *l2) readEntries(fn func(entries *bolt.Bucket, cur *bolt.Cursor) error) error {
	for range 2 {
		if s.writers.Load() != 0 {
			break
		}
		s.mu.RLock()
		if snap := s.snap; snap != nil {
			cur, _ := snap.cursors.Get().(*bolt.Cursor)
			if cur == nil {
				cur = snap.entries.Cursor()
			}
			err := fn(snap.entries, cur)
			snap.cursors.Put(cur)
			s.mu.RUnlock()
			return err
		}
		s.mu.RUnlock()
		s.openSnapshot()
	}
	return s.db.View(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketEntries), nil) })
}

// openSnapshot opens the shared read transaction unless one is open, a
// write is in flight or the file is closed. Checking writers under mu
// orders it with write's close of the snapshot.
func (s *l2) openSnapshot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil || s.shut || s.writers.Load() != 0 {
		return
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return // the caller's own transaction will report it
	}
	s.snap = &l2Snapshot{tx: tx, entries: tx.Bucket(bucketEntries)}
}

// dropSnapshot closes the shared read transaction, waiting for the readers
// using it.
func (s *l2) dropSnapshot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil {
		s.snap.tx.Rollback()
		s.snap = nil
	}
}

// write runs a write to the file (an Update or a Batch): every write in
// this package goes through it (see l2).
func (s *l2) write(do func() error) error {
	s.writers.Add(1)
	defer s.writers.Add(-1)
	s.dropSnapshot()
	return do()
}

// update is db.Update through write.
func (s *l2) update(fn func(*bolt.Tx) error) error {
	return s.write(func() error { return s.db.Update(fn) })
}

// batch is db.Batch through write.
func (s *l2) batch(fn func(*bolt.Tx) error) error {
	return s.write(func() error { return s.db.Batch(fn) })
}

func openL2(path string) (*l2, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("cache: open l2 %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error { // before any snapshot: not through write
		for _, name := range [][]byte{bucketEntries, bucketByObject} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cache: init l2 %s: %w", path, err)
	}
	return &l2{db: db}, nil
}

// close closes the snapshot for good, then the file (whose Close waits for
// every read transaction).
func (s *l2) close() error {
	s.mu.Lock()
	s.shut = true
	s.mu.Unlock()
	s.dropSnapshot()
	return s.db.Close()
}

// get returns the entry stored under key. found is false, with a nil error,
// when there is none; a record that does not decode is an error wrapping
// errCorrupt.
func (s *l2) get(key Key) (e Entry, found bool, err error) {
	err = s.readEntries(func(entries *bolt.Bucket, cur *bolt.Cursor) error {
		var v []byte
		if cur != nil {
			var k []byte
			if k, v = cur.Seek(key[:]); !bytes.Equal(k, key[:]) {
				v = nil
			}
		} else {
			v = entries.Get(key[:])
		}
		if v == nil {
			return nil
		}
		found = true
		// decodeEntry copies every byte it keeps: v is only valid inside
		// the transaction.
		e, err = decodeEntry(v)
		return err
	})
	if err != nil {
		return Entry{}, false, err
	}
	return e, found, nil
}

// put stores e under key and keeps the by-object index in step, in one
// transaction. It is idempotent, as bolt's Batch requires.
func (s *l2) put(key Key, e Entry) error {
	rec := appendEntry(nil, e)
	return s.batch(func(tx *bolt.Tx) error {
		entries, index := tx.Bucket(bucketEntries), tx.Bucket(bucketByObject)
		if old := entries.Get(key[:]); old != nil {
			if prev, err := decodeEntry(old); err == nil && prev.Object != e.Object {
				if err := index.Delete(indexKey(prev.Object, key)); err != nil {
					return err
				}
			}
		}
		if err := entries.Put(key[:], rec); err != nil {
			return err
		}
		return index.Put(indexKey(e.Object, key), nil)
	})
}

// delete removes key's record and its index row.
func (s *l2) delete(key Key) error {
	return s.update(func(tx *bolt.Tx) error {
		entries := tx.Bucket(bucketEntries)
		old := entries.Get(key[:])
		if old == nil {
			return nil
		}
		if prev, err := decodeEntry(old); err == nil {
			if err := tx.Bucket(bucketByObject).Delete(indexKey(prev.Object, key)); err != nil {
				return err
			}
		}
		return entries.Delete(key[:])
	})
}

// deleteObject removes every record pointing at the object hash and returns
// their keys.
func (s *l2) deleteObject(hash string) ([]Key, error) {
	var keys []Key
	err := s.update(func(tx *bolt.Tx) error {
		keys = keys[:0] // Update does not retry, but keep the closure pure.
		entries, index := tx.Bucket(bucketEntries), tx.Bucket(bucketByObject)
		prefix := []byte(hash)
		var rows [][]byte
		c := index.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+len(Key{}) {
				continue
			}
			rows = append(rows, bytes.Clone(k))
		}
		for _, row := range rows {
			var key Key
			copy(key[:], row[len(prefix):])
			if err := index.Delete(row); err != nil {
				return err
			}
			// A row can outlive its record's link to the object (a record
			// overwritten while corrupt); delete the record only if it still
			// points here, or cannot be read at all.
			if rec := entries.Get(key[:]); rec != nil {
				if e, err := decodeEntry(rec); err != nil || e.Object == hash {
					if err := entries.Delete(key[:]); err != nil {
						return err
					}
					keys = append(keys, key)
				}
			}
		}
		return nil
	})
	return keys, err
}

// objectKeys returns the keys of the index rows naming hash.
func (s *l2) objectKeys(hash string) ([]Key, error) {
	var keys []Key
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(hash)
		c := tx.Bucket(bucketByObject).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) == len(prefix)+len(Key{}) {
				var key Key
				copy(key[:], k[len(prefix):])
				keys = append(keys, key)
			}
		}
		return nil
	})
	return keys, err
}

// objectModel returns the model of the first entry pointing at hash.
func (s *l2) objectModel(hash string) (model, version string, ok bool) {
	s.db.View(func(tx *bolt.Tx) error {
		prefix := []byte(hash)
		k, _ := tx.Bucket(bucketByObject).Cursor().Seek(prefix)
		if k == nil || !bytes.HasPrefix(k, prefix) || len(k) != len(prefix)+len(Key{}) {
			return nil
		}
		rec := tx.Bucket(bucketEntries).Get(k[len(prefix):])
		if e, err := decodeEntry(rec); err == nil && e.Object == hash {
			model, version, ok = e.Model, e.ModelVersion, true
		}
		return nil
	})
	return model, version, ok
}

func indexKey(hash string, key Key) []byte {
	b := make([]byte, 0, len(hash)+len(key))
	b = append(b, hash...)
	return append(b, key[:]...)
}

// recordVersion is the first byte of every L2 record. A record with another
// version is unreadable to this code and is served as a miss.
const recordVersion = 1

// appendEntry appends e's L2 encoding: the version byte, then the strings
// length-prefixed (uvarint) and the numbers as varints. The policy version
// comes last and only when set, so records written before it existed
// still decode (with policy 0, which every caller judges again).
func appendEntry(b []byte, e Entry) []byte {
	b = append(b, recordVersion)
	for _, s := range []string{e.Object, e.Ext, e.ContentType, e.Model, e.ModelVersion} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, int64(e.Width))
	b = binary.AppendVarint(b, int64(e.Height))
	b = binary.AppendUvarint(b, e.Seed)
	b = binary.AppendVarint(b, e.Size)
	var created int64
	if !e.Created.IsZero() {
		created = e.Created.UnixNano()
	}
	b = binary.AppendVarint(b, created)
	if e.Policy != 0 {
		b = binary.AppendUvarint(b, e.Policy)
	}
	return b
}

// decodeEntry is the inverse of appendEntry. It rejects anything that is
// not exactly one record, and copies what it keeps out of b.
func decodeEntry(b []byte) (Entry, error) {
	if len(b) == 0 || b[0] != recordVersion {
		return Entry{}, errCorrupt
	}
	b = b[1:]
	var strs [5]string
	for i := range strs {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return Entry{}, errCorrupt
		}
		if i == 0 {
			strs[i] = string(b[w : w+int(n)]) // the object hash: its own
		} else {
			strs[i] = intern(b[w : w+int(n)])
		}
		b = b[w+int(n):]
	}
	var ints [2]int64
	for i := range ints {
		v, w := binary.Varint(b)
		if w <= 0 || v < 0 || v > maxDimension {
			return Entry{}, errCorrupt
		}
		ints[i] = v
		b = b[w:]
	}
	seed, w := binary.Uvarint(b)
	if w <= 0 {
		return Entry{}, errCorrupt
	}
	b = b[w:]
	size, w := binary.Varint(b)
	if w <= 0 || size < 0 {
		return Entry{}, errCorrupt
	}
	b = b[w:]
	created, w := binary.Varint(b)
	if w <= 0 {
		return Entry{}, errCorrupt
	}
	b = b[w:]
	var policy uint64
	if len(b) > 0 {
		if policy, w = binary.Uvarint(b); w <= 0 || w != len(b) || policy == 0 {
			return Entry{}, errCorrupt
		}
	}
	e := Entry{
		Object: strs[0], Ext: strs[1], ContentType: strs[2], Model: strs[3], ModelVersion: strs[4],
		Width: int(ints[0]), Height: int(ints[1]), Seed: seed, Size: size, Policy: policy,
	}
	if created != 0 {
		e.Created = time.Unix(0, created).UTC()
	}
	if !validObjectName(e.Object, e.Ext) {
		return Entry{}, errCorrupt
	}
	return e, nil
}

// maxDimension bounds decoded widths and heights; anything larger is not an
// image this system made.
const maxDimension = 1 << 20

// interned holds the short strings records repeat (extensions, media
// types, models, versions), so decoding one allocates only its object
// hash. It is a fixed table of slots chosen by hash: a string whose slot
// another holds is allocated and takes the slot, which bounds the memory
// and never returns a wrong string.
var (
	interned    [256]atomic.Pointer[string]
	internSeed  = maphash.MakeSeed()
	maxInterned = 64 // longer strings are not interned
)

func intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxInterned {
		return string(b)
	}
	slot := &interned[maphash.Bytes(internSeed, b)%uint64(len(interned))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}
