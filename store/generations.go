package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Generation is one image an account asked for, as its history keeps it
// (promise C3: outputs are kept so they can be reopened, for the plan's
// period). Prompts are sealed with the account's key in the file.
type Generation struct {
	ID             string    `json:"id"`
	Created        time.Time `json:"created"`
	LastAccess     time.Time `json:"last_access"`
	Expires        time.Time `json:"expires"`
	Prompt         string    `json:"prompt"`
	NegativePrompt string    `json:"negative_prompt,omitempty"`
	Model          string    `json:"model"`
	ModelVersion   string    `json:"model_version"`
	Width          int       `json:"width"`
	Height         int       `json:"height"`
	Seed           uint64    `json:"seed"`
	Steps          int       `json:"steps"`
	Guidance       float32   `json:"guidance"`
	Style          string    `json:"style"`
	// Edit marks image-to-image; the reference itself is never kept
	// (promise C2), Strength is.
	Edit     bool    `json:"edit"`
	Strength float32 `json:"strength,omitempty"`
	Private  bool    `json:"private"`
	// Object and Ext name the output: "o/<Object>.<Ext>".
	Object string `json:"object"`
	Ext    string `json:"ext"`
	// ContentKey is the cache key the request mapped to.
	ContentKey string `json:"content_key"`
	// LatencyMS is how long the request waited for the image; Cached says
	// whether it came from a cache tier.
	LatencyMS int64 `json:"latency_ms"`
	Cached    bool  `json:"cached"`
}

// genRecord is a Generation as stored: the prompts sealed.
type genRecord struct {
	Generation
	Prompt         []byte `json:"prompt"`
	NegativePrompt []byte `json:"negative_prompt,omitempty"`
}

// objectRecord is an output and how many owners reference it.
type objectRecord struct {
	Ext          string    `json:"ext"`
	Refs         int       `json:"refs"`
	Model        string    `json:"model"`
	ModelVersion string    `json:"model_version"`
	Created      time.Time `json:"created"`
	// Keys are the content keys seen mapping to the output: their cache
	// manifests go with it.
	Keys []string `json:"keys,omitempty"`
}

// maxObjectKeys bounds the content keys remembered per output; a request
// mapping to an output has at most a handful (one per n-index and scope).
const maxObjectKeys = 64

// DoomedObject is an output nobody references any more: it must be
// deleted from the object store, every gateway's cache and the CDN.
type DoomedObject struct {
	Hash  string    `json:"hash"`
	Ext   string    `json:"ext"`
	Since time.Time `json:"since"`
	// Keys are content keys whose cache manifests point at the output.
	Keys []string `json:"keys,omitempty"`
	// State is where the deletion is: "" queued (nothing deleted yet),
	// DoomedDeleting (claimed by a reaper: the bytes may be going) or
	// DoomedDeleted (the bytes are gone from the object store).
	State string `json:"state,omitempty"`
}

// Deletion states of a DoomedObject (see ClaimDoomed).
const (
	DoomedDeleting = "deleting"
	DoomedDeleted  = "deleted"
)

// ErrOutputGone reports a reference to an output whose deletion has begun:
// nothing was recorded, and the caller must generate the output again
// (its bytes may be gone) rather than hand out a link to it.
var ErrOutputGone = errors.New("store: output being deleted")

// anonOwner owns the outputs of visitors without an account: one
// reference per output, living for the anonymous plan's retention.
const anonOwner = "anon"

// touchEvery bounds the writes repeated requests cause: an access renews
// an output's retention at most this often.
const touchEvery = time.Hour

// newGenerationID orders an account's generations by creation: the time,
// then a sequence for generations made within one clock tick, then random
// characters so ids reveal nothing about other accounts.
func newGenerationID(now time.Time, seq uint64) string {
	var b [5]byte
	rand.Read(b[:])
	return fmt.Sprintf("gen_%016x%08x%s", now.UnixNano(), uint32(seq), idEncoding.EncodeToString(b[:]))
}

func expiryKey(expires time.Time, owner, id string) []byte {
	return compositeKey(u64(uint64(expires.UnixNano())), []byte(owner), []byte(id))
}

func refKey(hash, owner, id string) []byte {
	return compositeKey([]byte(hash), []byte(owner), []byte(id))
}

// RecordGeneration adds g to the account's history, referencing its output
// and keeping it for retention after its last access. The same request
// again (same ContentKey) renews the existing record's access instead (at
// most hourly) and returns it with created false.
func (db *DB) RecordGeneration(accountID string, g Generation, retention time.Duration) (Generation, bool, error) {
	if g.Object == "" || g.Ext == "" || g.ContentKey == "" {
		return Generation{}, false, errors.New("store: generation needs an object and a content key")
	}
	now := db.now().UTC()
	idxKey := compositeKey([]byte(accountID), []byte(g.ContentKey))
	var out Generation
	// Fast path, without the writer lock: the same request was recorded
	// and renewed less than touchEvery ago.
	fresh := false
	db.bolt.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketGenerationKeys).Get(idxKey)
		if id == nil {
			return nil
		}
		var rec genRecord
		if getJSON(tx.Bucket(bucketGenerations), compositeKey([]byte(accountID), id), &rec) == nil &&
			now.Sub(rec.LastAccess) < touchEvery && rec.Object == g.Object &&
			tx.Bucket(bucketObjectRefs).Get(refKey(g.Object, pendingOwner, g.ContentKey)) == nil {
			out, fresh = rec.Generation, true
		}
		return nil
	})
	if fresh {
		return out, false, nil
	}
	created := false
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		acct, err := getAccount(tx, accountID)
		if err != nil {
			return err
		}
		if acct.Status == StatusErasing {
			return ErrAccountInactive
		}
		gens := tx.Bucket(bucketGenerations)
		if id := tx.Bucket(bucketGenerationKeys).Get(idxKey); id != nil {
			var rec genRecord
			key := compositeKey([]byte(accountID), id)
			if err := getJSON(gens, key, &rec); err != nil {
				return err
			}
			out = rec.Generation
			if rec.Object != g.Object {
				// The request made new bytes (a forced regeneration on a
				// non-deterministic backend): the history follows them, and
				// the old output loses this reference.
				if err := dropRef(tx, now, rec.Object, accountID, rec.ID); err != nil {
					return err
				}
				if err := addRef(tx, now, g.Object, g.Ext, g.Model, g.ModelVersion, g.ContentKey, accountID, rec.ID, nil); err != nil {
					return err
				}
				if err := claimPending(tx, now, g.Object, g.ContentKey); err != nil {
					return err
				}
				rec.Object, rec.Ext, rec.Width, rec.Height = g.Object, g.Ext, g.Width, g.Height
				rec.LastAccess = time.Time{} // renew below
			}
			if err := claimPending(tx, now, g.Object, g.ContentKey); err != nil {
				return err
			}
			if now.Sub(rec.LastAccess) < touchEvery {
				return nil
			}
			if err := tx.Bucket(bucketExpiry).Delete(expiryKey(rec.Expires, accountID, rec.ID)); err != nil {
				return err
			}
			rec.LastAccess, rec.Expires = now, now.Add(retention)
			if err := tx.Bucket(bucketExpiry).Put(expiryKey(rec.Expires, accountID, rec.ID), nil); err != nil {
				return err
			}
			out = rec.Generation
			return putJSON(gens, key, rec)
		}
		key, err := db.keys.get(acct.Slot, ownerTag(acct.ID))
		if err != nil {
			return err
		}
		seq, err := gens.NextSequence()
		if err != nil {
			return err
		}
		g.ID, g.Created, g.LastAccess, g.Expires = newGenerationID(now, seq), now, now, now.Add(retention)
		rec := genRecord{Generation: g}
		rec.Generation.Prompt, rec.Generation.NegativePrompt = "", ""
		if rec.Prompt, err = seal(key, "prompt:"+accountID+":"+g.ID, []byte(g.Prompt)); err != nil {
			return err
		}
		if g.NegativePrompt != "" {
			if rec.NegativePrompt, err = seal(key, "negative:"+accountID+":"+g.ID, []byte(g.NegativePrompt)); err != nil {
				return err
			}
		}
		if err := putJSON(gens, compositeKey([]byte(accountID), []byte(g.ID)), rec); err != nil {
			return err
		}
		if err := tx.Bucket(bucketGenerationKeys).Put(idxKey, []byte(g.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketExpiry).Put(expiryKey(g.Expires, accountID, g.ID), nil); err != nil {
			return err
		}
		out, created = g, true
		if err := addRef(tx, now, g.Object, g.Ext, g.Model, g.ModelVersion, g.ContentKey, accountID, g.ID, nil); err != nil {
			return err
		}
		return claimPending(tx, now, g.Object, g.ContentKey)
	})
	return out, created, err
}

// TouchAnonymousOutput keeps an output made or served for visitors without
// an account for retention after this access (renewed at most hourly).
func (db *DB) TouchAnonymousOutput(hash, ext, model, version, contentKey string, retention time.Duration) error {
	now := db.now().UTC()
	rk := refKey(hash, anonOwner, "")
	var fresh bool
	db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketObjectRefs).Get(rk); len(v) == 8 {
			expires := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			fresh = expires.Sub(now.Add(retention)) > -touchEvery
		}
		return nil
	})
	if fresh {
		return nil
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		refs := tx.Bucket(bucketObjectRefs)
		expires := now.Add(retention)
		if v := refs.Get(rk); len(v) == 8 {
			old := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			if err := tx.Bucket(bucketExpiry).Delete(expiryKey(old, anonOwner, hash)); err != nil {
				return err
			}
			if err := refs.Put(rk, u64(uint64(expires.UnixNano()))); err != nil {
				return err
			}
		} else if err := addRef(tx, now, hash, ext, model, version, contentKey, anonOwner, "", u64(uint64(expires.UnixNano()))); err != nil {
			return err
		}
		if err := claimPending(tx, now, hash, contentKey); err != nil {
			return err
		}
		return tx.Bucket(bucketExpiry).Put(expiryKey(expires, anonOwner, hash), nil)
	})
}

// holdOwner owns outputs kept under legal hold (reports of apparent CSAM):
// they survive every erasure and expiry until the hold ends.
const holdOwner = "hold"

// HoldObject keeps an output until, under the hold holdID (a report id):
// neither erasure of its other owners nor their retention deletes it.
// The hold is released by expiry like any other reference.
func (db *DB) HoldObject(hash, ext, model, version, holdID string, until time.Time) error {
	now := db.now().UTC()
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if err := addRef(tx, now, hash, ext, model, version, "", holdOwner, holdID, u64(uint64(until.UnixNano()))); err != nil {
			return err
		}
		return tx.Bucket(bucketExpiry).Put(expiryKey(until, holdOwner, holdID+"\x00"+hash), nil)
	})
}

// addRef makes owner/id a reference of the output, reached through
// contentKey (if any). An output queued for deletion that is referenced
// again leaves the queue.
func addRef(tx *bolt.Tx, now time.Time, hash, ext, model, version, contentKey, owner, id string, value []byte) error {
	refs := tx.Bucket(bucketObjectRefs)
	rk := refKey(hash, owner, id)
	if refs.Get(rk) != nil {
		return nil
	}
	if v := tx.Bucket(bucketDoomed).Get([]byte(hash)); v != nil {
		var d DoomedObject
		if err := decodeRecord(v, &d); err != nil {
			return err
		}
		if d.State != "" {
			// A reaper claimed it: the reference cannot win any more, so
			// the caller must regenerate (see ClaimDoomed).
			return ErrOutputGone
		}
	}
	if value == nil {
		value = []byte{1} // never empty: Get tells presence by non-nil
	}
	if err := refs.Put(rk, value); err != nil {
		return err
	}
	objects := tx.Bucket(bucketObjects)
	var obj objectRecord
	if err := getJSON(objects, []byte(hash), &obj); err != nil {
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		obj = objectRecord{Ext: ext, Model: model, ModelVersion: version, Created: now}
	}
	obj.Refs++
	if contentKey != "" && !slices.Contains(obj.Keys, contentKey) && len(obj.Keys) < maxObjectKeys {
		obj.Keys = append(obj.Keys, contentKey)
	}
	doomed := tx.Bucket(bucketDoomed)
	var d DoomedObject
	if err := getJSON(doomed, []byte(hash), &d); err == nil {
		// Back from the deletion queue: keep the keys it had gathered.
		for _, k := range d.Keys {
			if !slices.Contains(obj.Keys, k) && len(obj.Keys) < maxObjectKeys {
				obj.Keys = append(obj.Keys, k)
			}
		}
		if err := doomed.Delete([]byte(hash)); err != nil {
			return err
		}
	}
	return putJSON(objects, []byte(hash), obj)
}

// dropRef removes owner/id's reference; the last one gone queues the
// output for deletion.
func dropRef(tx *bolt.Tx, now time.Time, hash, owner, id string) error {
	refs := tx.Bucket(bucketObjectRefs)
	rk := refKey(hash, owner, id)
	if refs.Get(rk) == nil {
		return nil
	}
	if err := refs.Delete(rk); err != nil {
		return err
	}
	objects := tx.Bucket(bucketObjects)
	var obj objectRecord
	if err := getJSON(objects, []byte(hash), &obj); err != nil {
		return err
	}
	if obj.Refs--; obj.Refs > 0 {
		return putJSON(objects, []byte(hash), obj)
	}
	if err := objects.Delete([]byte(hash)); err != nil {
		return err
	}
	return putJSON(tx.Bucket(bucketDoomed), []byte(hash), DoomedObject{Hash: hash, Ext: obj.Ext, Since: now, Keys: obj.Keys})
}

// Generations calls fn for each of the account's generations, oldest
// first, decrypting prompts. It reads in batches, each in its own short
// transaction, so a history of any length never pins the file.
func (db *DB) Generations(accountID string, fn func(Generation) error) error {
	prefix := compositeKey([]byte(accountID), nil)
	var after []byte
	for {
		var batch []genRecord
		err := db.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketGenerations).Cursor()
			k, v := c.Seek(prefix)
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && bytes.HasPrefix(k, prefix) && len(batch) < 500; k, v = c.Next() {
				var rec genRecord
				if err := decodeRecord(v, &rec); err != nil {
					return err
				}
				batch = append(batch, rec)
				after = append(after[:0], k...)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		key, err := db.accountKey(accountID)
		if err != nil {
			return err
		}
		for _, rec := range batch {
			g, err := openGeneration(key, accountID, rec)
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

// accountKey returns the key of an account.
func (db *DB) accountKey(accountID string) ([]byte, error) {
	var slot uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		rec, err := getAccount(tx, accountID)
		slot = rec.Slot
		return err
	})
	if err != nil {
		return nil, err
	}
	return db.keys.get(slot, ownerTag(accountID))
}

func openGeneration(key []byte, accountID string, rec genRecord) (Generation, error) {
	g := rec.Generation
	p, err := unseal(key, "prompt:"+accountID+":"+g.ID, rec.Prompt)
	if err != nil {
		return Generation{}, err
	}
	g.Prompt = string(p)
	if rec.NegativePrompt != nil {
		n, err := unseal(key, "negative:"+accountID+":"+g.ID, rec.NegativePrompt)
		if err != nil {
			return Generation{}, err
		}
		g.NegativePrompt = string(n)
	}
	return g, nil
}

// GenerationCount returns how many generations the account has.
func (db *DB) GenerationCount(accountID string) int {
	n := 0
	db.bolt.View(func(tx *bolt.Tx) error {
		n = len(prefixKeys(tx.Bucket(bucketGenerations), compositeKey([]byte(accountID), nil)))
		return nil
	})
	return n
}

// DeleteGeneration removes one generation of the account (and its prompt).
// Its output goes only when nobody else references it.
func (db *DB) DeleteGeneration(accountID, genID string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return deleteGeneration(tx, db.now().UTC(), accountID, genID, true)
	})
}

func deleteGeneration(tx *bolt.Tx, now time.Time, accountID, genID string, mustExist bool) error {
	gens := tx.Bucket(bucketGenerations)
	key := compositeKey([]byte(accountID), []byte(genID))
	var rec genRecord
	if err := getJSON(gens, key, &rec); err != nil {
		if errors.Is(err, ErrNotFound) && !mustExist {
			return nil
		}
		return err
	}
	if err := gens.Delete(key); err != nil {
		return err
	}
	if err := tx.Bucket(bucketGenerationKeys).Delete(compositeKey([]byte(accountID), []byte(rec.ContentKey))); err != nil {
		return err
	}
	if err := tx.Bucket(bucketExpiry).Delete(expiryKey(rec.Expires, accountID, genID)); err != nil {
		return err
	}
	return dropRef(tx, now, rec.Object, accountID, genID)
}

// ExpireOutputs ends every reference whose retention has run out (account
// generations and anonymous outputs alike), at most batch per call, and
// returns how many it ended. Outputs left without references are queued
// for deletion.
func (db *DB) ExpireOutputs(batch int) (int, error) {
	now := db.now().UTC()
	end := u64(uint64(now.UnixNano()))
	n := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketExpiry).Cursor()
		var due [][]byte
		for k, _ := c.First(); k != nil && bytes.Compare(k[:8], end) < 0 && len(due) < batch; k, _ = c.Next() {
			due = append(due, append([]byte(nil), k...))
		}
		for _, k := range due {
			parts := bytes.SplitN(k[9:], []byte{0}, 2)
			if len(parts) != 2 {
				return fmt.Errorf("store: bad expiry key")
			}
			owner, id := string(parts[0]), string(parts[1])
			if err := tx.Bucket(bucketExpiry).Delete(k); err != nil {
				return err
			}
			if owner == holdOwner || owner == pendingOwner {
				refID, hash, _ := strings.Cut(id, "\x00")
				if err := dropRef(tx, now, hash, owner, refID); err != nil {
					return err
				}
			} else if owner == anonOwner {
				if err := dropRef(tx, now, id, anonOwner, ""); err != nil {
					return err
				}
			} else if err := deleteGeneration(tx, now, owner, id, false); err != nil {
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
	var owners []string
	err := db.bolt.View(func(tx *bolt.Tx) error {
		prefix := compositeKey([]byte(hash), nil)
		seen := map[string]bool{}
		for _, k := range prefixKeys(tx.Bucket(bucketObjectRefs), prefix) {
			owner, _, _ := bytes.Cut(k[len(prefix):], []byte{0})
			if o := string(owner); o != anonOwner && o != holdOwner && o != pendingOwner && !seen[o] {
				seen[o] = true
				owners = append(owners, o)
			}
		}
		return nil
	})
	return owners, err
}

// ObjectKeys returns the content keys seen mapping to an output (at most
// maxObjectKeys), whose cache manifests must go when the output does; none
// for an output the store does not know.
func (db *DB) ObjectKeys(hash string) ([]string, error) {
	var obj objectRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketObjects), []byte(hash), &obj)
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return obj.Keys, err
}

// ObjectReferenced reports whether anyone references an output. An error
// means "unknown": callers must not delete on it.
func (db *DB) ObjectReferenced(hash string) (bool, error) {
	found := false
	err := db.bolt.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketObjects).Get([]byte(hash)) != nil
		return nil
	})
	return found, err
}

// DoomedObjects returns up to limit outputs waiting to be deleted whose
// hash sorts after after ("" for the first page), in hash order: callers
// page through the whole queue, so outputs that keep failing never hold
// up the rest.
func (db *DB) DoomedObjects(after string, limit int) ([]DoomedObject, error) {
	var out []DoomedObject
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDoomed).Cursor()
		k, v := c.First()
		if after != "" {
			if k, v = c.Seek([]byte(after)); k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			var d DoomedObject
			if err := decodeRecord(v, &d); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// pendingOwner holds an output from the moment it is generated until the
// request that made it records its owner: a request that gives up, fails
// or belongs to an account being erased leaves an output that expires
// with this reference instead of one kept forever.
const pendingOwner = "pending"

// PendingObject keeps a just-generated output until until, unless a real
// owner references it by then (RecordGeneration, TouchAnonymousOutput),
// which ends the pending reference.
func (db *DB) PendingObject(hash, ext, model, version, contentKey string, until time.Time) error {
	now := db.now().UTC()
	id := contentKey + "\x00" + hash
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if err := reviveGone(tx, hash); err != nil {
			return err
		}
		rk := refKey(hash, pendingOwner, contentKey)
		if v := tx.Bucket(bucketObjectRefs).Get(rk); len(v) == 8 {
			old := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			if err := tx.Bucket(bucketExpiry).Delete(expiryKey(old, pendingOwner, id)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketObjectRefs).Put(rk, u64(uint64(until.UnixNano()))); err != nil {
				return err
			}
		} else if err := addRef(tx, now, hash, ext, model, version, contentKey, pendingOwner, contentKey, u64(uint64(until.UnixNano()))); err != nil {
			return err
		}
		return tx.Bucket(bucketExpiry).Put(expiryKey(until, pendingOwner, id), nil)
	})
}

// reviveGone lets hash be referenced again if its bytes are already gone
// (DoomedDeleted): the caller holds them anew and stores them next.
func reviveGone(tx *bolt.Tx, hash string) error {
	doomed := tx.Bucket(bucketDoomed)
	v := doomed.Get([]byte(hash))
	if v == nil {
		return nil
	}
	var d DoomedObject
	if err := decodeRecord(v, &d); err != nil {
		return err
	}
	if d.State != DoomedDeleted {
		return nil
	}
	d.State = "" // back to queued: addRef revives it, keeping its keys
	return putJSON(doomed, []byte(hash), d)
}

// claimPending ends the pending reference of hash reached through
// contentKey, now that its owner is recorded.
func claimPending(tx *bolt.Tx, now time.Time, hash, contentKey string) error {
	rk := refKey(hash, pendingOwner, contentKey)
	v := tx.Bucket(bucketObjectRefs).Get(rk)
	if len(v) != 8 {
		return nil
	}
	until := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	if err := tx.Bucket(bucketExpiry).Delete(expiryKey(until, pendingOwner, contentKey+"\x00"+hash)); err != nil {
		return err
	}
	return dropRef(tx, now, hash, pendingOwner, contentKey)
}

// ClaimDoomed is the reaper's last word before deleting an output: in one
// transaction it checks that nobody references the output and marks it
// DoomedDeleting, after which every new reference is refused with
// ErrOutputGone. So a reference made at the same moment either commits
// first (the claim sees it, reports false and takes the output off the
// queue: the reference wins) or is refused (its request regenerates).
func (db *DB) ClaimDoomed(hash string) (bool, error) {
	claimed := false
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		doomed := tx.Bucket(bucketDoomed)
		if tx.Bucket(bucketObjects).Get([]byte(hash)) != nil {
			return doomed.Delete([]byte(hash)) // referenced again: it stays
		}
		var d DoomedObject
		if err := getJSON(doomed, []byte(hash), &d); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		}
		if d.State == "" {
			d.State = DoomedDeleting
			if err := putJSON(doomed, []byte(hash), d); err != nil {
				return err
			}
		}
		claimed = true
		return nil
	})
	return claimed, err
}

// DoomedGone records that a claimed output's bytes are gone from the
// object store. From then on a regeneration (PendingObject) may bring the
// output back: its bytes are in hand and stored after it. Plain
// references stay refused until it is back.
func (db *DB) DoomedGone(hash string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		doomed := tx.Bucket(bucketDoomed)
		var d DoomedObject
		if err := getJSON(doomed, []byte(hash), &d); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		}
		d.State = DoomedDeleted
		return putJSON(doomed, []byte(hash), d)
	})
}

// ObjectDeleted takes an output off the deletion queue once it is gone
// from the object store, the caches and the CDN. An output regenerated in
// the meantime (no longer DoomedDeleted) is left alone.
func (db *DB) ObjectDeleted(hash string) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		doomed := tx.Bucket(bucketDoomed)
		var d DoomedObject
		if err := getJSON(doomed, []byte(hash), &d); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		}
		if d.State != DoomedDeleted {
			return nil
		}
		return doomed.Delete([]byte(hash))
	})
}
