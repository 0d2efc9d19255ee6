package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// Reference owners that are not accounts, as in the bbolt store.
const (
	anonOwner    = "anon"
	holdOwner    = "hold"
	pendingOwner = "pending"
)

// touchEvery bounds the writes repeated requests cause.
const touchEvery = time.Hour

// maxObjectKeys bounds the content keys remembered per output.
const maxObjectKeys = 64

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newGenerationID orders an account's generations by creation, as the
// bbolt store's ids do.
func newGenerationID(now time.Time, seq uint64) string {
	var b [5]byte
	rand.Read(b[:])
	return fmt.Sprintf("gen_%016x%08x%s", now.UnixNano(), uint32(seq), idEncoding.EncodeToString(b[:]))
}

type genRow struct {
	g        store.Generation
	prompt   []byte
	negative []byte
}

const genCols = `record, last_access, expires, prompt_sealed, negative_sealed`

func scanGen(row pgx.Row) (genRow, error) {
	var r genRow
	var rec []byte
	var last, exp time.Time
	if err := row.Scan(&rec, &last, &exp, &r.prompt, &r.negative); err != nil {
		return r, notFound(err)
	}
	if err := json.Unmarshal(rec, &r.g); err != nil {
		return r, fmt.Errorf("postgres: decode generation: %w", err)
	}
	r.g.LastAccess, r.g.Expires = last.UTC(), exp.UTC()
	return r, nil
}

func putGen(ctx context.Context, tx pgx.Tx, accountID string, r genRow) error {
	g := r.g
	g.Prompt, g.NegativePrompt = "", ""
	rec, err := json.Marshal(g)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO generations (account_id, id, content_key, object, last_access, expires, record, prompt_sealed, negative_sealed)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (account_id, id) DO UPDATE SET object = excluded.object, last_access = excluded.last_access,
			expires = excluded.expires, record = excluded.record`,
		accountID, g.ID, g.ContentKey, g.Object, g.LastAccess, g.Expires, rec, r.prompt, r.negative)
	return err
}

// RecordGeneration adds g to the account's history, referencing its output
// and keeping it for retention after its last access. The same request
// again (same ContentKey) renews the existing record instead (at most
// hourly) and returns it, without its prompts, with created false.
func (db *DB) RecordGeneration(accountID string, g store.Generation, retention time.Duration) (store.Generation, bool, error) {
	if g.Object == "" || g.Ext == "" || g.ContentKey == "" {
		return store.Generation{}, false, errors.New("postgres: generation needs an object and a content key")
	}
	now := db.now().UTC()
	ctx, cancel := db.op()
	defer cancel()
	// Fast path, no write: recorded and renewed less than touchEvery ago.
	r, err := scanGen(db.pool.QueryRow(ctx, `SELECT `+genCols+` FROM generations WHERE account_id = $1 AND content_key = $2`, accountID, g.ContentKey))
	if err == nil && now.Sub(r.g.LastAccess) < touchEvery && r.g.Object == g.Object {
		var pending bool
		if err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM object_refs WHERE hash = $1 AND owner = $2 AND ref_id = $3)`,
			g.Object, pendingOwner, g.ContentKey).Scan(&pending); err != nil {
			return store.Generation{}, false, err
		}
		if !pending {
			return r.g, false, nil
		}
	}
	var out store.Generation
	var created bool
	for attempt := 0; ; attempt++ {
		err = db.inTx(func(ctx context.Context, tx pgx.Tx) error {
			out, created, err = db.recordGeneration(ctx, tx, now, accountID, g, retention)
			return err
		})
		// Two gateways recording the same new request race on the
		// (account, content key) key; the loser renews the winner's record.
		if !isUnique(err) || attempt == 2 {
			return out, created, err
		}
	}
}

func (db *DB) recordGeneration(ctx context.Context, tx pgx.Tx, now time.Time, accountID string, g store.Generation, retention time.Duration) (store.Generation, bool, error) {
	// FOR SHARE: an erasure starting (FOR UPDATE) waits for this record,
	// or this sees the account erasing.
	acct, err := getAccount(ctx, tx, accountID, "FOR SHARE")
	if err != nil {
		return store.Generation{}, false, err
	}
	if acct.Status == store.StatusErasing {
		return store.Generation{}, false, store.ErrAccountInactive
	}
	r, err := scanGen(tx.QueryRow(ctx, `SELECT `+genCols+` FROM generations WHERE account_id = $1 AND content_key = $2 FOR UPDATE`, accountID, g.ContentKey))
	if err == nil {
		out := r.g
		if r.g.Object != g.Object {
			// New bytes for the same request: the history follows them.
			if err := dropRef(ctx, tx, now, r.g.Object, accountID, r.g.ID); err != nil {
				return out, false, err
			}
			if err := addRef(ctx, tx, now, g.Object, g.Ext, g.Model, g.ModelVersion, g.ContentKey, accountID, r.g.ID, nil); err != nil {
				return out, false, err
			}
			r.g.Object, r.g.Ext, r.g.Width, r.g.Height = g.Object, g.Ext, g.Width, g.Height
			r.g.LastAccess = time.Time{}
		}
		if err := claimPending(ctx, tx, now, g.Object, g.ContentKey); err != nil {
			return out, false, err
		}
		if now.Sub(r.g.LastAccess) < touchEvery {
			return out, false, nil
		}
		r.g.LastAccess, r.g.Expires = now, now.Add(retention)
		return r.g, false, putGen(ctx, tx, accountID, r)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return store.Generation{}, false, err
	}
	key, err := db.keys.AccountKey(uint64(acct.Slot), acct.ID)
	if err != nil {
		return store.Generation{}, false, err
	}
	var seq int64
	if err := tx.QueryRow(ctx, `SELECT nextval('generation_seq')`).Scan(&seq); err != nil {
		return store.Generation{}, false, err
	}
	g.ID, g.Created, g.LastAccess, g.Expires = newGenerationID(now, uint64(seq)), now, now, now.Add(retention)
	r = genRow{g: g}
	if r.prompt, err = store.Seal(key, "prompt:"+accountID+":"+g.ID, []byte(g.Prompt)); err != nil {
		return store.Generation{}, false, err
	}
	if g.NegativePrompt != "" {
		if r.negative, err = store.Seal(key, "negative:"+accountID+":"+g.ID, []byte(g.NegativePrompt)); err != nil {
			return store.Generation{}, false, err
		}
	}
	if err := putGen(ctx, tx, accountID, r); err != nil {
		return store.Generation{}, false, err
	}
	if err := addRef(ctx, tx, now, g.Object, g.Ext, g.Model, g.ModelVersion, g.ContentKey, accountID, g.ID, nil); err != nil {
		return store.Generation{}, false, err
	}
	return g, true, claimPending(ctx, tx, now, g.Object, g.ContentKey)
}

// TouchAnonymousOutput keeps an output made or served for visitors without
// an account for retention after this access (renewed at most hourly).
func (db *DB) TouchAnonymousOutput(hash, ext, model, version, contentKey string, retention time.Duration) error {
	now := db.now().UTC()
	expires := now.Add(retention)
	ctx, cancel := db.op()
	defer cancel()
	var cur time.Time
	err := db.pool.QueryRow(ctx, `SELECT expires FROM object_refs WHERE hash = $1 AND owner = $2 AND ref_id = ''`, hash, anonOwner).Scan(&cur)
	if err == nil && cur.Sub(expires) > -touchEvery {
		return nil
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE object_refs SET expires = $3 WHERE hash = $1 AND owner = $2 AND ref_id = ''`, hash, anonOwner, expires)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if err := addRef(ctx, tx, now, hash, ext, model, version, contentKey, anonOwner, "", &expires); err != nil {
				return err
			}
		}
		return claimPending(ctx, tx, now, hash, contentKey)
	})
}

// HoldObject keeps an output until, under the hold holdID (a report id):
// neither erasure of its other owners nor their retention deletes it.
func (db *DB) HoldObject(hash, ext, model, version, holdID string, until time.Time) error {
	now := db.now().UTC()
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		return addRef(ctx, tx, now, hash, ext, model, version, "", holdOwner, holdID, &until)
	})
}

// PendingObject keeps a just-generated output until until, unless a real
// owner references it by then, which ends the pending reference.
func (db *DB) PendingObject(hash, ext, model, version, contentKey string, until time.Time) error {
	now := db.now().UTC()
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		// Bytes already gone from the object store may come back: the
		// caller holds them anew and stores them next.
		if _, err := tx.Exec(ctx, `UPDATE doomed_objects SET state = '' WHERE hash = $1 AND state = $2`, hash, store.DoomedDeleted); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE object_refs SET expires = $4 WHERE hash = $1 AND owner = $2 AND ref_id = $3`,
			hash, pendingOwner, contentKey, until)
		if err != nil || tag.RowsAffected() > 0 {
			return err
		}
		return addRef(ctx, tx, now, hash, ext, model, version, contentKey, pendingOwner, contentKey, &until)
	})
}

func claimPending(ctx context.Context, tx pgx.Tx, now time.Time, hash, contentKey string) error {
	return dropRef(ctx, tx, now, hash, pendingOwner, contentKey)
}

// addRef makes owner/id a reference of the output, reached through
// contentKey (if any). An output queued for deletion that is referenced
// again leaves the queue, keeping the keys it had gathered. The object's
// row is locked, so references added and dropped by several gateways at
// once keep an exact count.
func addRef(ctx context.Context, tx pgx.Tx, now time.Time, hash, ext, model, version, contentKey, owner, id string, expires *time.Time) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM object_refs WHERE hash = $1 AND owner = $2 AND ref_id = $3)`, hash, owner, id).Scan(&exists); err != nil || exists {
		return err
	}
	// A reaper's claim (ClaimDoomed) locks the queue row too: either it
	// sees this reference, or this sees its claim and is refused.
	var state string
	err := tx.QueryRow(ctx, `SELECT state FROM doomed_objects WHERE hash = $1 FOR UPDATE`, hash).Scan(&state)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if state != "" {
		return store.ErrOutputGone
	}
	tag, err := tx.Exec(ctx, `INSERT INTO object_refs (hash, owner, ref_id, expires) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		hash, owner, id, expires)
	if err != nil || tag.RowsAffected() == 0 {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO objects (hash, ext, model, model_version, created, refs) VALUES ($1, $2, $3, $4, $5, 0)
		ON CONFLICT (hash) DO NOTHING`, hash, ext, model, version, now); err != nil {
		return err
	}
	var refs int
	var keys []string
	if err := tx.QueryRow(ctx, `SELECT refs, keys FROM objects WHERE hash = $1 FOR UPDATE`, hash).Scan(&refs, &keys); err != nil {
		return err
	}
	addKey := func(k string) {
		if k != "" && !slices.Contains(keys, k) && len(keys) < maxObjectKeys {
			keys = append(keys, k)
		}
	}
	addKey(contentKey)
	var doomedKeys []string
	err = tx.QueryRow(ctx, `DELETE FROM doomed_objects WHERE hash = $1 RETURNING keys`, hash).Scan(&doomedKeys)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	for _, k := range doomedKeys {
		addKey(k)
	}
	if keys == nil {
		keys = []string{}
	}
	_, err = tx.Exec(ctx, `UPDATE objects SET refs = $2, keys = $3 WHERE hash = $1`, hash, refs+1, keys)
	return err
}

// dropRef removes owner/id's reference; the last one gone queues the
// output for deletion.
func dropRef(ctx context.Context, tx pgx.Tx, now time.Time, hash, owner, id string) error {
	tag, err := tx.Exec(ctx, `DELETE FROM object_refs WHERE hash = $1 AND owner = $2 AND ref_id = $3`, hash, owner, id)
	if err != nil || tag.RowsAffected() == 0 {
		return err
	}
	var refs int
	var ext string
	var keys []string
	if err := tx.QueryRow(ctx, `SELECT refs, ext, keys FROM objects WHERE hash = $1 FOR UPDATE`, hash).Scan(&refs, &ext, &keys); err != nil {
		return notFound(err)
	}
	if refs--; refs > 0 {
		_, err := tx.Exec(ctx, `UPDATE objects SET refs = $2 WHERE hash = $1`, hash, refs)
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM objects WHERE hash = $1`, hash); err != nil {
		return err
	}
	if keys == nil {
		keys = []string{}
	}
	_, err = tx.Exec(ctx, `INSERT INTO doomed_objects (hash, ext, since, keys) VALUES ($1, $2, $3, $4)
		ON CONFLICT (hash) DO UPDATE SET ext = excluded.ext, since = excluded.since, keys = excluded.keys`, hash, ext, now, keys)
	return err
}

// Generations calls fn for each of the account's generations, oldest
// first, decrypting prompts; it reads in pages of 500.
func (db *DB) Generations(accountID string, fn func(store.Generation) error) error {
	r, err := func() (accountRow, error) {
		ctx, cancel := db.op()
		defer cancel()
		return getAccount(ctx, db.pool, accountID, "")
	}()
	if err != nil {
		return err
	}
	after := ""
	for {
		// Each page has its own deadline: fn may take long (an export
		// streaming images), and the whole history may be large.
		ctx, cancel := db.op()
		rows, err := db.pool.Query(ctx, `SELECT id, `+genCols+` FROM generations WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT 500`, accountID, after)
		if err != nil {
			cancel()
			return err
		}
		batch, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (genRow, error) {
			var id string
			var rec []byte
			var last, exp time.Time
			var g genRow
			if err := row.Scan(&id, &rec, &last, &exp, &g.prompt, &g.negative); err != nil {
				return g, err
			}
			after = id
			if err := json.Unmarshal(rec, &g.g); err != nil {
				return g, err
			}
			g.g.LastAccess, g.g.Expires = last.UTC(), exp.UTC()
			return g, nil
		})
		cancel()
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		key, err := db.keys.AccountKey(uint64(r.Slot), accountID)
		if err != nil {
			return err
		}
		for _, gr := range batch {
			g, err := openGeneration(key, accountID, gr)
			if err != nil {
				return err
			}
			if err := fn(g); err != nil {
				return err
			}
		}
		if len(batch) < 500 {
			return nil
		}
	}
}

func openGeneration(key []byte, accountID string, r genRow) (store.Generation, error) {
	g := r.g
	p, err := store.Unseal(key, "prompt:"+accountID+":"+g.ID, r.prompt)
	if err != nil {
		return store.Generation{}, err
	}
	g.Prompt = string(p)
	if r.negative != nil {
		n, err := store.Unseal(key, "negative:"+accountID+":"+g.ID, r.negative)
		if err != nil {
			return store.Generation{}, err
		}
		g.NegativePrompt = string(n)
	}
	return g, nil
}

// GenerationCount returns how many generations the account has.
func (db *DB) GenerationCount(accountID string) int {
	ctx, cancel := db.op()
	defer cancel()
	var n int
	db.pool.QueryRow(ctx, `SELECT count(*) FROM generations WHERE account_id = $1`, accountID).Scan(&n)
	return n
}

// DeleteGeneration removes one generation of the account (and its
// prompt); its output goes only when nobody else references it.
func (db *DB) DeleteGeneration(accountID, genID string) error {
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		return deleteGeneration(ctx, tx, db.now().UTC(), accountID, genID, true)
	})
}

func deleteGeneration(ctx context.Context, tx pgx.Tx, now time.Time, accountID, genID string, mustExist bool) error {
	var object string
	err := tx.QueryRow(ctx, `DELETE FROM generations WHERE account_id = $1 AND id = $2 RETURNING object`, accountID, genID).Scan(&object)
	if errors.Is(notFound(err), store.ErrNotFound) {
		if mustExist {
			return store.ErrNotFound
		}
		return nil
	}
	if err != nil {
		return err
	}
	return dropRef(ctx, tx, now, object, accountID, genID)
}

// ExpireOutputs ends every reference whose retention has run out, at most
// batch per call, oldest first, and returns how many it ended. Due rows
// are taken FOR UPDATE SKIP LOCKED, so sweepers on several gateways split
// the work instead of queueing on it.
func (db *DB) ExpireOutputs(batch int) (int, error) {
	now := db.now().UTC()
	n := 0
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		n = 0
		type due struct {
			at              time.Time
			gen             bool
			owner, id, hash string
		}
		var all []due
		rows, err := tx.Query(ctx, `SELECT account_id, id, expires FROM generations WHERE expires < $1
			ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED`, now, batch)
		if err != nil {
			return err
		}
		for rows.Next() {
			d := due{gen: true}
			if err := rows.Scan(&d.owner, &d.id, &d.at); err != nil {
				rows.Close()
				return err
			}
			all = append(all, d)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT hash, owner, ref_id, expires FROM object_refs WHERE expires < $1
			ORDER BY expires LIMIT $2 FOR UPDATE SKIP LOCKED`, now, batch)
		if err != nil {
			return err
		}
		for rows.Next() {
			var d due
			if err := rows.Scan(&d.hash, &d.owner, &d.id, &d.at); err != nil {
				rows.Close()
				return err
			}
			all = append(all, d)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
		if len(all) > batch {
			all = all[:batch]
		}
		for _, d := range all {
			if d.gen {
				err = deleteGeneration(ctx, tx, now, d.owner, d.id, false)
			} else {
				err = dropRef(ctx, tx, now, d.hash, d.owner, d.id)
			}
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// ObjectOwners returns the accounts referencing an output (visitors
// without an account are not listed).
func (db *DB) ObjectOwners(hash string) ([]string, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT DISTINCT owner FROM object_refs WHERE hash = $1 AND owner NOT IN ($2, $3, $4) ORDER BY owner`,
		hash, anonOwner, holdOwner, pendingOwner)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ObjectReferenced reports whether anyone references an output. An error
// means "unknown": callers must not delete on it. Every gateway sees the
// same answer, so object GC is safe with any number of them.
func (db *DB) ObjectReferenced(hash string) (bool, error) {
	ctx, cancel := db.op()
	defer cancel()
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM objects WHERE hash = $1)`, hash).Scan(&ok)
	return ok, err
}

// DoomedObjects returns up to limit outputs waiting to be deleted whose
// hash sorts after after, in hash order.
func (db *DB) DoomedObjects(after string, limit int) ([]store.DoomedObject, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT hash, ext, since, keys, state FROM doomed_objects WHERE hash > $1 ORDER BY hash LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.DoomedObject, error) {
		var d store.DoomedObject
		err := row.Scan(&d.Hash, &d.Ext, &d.Since, &d.Keys, &d.State)
		d.Since = d.Since.UTC()
		if len(d.Keys) == 0 {
			d.Keys = nil
		}
		return d, err
	})
}

// ObjectDeleted takes an output off the deletion queue once it is gone
// from the object store, the caches and the CDN. An output regenerated
// meanwhile (no longer deleted) is left alone.
func (db *DB) ObjectDeleted(hash string) error {
	ctx, cancel := db.op()
	defer cancel()
	_, err := db.pool.Exec(ctx, `DELETE FROM doomed_objects WHERE hash = $1 AND state = $2`, hash, store.DoomedDeleted)
	return err
}

// ClaimDoomed is the reaper's last word before deleting an output: in one
// transaction it checks nobody references it and marks it deleting, after
// which every new reference, from any gateway, is refused with
// store.ErrOutputGone (the queue row is locked by both sides). A
// referenced output leaves the queue and the claim reports false.
func (db *DB) ClaimDoomed(hash string) (bool, error) {
	claimed := false
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		claimed = false
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM doomed_objects WHERE hash = $1 FOR UPDATE`, hash).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		var used bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM objects WHERE hash = $1)`, hash).Scan(&used); err != nil {
			return err
		}
		if used {
			_, err := tx.Exec(ctx, `DELETE FROM doomed_objects WHERE hash = $1`, hash)
			return err
		}
		if state == "" {
			if _, err := tx.Exec(ctx, `UPDATE doomed_objects SET state = $2 WHERE hash = $1`, hash, store.DoomedDeleting); err != nil {
				return err
			}
		}
		claimed = true
		return nil
	})
	return claimed, err
}

// DoomedGone records that a claimed output's bytes are gone from the
// object store: a regeneration (PendingObject) may bring it back now.
func (db *DB) DoomedGone(hash string) error {
	ctx, cancel := db.op()
	defer cancel()
	_, err := db.pool.Exec(ctx, `UPDATE doomed_objects SET state = $2 WHERE hash = $1`, hash, store.DoomedDeleted)
	return err
}

// ObjectKeys returns the content keys seen mapping to an output; none for
// an output the store does not know.
func (db *DB) ObjectKeys(hash string) ([]string, error) {
	ctx, cancel := db.op()
	defer cancel()
	var keys []string
	err := db.pool.QueryRow(ctx, `SELECT keys FROM objects WHERE hash = $1`, hash).Scan(&keys)
	if errors.Is(notFound(err), store.ErrNotFound) {
		return nil, nil
	}
	if len(keys) == 0 {
		keys = nil
	}
	return keys, err
}
