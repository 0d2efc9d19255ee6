package cache

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// InvalidateWhere removes from this node's tiers every entry match selects,
// and from L1 the bytes of every output such an entry points at. It scans
// all of L2, so it is for operator purges (by model version, by object
// prefix), not for the request path. It returns how many L2 entries went.
func (c *Cache) InvalidateWhere(match func(Entry) bool) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return 0, ErrClosed
	}
	objects := map[string]bool{}
	n, err := c.l2.deleteWhere(func(e Entry) bool {
		if match(e) {
			objects[e.Object] = true
			return true
		}
		return false
	})
	c.l1.dropWhere(func(e Entry) bool {
		if match(e) {
			objects[e.Object] = true
			return true
		}
		return false
	})
	for h := range objects {
		c.l1.dropObject(h)
	}
	if err != nil {
		return n, fmt.Errorf("cache: invalidate: %w", err)
	}
	return n, nil
}

// InvalidateAll empties this node's tiers (L1 and L2). The object store,
// shared by every node, is untouched.
func (c *Cache) InvalidateAll() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return ErrClosed
	}
	c.l1.c.Clear()
	if err := c.l2.clear(); err != nil {
		return fmt.Errorf("cache: invalidate all: %w", err)
	}
	return nil
}

// deleteWhere deletes the records match selects, with their index rows,
// in batches so the write lock is never held long.
func (s *l2) deleteWhere(match func(Entry) bool) (int, error) {
	total := 0
	var after []byte
	for {
		var doomed []Key
		var objects []string
		done := true
		err := s.db.View(func(tx *bolt.Tx) error {
			cur := tx.Bucket(bucketEntries).Cursor()
			k, v := cur.First()
			if after != nil {
				k, v = cur.Seek(after)
			}
			for ; k != nil; k, v = cur.Next() {
				if len(doomed) == 1000 {
					after, done = append([]byte(nil), k...), false
					return nil
				}
				e, err := decodeEntry(v)
				if err != nil || !match(e) {
					continue
				}
				var key Key
				copy(key[:], k)
				doomed, objects = append(doomed, key), append(objects, e.Object)
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		err = s.update(func(tx *bolt.Tx) error {
			for i, key := range doomed {
				if err := tx.Bucket(bucketByObject).Delete(indexKey(objects[i], key)); err != nil {
					return err
				}
				if err := tx.Bucket(bucketEntries).Delete(key[:]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += len(doomed)
		if done {
			return total, nil
		}
	}
}

// clear empties both buckets.
func (s *l2) clear() error {
	return s.update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketByObject} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropWhere removes the entries match selects.
func (m *l1) dropWhere(match func(Entry) bool) {
	var keys []Key
	m.c.IterValues(func(it l1Item) bool {
		if it.meta != nil && !it.meta.output && match(it.entry()) {
			keys = append(keys, it.key)
		}
		return false
	})
	for _, k := range keys {
		m.delEntry(k)
	}
}
