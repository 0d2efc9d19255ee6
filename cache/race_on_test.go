//go:build race

package cache

// raceEnabled: the race detector's sync.Pool drops a quarter of what is
// put back, so allocation counts are not what production sees.
const raceEnabled = true
