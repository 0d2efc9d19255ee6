package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// EachRaw calls fn with every record of the store as stored — bucket
// name, key and value bytes (JSON with personal fields still sealed) —
// and each bucket's sequence, in one read transaction. It exists for
// moving a deployment to another implementation of the store (imagegate
// store copy); the encodings are this package's and change only with
// schemaVersion. The bytes passed to fn are copies.
func (db *DB) EachRaw(fn func(bucket string, k, v []byte) error, seq func(bucket string, n uint64)) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			b := tx.Bucket(name)
			seq(string(name), b.Sequence())
			if err := b.ForEach(func(k, v []byte) error {
				return fn(string(name), bytes.Clone(k), bytes.Clone(v))
			}); err != nil {
				return err
			}
		}
		return nil
	})
}
