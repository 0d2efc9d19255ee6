// Package gateway is imagegate's HTTP edge: a Fiber app that validates
// generation requests, answers them from the content-hash cache when it can,
// reaches the inference tier when it must, and serves the output objects
// behind signed, expiring URLs.
//
// Request path: security headers → validate → cache (L1 → L2 → L3) → on a
// miss, one coalesced call to the inference tier per distinct request.
//
// fiber.Ctx never leaves this package: handlers derive a real
// context.Context with a deadline, and every string kept beyond a handler is
// copied first, because Fiber reuses its buffers once the handler returns
// while a coalesced generation may still be running.
package gateway
