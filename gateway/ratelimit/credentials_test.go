package ratelimit

import (
	"net/netip"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
)

func TestCredentialGuardConfigValidate(t *testing.T) {
	t.Parallel()
	for _, bad := range []CredentialGuardConfig{
		{PerSource: Policy{Quota: 0, Window: time.Minute}},
		{PerSource: Policy{Quota: 5, Window: time.Millisecond}},
		{KnownTTL: time.Second},
		{MaxKeys: -1},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	var def CredentialGuardConfig
	if err := def.Validate(); err != nil || def.PerSource.Quota != 30 || def.KnownTTL != time.Hour {
		t.Errorf("defaults %+v, %v", def, err)
	}
}

// A credential that validated skips the charge until it fails or its
// time runs out; unknown ones are charged to their address block, so one
// /64 cannot spread guesses over its addresses.
func TestCredentialGuardChargesOnlyUnprovenCredentials(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	g, err := NewCredentialGuard(CredentialGuardConfig{PerSource: Policy{Quota: 2, Window: time.Minute}, KnownTTL: time.Hour}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	a, sameBlock, other := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff"), netip.MustParseAddr("2001:db8:1::1")
	mustLookup := func(addr netip.Addr, cred string, want bool) {
		t.Helper()
		ok, wait := g.Lookup(addr, cred)
		if ok != want || (!ok && wait < time.Second) {
			t.Fatalf("Lookup(%s, %s) = %v, %s; want %v (and a wait when refused)", addr, cred, ok, wait, want)
		}
	}
	mustLookup(a, "good", true)
	g.Validated("good")
	mustLookup(a, "guess-1", true)
	mustLookup(sameBlock, "guess-2", false) // the /64's allowance is spent
	mustLookup(other, "guess-3", true)
	for range 5 {
		mustLookup(sameBlock, "good", true) // known: never charged
	}
	g.Failed("good") // revoked
	mustLookup(a, "good", false)
	clock.Advance(30 * time.Second) // one unit back
	mustLookup(a, "good", true)
	g.Validated("good")
	clock.Advance(2 * time.Hour) // known no longer; the bucket is full again
	mustLookup(a, "x", true)
	mustLookup(a, "y", true)
	mustLookup(a, "good", false)
	// Once everything has refilled and expired, a sweep forgets it all.
	clock.Advance(2 * time.Hour)
	if n := g.Sweep(); n == 0 {
		t.Error("sweep forgot nothing after every bucket refilled")
	}
	if n := g.Sweep(); n != 0 {
		t.Errorf("second sweep forgot %d more", n)
	}
}
