package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotFound reports a missing record.
var ErrNotFound = errors.New("store: not found")

// schemaVersion is bumped when a bucket's encoding changes incompatibly.
const schemaVersion = 1

var (
	bucketMeta = []byte("meta")
	keySchema  = []byte("schema")
	keyModels  = []byte("models")
)

// DB is the embedded store. It is safe for concurrent use.
type DB struct {
	bolt *bolt.DB
}

// Open opens (creating if needed) the store file at path. It fails after one
// second if another process holds the file.
func Open(path string) (*DB, error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{bolt: b}
	if err := db.migrate(); err != nil {
		b.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) migrate() error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("store: create meta bucket: %w", err)
		}
		if v := meta.Get(keySchema); v != nil {
			var got int
			if err := json.Unmarshal(v, &got); err != nil {
				return fmt.Errorf("store: read schema version: %w", err)
			}
			if got > schemaVersion {
				return fmt.Errorf("store: file has schema %d, this binary knows %d: refusing to downgrade", got, schemaVersion)
			}
		}
		v, _ := json.Marshal(schemaVersion)
		return meta.Put(keySchema, v)
	})
}

// Close releases the file.
func (db *DB) Close() error { return db.bolt.Close() }
