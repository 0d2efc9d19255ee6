package cache

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"

	"github.com/dgraph-io/ristretto/v2"
)

// l1 is the memory tier: entries and output bytes in one ristretto cache,
// bounded by bytes. It is advisory: ristretto may drop or reject any Set,
// so nothing is ever only here.
//
// Items are keyed by a uint64 (so lookups do not allocate) and carry their
// full identity, which every read checks: two identities sharing a uint64
// cost a miss, never a wrong answer.
type l1 struct {
	c    *ristretto.Cache[uint64, *l1Item]
	seed maphash.Seed
}

// l1Item is either an entry (hash == "") or an output's bytes.
type l1Item struct {
	key   Key
	entry Entry

	hash, ext string
	data      []byte
}

// entryCost approximates an entry's memory beyond its strings.
const entryCost = 256

func newL1(maxBytes int64) (*l1, error) {
	// NumCounters should be about ten times the items the cache holds when
	// full; guess items from an average output of 16 KiB plus its entry.
	counters := min(max(10*(maxBytes/(16<<10))*2, 1000), 1<<24)
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *l1Item]{
		NumCounters: counters,
		MaxCost:     maxBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("cache: l1: %w", err)
	}
	return &l1{c: c, seed: maphash.MakeSeed()}, nil
}

func entryID(key Key) uint64 { return binary.LittleEndian.Uint64(key[:8]) }

func (m *l1) objectID(hash string) uint64 { return maphash.String(m.seed, hash) }

func (m *l1) entry(key Key) (Entry, bool) {
	it, ok := m.c.Get(entryID(key))
	if !ok || it.hash != "" || it.key != key {
		return Entry{}, false
	}
	return it.entry, true
}

func (m *l1) setEntry(key Key, e Entry) {
	cost := entryCost + int64(len(e.Object)+len(e.Ext)+len(e.ContentType)+len(e.Model)+len(e.ModelVersion))
	m.c.Set(entryID(key), &l1Item{key: key, entry: e}, cost)
}

// delEntry removes key's entry (and, rarely, another item sharing its
// uint64: a miss, never a wrong answer).
func (m *l1) delEntry(key Key) { m.c.Del(entryID(key)) }

// object returns an output's bytes. They are shared: callers must not
// modify them.
func (m *l1) object(hash, ext string) ([]byte, bool) {
	it, ok := m.c.Get(m.objectID(hash))
	if !ok || it.hash != hash || it.ext != ext {
		return nil, false
	}
	return it.data, true
}

// setObject keeps an output's bytes, and the model that made it when known
// (for the object's cache tags).
func (m *l1) setObject(hash, ext string, data []byte, model, version string) {
	m.c.Set(m.objectID(hash), &l1Item{hash: hash, ext: ext, data: data, entry: Entry{Model: model, ModelVersion: version}},
		int64(len(data)+len(hash)+len(ext)+len(model)+len(version)))
}

// objectModel returns the model recorded with an output's bytes.
func (m *l1) objectModel(hash string) (model, version string, ok bool) {
	it, found := m.c.Get(m.objectID(hash))
	if !found || it.hash != hash || it.entry.Model == "" {
		return "", "", false
	}
	return it.entry.Model, it.entry.ModelVersion, true
}

// dropObject removes an output's bytes and every entry pointing at it.
func (m *l1) dropObject(hash string) {
	m.c.Del(m.objectID(hash))
	var keys []Key
	m.c.IterValues(func(it *l1Item) bool {
		if it.hash == "" && it.entry.Object == hash {
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
