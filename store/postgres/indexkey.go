package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/store"
)

// The meta rows naming the key-file slot of the current lookup-index key
// and of one a rotation replaced but has yet to destroy. Names and
// encoding (8 bytes, big-endian) are the bbolt store's, so a copy carries
// them over as they are.
const (
	metaIndexSlot    = "index_key_slot"
	metaIndexRetired = "index_key_retired"
)

// rotateFetches is how many account keys a rotation fetches at once.
const rotateFetches = 16

// indexKey is the lookup-index key this gateway last used, and its slot.
type indexKey struct {
	slot uint64
	key  []byte
}

func slotBytes(slot uint64) []byte { return binary.BigEndian.AppendUint64(nil, slot) }

// readIndexSlot reads the current lookup-index slot; lock is "" or a
// locking clause. Writers of index entries lock the row FOR SHARE and a
// rotation FOR UPDATE, so no entry is written under a key being replaced.
func readIndexSlot(ctx context.Context, q querier, lock string) (uint64, error) {
	var v []byte
	err := q.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1 `+lock, metaIndexSlot).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: read the lookup-index slot: %w", err)
	}
	if len(v) != 8 {
		return 0, errors.New("postgres: bad lookup-index slot in meta")
	}
	return binary.BigEndian.Uint64(v), nil
}

// indexKeyIn returns the current lookup-index key as q sees it, loading it
// from the key file when another gateway has rotated it.
func (db *DB) indexKeyIn(ctx context.Context, q querier, lock string) ([]byte, error) {
	slot, err := readIndexSlot(ctx, q, lock)
	if err != nil {
		return nil, err
	}
	if cur := db.index.Load(); cur != nil && cur.slot == slot {
		return cur.key, nil
	}
	key, err := db.keys.IndexKeyAt(slot)
	if err != nil {
		return nil, fmt.Errorf("postgres: lookup-index key in slot %d: %w", slot, err)
	}
	db.index.Store(&indexKey{slot: slot, key: key})
	return key, nil
}

// lookupKeyIn is the index entry of an email or Google subject under the
// current key, read (and locked: lock) in q.
func (db *DB) lookupKeyIn(ctx context.Context, q querier, lock, kind, value string) ([]byte, error) {
	key, err := db.indexKeyIn(ctx, q, lock)
	if err != nil {
		return nil, err
	}
	return store.LookupKey(key, kind, value), nil
}

// cachedLookupKey is the index entry under the key this gateway last
// used. A hit under it is right (a rotation leaves no entry under an old
// key); a miss must be checked with lookupKeyIn.
func (db *DB) cachedLookupKey(kind, value string) (uint64, []byte) {
	cur := db.index.Load()
	return cur.slot, store.LookupKey(cur.key, kind, value)
}

// openIndexKey loads the current lookup-index key and checks it against
// the fingerprint the database remembers: key files from another
// deployment would silently lose every account's lookup. A key a
// rotation replaced but did not get to destroy is destroyed now.
func (db *DB) openIndexKey(ctx context.Context, where string) error {
	slot, err := readIndexSlot(ctx, db.pool, "")
	if err != nil {
		return err
	}
	var key []byte
	if slot == 0 {
		key, err = db.keys.IndexKey()
	} else {
		key, err = db.keys.IndexKeyAt(slot)
	}
	if err != nil {
		return fmt.Errorf("postgres: lookup-index key: %w", err)
	}
	fp := store.IndexFingerprint(key)
	if _, err := db.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('index_key_fingerprint', $1), ($2, $3) ON CONFLICT (key) DO NOTHING`,
		fp, metaIndexSlot, slotBytes(slot)); err != nil {
		return fmt.Errorf("postgres: store index fingerprint: %w", err)
	}
	var want []byte
	if err := db.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'index_key_fingerprint'`).Scan(&want); err != nil {
		return fmt.Errorf("postgres: read index fingerprint: %w", err)
	}
	if !bytes.Equal(want, fp) {
		return fmt.Errorf("postgres: %s belongs to another database; restore the matching one", where)
	}
	db.index.Store(&indexKey{slot: slot, key: key})
	var retired []byte
	err = db.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = $1`, metaIndexRetired).Scan(&retired)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	case len(retired) != 8:
		return errors.New("postgres: bad retired lookup-index slot in meta")
	}
	return db.destroyRetiredIndexKey(ctx, binary.BigEndian.Uint64(retired))
}

// RotateIndexKey re-keys the lookup indexes (emails and Google subjects)
// under a fresh key and destroys the old one, as the bbolt store does
// after every erasure: an erased account's index entry may survive in old
// WAL segments, replicas or backups, and with the key that made it anyone
// holding both could test an address against it; once that key is
// destroyed the leftovers match nothing. It reads and rewrites every
// account in one transaction holding the slot row FOR UPDATE, so gateways
// writing index entries wait for it and then use the new key. A crash
// leaves either the old index and key, or the new ones with the old key
// destroyed at the next Open.
func (db *DB) RotateIndexKey() error {
	ctx, cancel := db.op()
	defer cancel()
	var slot int64
	if err := db.pool.QueryRow(ctx, `SELECT nextval('account_key_slots')`).Scan(&slot); err != nil {
		return fmt.Errorf("postgres: key slot: %w", err)
	}
	key, err := db.keys.CreateIndexKey(uint64(slot))
	if err != nil {
		return err
	}
	var old uint64
	err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		if old, err = readIndexSlot(ctx, tx, "FOR UPDATE"); err != nil {
			return err
		}
		type account struct {
			id                  string
			slot                int64
			email, googleSealed []byte
		}
		rows, err := tx.Query(ctx, `SELECT id, slot, email_sealed, google_sealed FROM accounts ORDER BY id FOR UPDATE`)
		if err != nil {
			return err
		}
		accounts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (account, error) {
			var a account
			err := r.Scan(&a.id, &a.slot, &a.email, &a.googleSealed)
			return a, err
		})
		if err != nil {
			return err
		}
		// With a key service each key is a round trip: fetch them a few
		// at a time, so the transaction (which holds every account row)
		// takes a fraction of the sum of the round trips.
		keys := make([][]byte, len(accounts))
		var g errgroup.Group
		g.SetLimit(rotateFetches)
		for i, a := range accounts {
			g.Go(func() error {
				k, err := db.keys.AccountKey(uint64(a.slot), a.id)
				if err != nil {
					return fmt.Errorf("postgres: rotate index: account %s: %w", a.id, err)
				}
				keys[i] = k
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		for i, a := range accounts {
			acctKey := keys[i]
			email, err := store.Unseal(acctKey, "email:"+a.id, a.email)
			if err != nil {
				return fmt.Errorf("postgres: rotate index: account %s: %w", a.id, err)
			}
			var google []byte
			if a.googleSealed != nil {
				subject, err := store.Unseal(acctKey, "google:"+a.id, a.googleSealed)
				if err != nil {
					return fmt.Errorf("postgres: rotate index: account %s: %w", a.id, err)
				}
				google = store.LookupKey(key, "google", string(subject))
			}
			if _, err := tx.Exec(ctx, `UPDATE accounts SET email_index = $2, google_index = $3 WHERE id = $1`,
				a.id, store.LookupKey(key, "email", string(email)), google); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('index_key_fingerprint', $1), ($2, $3), ($4, $5)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
			store.IndexFingerprint(key), metaIndexSlot, slotBytes(uint64(slot)), metaIndexRetired, slotBytes(old))
		return err
	})
	if err != nil {
		return errors.Join(err, db.keys.DestroyIndexKey(uint64(slot)))
	}
	db.index.Store(&indexKey{slot: uint64(slot), key: key})
	return db.destroyRetiredIndexKey(ctx, old)
}

// destroyRetiredIndexKey destroys the lookup-index key a rotation
// replaced, then forgets that it has to.
func (db *DB) destroyRetiredIndexKey(ctx context.Context, slot uint64) error {
	if err := db.keys.DestroyIndexKey(slot); err != nil {
		return err
	}
	_, err := db.pool.Exec(ctx, `DELETE FROM meta WHERE key = $1 AND value = $2`, metaIndexRetired, slotBytes(slot))
	return err
}
