package cache

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
)

// l1 is the memory tier: entries and output bytes in one ristretto cache,
// bounded by bytes. It is advisory: ristretto may drop or reject any Set,
// so nothing is ever only here.
//
// Items are keyed by a uint64 (so lookups do not allocate) and carry their
// full identity, which every read checks: two identities sharing a uint64
// cost a miss, never a wrong answer.
//
// An entry's item is a value, not a pointer, and small enough (80 bytes)
// for Go's map to keep it inside ristretto's hash-table slot: a hit is one
// probe into the table, whose slot holds the whole key to check and every
// field of the Entry but its strings, instead of a probe and then a
// pointer to follow to a separate allocation. What an entry shares with
// many others (extension, media type, model, version, dimensions) is one
// interned *l1Meta, hot in the CPU caches; the object hash is the one
// string of its own (its bytes are read only by a caller that uses it).
// At a million entries that saves one dependent cache and TLB miss per
// hit; the price is copying the 80-byte value through ristretto's Get, a
// few tens of nanoseconds on a hit whose entry is in the CPU caches (see
// BenchmarkHitAtSize and the README).
type l1 struct {
	c    *ristretto.Cache[uint64, l1Item]
	seed maphash.Seed

	// metas interns entries' shared strings; bounded by maxMetas.
	metaMu sync.Mutex
	metas  map[l1MetaKey]*l1Meta
}

// l1Item is an entry (meta.output false) or an output's bytes (meta.output
// true). Its size is pinned below: ristretto's stored item (this plus 40
// bytes) must stay within the 128 bytes Go's map keeps inline.
//
// object is the data of a 64-byte hash string, kept as a pointer (which
// keeps the string alive) rather than a string header, to save the
// length: entries and outputs whose hash is not 64 bytes are not kept.
type l1Item struct {
	key    Key     // an entry's key; zero for an output
	object *byte   // the bytes of an entry's Object or an output's hash, always 64 long
	meta   *l1Meta // never nil in a stored item

	seed    uint64
	created int64 // Entry.Created in Unix nanoseconds; 0 for the zero time
	size    int64
	policy  uint64
}

// The compile fails here if l1Item grows past 80 bytes (the constant
// would be negative).
const _ = uint(80 - unsafe.Sizeof(l1Item{}))

// l1Meta holds what an item shares with many others: for an entry, its
// strings and dimensions, interned; for an output, its own strings and
// its bytes.
type l1Meta struct {
	ext, contentType, model, version string
	width, height                    int
	output                           bool
	data                             []byte // an output's bytes
}

type l1MetaKey struct {
	ext, contentType, model, version string
	width, height                    int
}

// maxMetas bounds the interned metas: distinct (extension, media type,
// model, version, width, height) tuples are few (a model makes a few
// sizes); past the bound each entry gets its own.
const maxMetas = 1024

// entryCost is what an entry is charged beyond its object hash: its slot
// in ristretto's store map (the 128-byte stored item plus the map's 8-byte
// key, at Go's worst-case load factor after a table grows, 7/16) and in
// the policy's cost map (16 bytes at the same factor), rounded up; its
// shared strings are not counted. TestL1CostCoversMemory checks it
// against the heap.
const entryCost = 352

func newL1(maxBytes int64) (*l1, error) {
	// NumCounters should be about ten times the items the cache holds when
	// full; guess items from an average output of 16 KiB plus its entry.
	counters := min(max(10*(maxBytes/(16<<10))*2, 1000), 1<<24)
	c, err := ristretto.NewCache(&ristretto.Config[uint64, l1Item]{
		NumCounters: counters,
		MaxCost:     maxBytes,
		BufferItems: 64,
		// Every cost is ours, computed in full (entryCost, objectCost).
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("cache: l1: %w", err)
	}
	return &l1{c: c, seed: maphash.MakeSeed(), metas: map[l1MetaKey]*l1Meta{}}, nil
}

func entryID(key Key) uint64 { return binary.LittleEndian.Uint64(key[:8]) }

func (m *l1) objectID(hash string) uint64 { return maphash.String(m.seed, hash) }

func (m *l1) entry(key Key) (Entry, bool) {
	it, ok := m.c.Get(entryID(key))
	if !ok || it.meta == nil || it.meta.output || it.key != key {
		return Entry{}, false
	}
	return it.entry(), true
}

// entry rebuilds the Entry an entry's item was made from.
func (it *l1Item) entry() Entry {
	md := it.meta
	e := Entry{
		Object: it.hash(), Ext: md.ext, ContentType: md.contentType,
		Width: md.width, Height: md.height, Seed: it.seed,
		Model: md.model, ModelVersion: md.version,
		Size: it.size, Policy: it.policy,
	}
	if it.created != 0 {
		e.Created = time.Unix(0, it.created).UTC()
	}
	return e
}

// hash returns the item's object hash (an entry's Object, an output's
// name). Storing only the string's data pointer (a hash is always 64
// bytes) keeps the item at 80 bytes, five 16-byte words: copied whole at
// every level of ristretto's Get without a partial overlap.
func (it *l1Item) hash() string { return unsafe.String(it.object, hashLen) }

// hashLen is the length of every object hash (lowercase hex SHA-256).
const hashLen = 64

// entryItem packs e, or reports that it does not fit the compact form (a
// creation time outside UnixNano's range or not in UTC, an object hash
// that is not 64 bytes): such an entry is not kept in L1 and is served
// from L2.
func (m *l1) entryItem(key Key, e Entry) (l1Item, bool) {
	if len(e.Object) != hashLen {
		return l1Item{}, false
	}
	var created int64
	if !e.Created.IsZero() {
		if e.Created.Location() != time.UTC || e.Created.Year() < 1678 || e.Created.Year() > 2261 {
			return l1Item{}, false
		}
		if created = e.Created.UnixNano(); created == 0 {
			return l1Item{}, false // would read back as the zero time
		}
	}
	return l1Item{
		key: key, object: unsafe.StringData(e.Object),
		meta: m.meta(l1MetaKey{e.Ext, e.ContentType, e.Model, e.ModelVersion, e.Width, e.Height}),
		seed: e.Seed, created: created, size: e.Size, policy: e.Policy,
	}, true
}

// meta returns an entry's interned shared part.
func (m *l1) meta(k l1MetaKey) *l1Meta {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	if md := m.metas[k]; md != nil {
		return md
	}
	md := &l1Meta{ext: k.ext, contentType: k.contentType, model: k.model, version: k.version, width: k.width, height: k.height}
	if len(m.metas) < maxMetas {
		m.metas[k] = md
	}
	return md
}

// setEntry offers e to the cache. It reports whether ristretto took the
// Set into its buffers (it may still reject it, and drops Sets when the
// buffers are full); false also when e does not fit the compact form.
func (m *l1) setEntry(key Key, e Entry) bool {
	it, ok := m.entryItem(key, e)
	return ok && m.c.Set(entryID(key), it, entryCost+int64(len(e.Object)))
}

// delEntry removes key's entry (and, rarely, another item sharing its
// uint64: a miss, never a wrong answer).
func (m *l1) delEntry(key Key) { m.c.Del(entryID(key)) }

// object returns an output's bytes. They are shared: callers must not
// modify them.
func (m *l1) object(hash, ext string) ([]byte, bool) {
	it, ok := m.c.Get(m.objectID(hash))
	if !ok || it.meta == nil || !it.meta.output || it.hash() != hash || it.meta.ext != ext {
		return nil, false
	}
	return it.meta.data, true
}

// objectCost is what an output's bytes are charged: the bytes, their
// strings, and the item, its meta and their map slots.
func objectCost(data []byte, hash, ext, model, version string) int64 {
	return int64(len(data)+len(hash)+len(ext)+len(model)+len(version)) + entryCost + int64(unsafe.Sizeof(l1Meta{}))
}

// setObject keeps an output's bytes, and the model that made it when known
// (for the object's cache tags).
func (m *l1) setObject(hash, ext string, data []byte, model, version string) {
	if len(hash) != hashLen {
		return
	}
	md := &l1Meta{ext: ext, model: model, version: version, output: true, data: data}
	m.c.Set(m.objectID(hash), l1Item{object: unsafe.StringData(hash), meta: md}, objectCost(data, hash, ext, model, version))
}

// objectModel returns the model recorded with an output's bytes.
func (m *l1) objectModel(hash string) (model, version string, ok bool) {
	it, found := m.c.Get(m.objectID(hash))
	if !found || it.meta == nil || !it.meta.output || it.hash() != hash || it.meta.model == "" {
		return "", "", false
	}
	return it.meta.model, it.meta.version, true
}

// dropObject removes an output's bytes and every entry pointing at it.
func (m *l1) dropObject(hash string) {
	m.c.Del(m.objectID(hash))
	var keys []Key
	m.c.IterValues(func(it l1Item) bool {
		if it.meta != nil && !it.meta.output && it.hash() == hash {
			keys = append(keys, it.key)
		}
		return false
	})
	for _, k := range keys {
		m.delEntry(k)
	}
}

// wait makes earlier Sets visible to Gets, so a Get right after a load is a
// hit (unless the policy rejected the item).
func (m *l1) wait() { m.c.Wait() }

func (m *l1) close() { m.c.Close() }
