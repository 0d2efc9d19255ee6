package ratelimit

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestTokenBucketMatchesXTimeRate drives tokenBucket and x/time/rate's
// Limiter (which the limiter used before it dropped the second lock)
// through the same random charges, clock steps (some backwards) and
// policy changes, and requires the same tokens after every step.
func TestTokenBucketMatchesXTimeRate(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	policies := []Policy{{Quota: 600, Window: time.Minute}, {Quota: 5, Window: 15 * time.Minute}, {Quota: 1200, Window: time.Second}}
	now := time.Unix(1_800_000_000, 0)
	for run := range 50 {
		p := policies[run%len(policies)]
		var b tokenBucket
		newRateBucket(&b, p, now)
		ref := rate.NewLimiter(rate.Limit(p.limit()), p.Quota)
		ref.SetLimitAt(now, rate.Limit(p.limit())) // full at now, as newRateBucket
		for step := range 200 {
			switch rng.IntN(10) {
			case 0:
				now = now.Add(-time.Duration(rng.IntN(2000)) * time.Millisecond)
			case 1:
				p = policies[rng.IntN(len(policies))]
				b.resize(p, now)
				ref.SetLimitAt(now, rate.Limit(p.limit()))
				ref.SetBurstAt(now, p.Quota)
			default:
				now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			}
			n := float64(rng.IntN(p.Quota) + 1)
			got, want := b.tokensAt(now), ref.TokensAt(now)
			if math.Abs(got-want) > 1e-6 {
				t.Fatalf("run %d step %d: %v tokens, x/time/rate %v", run, step, got, want)
			}
			if got >= n {
				b.take(now, n)
				if !ref.AllowN(now, int(n)) {
					t.Fatalf("run %d step %d: x/time/rate refused %v of %v", run, step, n, want)
				}
			}
			if idle, full := rateBucketIdle(&b, now), ref.TokensAt(now) >= float64(ref.Burst()); idle != full {
				t.Fatalf("run %d step %d: idle %v, x/time/rate full %v", run, step, idle, full)
			}
		}
	}
}
