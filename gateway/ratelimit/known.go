package ratelimit

import "time"

// knownKeys remembers keys until a time each: the credentials that
// validated (CredentialGuard) and the sources that signed in to an
// account (LoginGuard). It is bounded like every keyedStore, and an entry
// is idle, so forgotten first, once its time has passed.
type knownKeys struct {
	*keyedStore[int64] // UnixNano until which a key is known
}

func newKnownKeys(maxKeys int) knownKeys {
	return knownKeys{newKeyedStore(maxKeys, func(until *int64, now time.Time) bool {
		return *until <= now.UnixNano()
	})}
}

// known reports whether k is remembered past now.
func (s knownKeys) known(k rateKey, now time.Time) bool {
	sh := &s.shards[s.shardIndex(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := s.get(sh, k, now, false, nil)
	return e != nil && e.val > now.UnixNano()
}

// remember makes k known until until (seen at now).
func (s knownKeys) remember(k rateKey, now, until time.Time) {
	sh := &s.shards[s.shardIndex(k)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := s.get(sh, k, now, true, nil); e != nil {
		e.val = until.UnixNano()
	}
}

// forget drops k.
func (s knownKeys) forget(k rateKey) {
	sh := &s.shards[s.shardIndex(k)]
	sh.mu.Lock()
	s.remove(sh, k)
	sh.mu.Unlock()
}
