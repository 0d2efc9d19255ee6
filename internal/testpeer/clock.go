package testpeer

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake clock for tests that pace or rate-limit by time without
// waiting for it: Sleep moves the clock forward by the whole duration and
// returns at once. Share one Clock between a client that paces itself and
// a fake server that checks its rate (cftest.Server), and every wait the
// client makes shows up on the server's side as time that has passed; or
// hand its Now to a gateway or store and move it with Advance. It is safe
// for concurrent use.
//
// Clock has the methods edge.PurgeClock asks for.
type Clock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

// NewClock returns a Clock reading start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Sleep advances the clock by d (nothing for d <= 0) and returns nil, or
// returns ctx.Err() without advancing if ctx is already done.
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
	return nil
}

// Advance moves the clock forward by d without counting it as slept.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Slept returns the total time Sleep has advanced the clock by.
func (c *Clock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}
