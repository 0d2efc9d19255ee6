package cache

import "sync/atomic"

// Stats is a snapshot of a Cache's counters since New. Every Get counts in
// exactly one of HitsL1, HitsL2, HitsL3 and Misses, whatever its outcome.
type Stats struct {
	// HitsL1, HitsL2 and HitsL3 count Gets answered by each tier.
	HitsL1, HitsL2, HitsL3 uint64
	// Misses counts Gets no tier answered: refreshes, loads (successful or
	// not) and callers that gave up waiting.
	Misses uint64
	// Coalesced counts Gets that joined work another Get had started
	// instead of doing their own.
	Coalesced uint64
	// Loads counts Loader calls; LoadErrors those that failed.
	Loads, LoadErrors uint64
	// Errors counts tier read and write failures. L1 and L2 failures are
	// served as misses; an object store write failure also fails the Get.
	Errors uint64
}

// counters are the live, atomic form of Stats.
type counters struct {
	hitsL1, hitsL2, hitsL3, misses atomic.Uint64
	coalesced                      atomic.Uint64
	loads, loadErrors              atomic.Uint64
	errors                         atomic.Uint64
}

func (c *counters) tier(t Tier) {
	switch t {
	case TierL1:
		c.hitsL1.Add(1)
	case TierL2:
		c.hitsL2.Add(1)
	case TierL3:
		c.hitsL3.Add(1)
	default:
		c.misses.Add(1)
	}
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache) Stats() Stats {
	s := &c.stats
	return Stats{
		HitsL1:     s.hitsL1.Load(),
		HitsL2:     s.hitsL2.Load(),
		HitsL3:     s.hitsL3.Load(),
		Misses:     s.misses.Load(),
		Coalesced:  s.coalesced.Load(),
		Loads:      s.loads.Load(),
		LoadErrors: s.loadErrors.Load(),
		Errors:     s.errors.Load(),
	}
}
