package ratelimit

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/clientip"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// freeImagesCases are the flag's parse cases, also the fuzz seeds.
var freeImagesCases = []struct {
	in      string
	want    string // String() of the result; "" means an error
	wantErr bool
}{
	{in: "10", want: "10"},
	{in: "0", want: "0"},
	{in: " 7 ", want: "7"},
	{in: "007", want: "7"},
	{in: "1000000", want: "1000000"},
	{in: "unlimited", want: "unlimited"},
	{in: "Unlimited", want: "unlimited"},
	{in: "", wantErr: true},
	{in: "-1", wantErr: true},
	{in: "+5", wantErr: true},
	{in: "-0", wantErr: true},
	{in: "1.5", wantErr: true},
	{in: "1e3", wantErr: true},
	{in: "ten", wantErr: true},
	{in: "1000001", wantErr: true},
	{in: "99999999999999999999", wantErr: true},
	{in: "unlimited!", wantErr: true},
}

func TestParseFreeImages(t *testing.T) {
	t.Parallel()
	for _, tt := range freeImagesCases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseFreeImages(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseFreeImages(%q) = %v, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), `want "unlimited" or a whole number from 0 to 1000000`) || !strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q does not say what is wanted and what was given", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tt.want {
				t.Errorf("ParseFreeImages(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestFreeImagesFlag(t *testing.T) {
	t.Parallel()
	var cfg QuotaConfig
	if got := cfg.FreeImagesPerDay.String(); got != "10" {
		t.Errorf("zero value is %s, want the default 10", got)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&cfg.FreeImagesPerDay, "free-images-per-day", "anonymous generations per client IP per day")
	if err := fs.Parse([]string{"--free-images-per-day=unlimited"}); err != nil {
		t.Fatal(err)
	}
	if n, unlimited := cfg.FreeImagesPerDay.limit(); !unlimited || n != 0 {
		t.Errorf("after unlimited: %d, %v", n, unlimited)
	}
	err := fs.Set("free-images-per-day", "lots")
	if err == nil || !strings.Contains(err.Error(), `"lots"`) {
		t.Errorf("bad value: %v", err)
	}
	if err := fs.Set("free-images-per-day", "0"); err != nil {
		t.Fatal(err)
	}
	if n, unlimited := cfg.FreeImagesPerDay.limit(); unlimited || n != 0 {
		t.Errorf("after 0: %d, %v", n, unlimited)
	}
}

// FuzzParseFreeImages checks that whatever parses round-trips through
// String and stays in range.
func FuzzParseFreeImages(f *testing.F) {
	for _, tc := range freeImagesCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseFreeImages(s)
		if err != nil {
			return
		}
		n, unlimited := v.limit()
		if !unlimited && (n < 0 || n > maxFreeImages) {
			t.Fatalf("%q parsed to %d", s, n)
		}
		again, err := ParseFreeImages(v.String())
		if err != nil || again != v {
			t.Fatalf("%q → %v → %v, %v", s, v, again, err)
		}
	})
}

func mustDailyQuota(t *testing.T, cfg QuotaConfig, clock *testpeer.Clock) *Quota {
	t.Helper()
	q, err := NewQuota(cfg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestDailyQuotaConcurrentNeverOverspends has 64 goroutines reserve one
// image each of one address's allowance of 10 at the same moment, holding
// their reservations, then fails some generations and tries again.
func TestDailyQuotaConcurrentNeverOverspends(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	q := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(10)}, clock)
	addr := netip.MustParseAddr("198.51.100.1")

	// reserveAll has 64 goroutines reserve at once and returns the holds
	// granted, all still unsettled.
	reserveAll := func() []*Hold {
		var mu sync.Mutex
		var holds []*Hold
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 64 {
			wg.Go(func() {
				<-start
				h, err := q.Reserve(addr, 1)
				var ae *apierror.Error
				if err != nil && (!errors.As(err, &ae) || ae.Status != 429) {
					t.Errorf("reserve: %v", err)
				}
				if err == nil {
					mu.Lock()
					holds = append(holds, h)
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		return holds
	}

	holds := reserveAll()
	if len(holds) != 10 {
		t.Fatalf("%d concurrent reservations granted, want 10", len(holds))
	}
	// Four generations fail and return their images; the rest commit.
	var settle sync.WaitGroup
	for i, h := range holds {
		settle.Go(func() {
			if i < 4 {
				h.Release()
				return
			}
			h.Commit()
			h.Commit()  // settling twice
			h.Release() // or both ways changes nothing
		})
	}
	settle.Wait()
	holds = reserveAll()
	if len(holds) != 4 {
		t.Fatalf("%d reservations granted after 4 releases, want 4", len(holds))
	}
	for _, h := range holds {
		h.Commit()
	}
	key := addrRateKey(rateNSFreeQuota, addr)
	sh := &q.counts.shards[q.counts.shardIndex(key)]
	sh.mu.Lock()
	count := sh.m[key].val
	sh.mu.Unlock()
	if count.used != 10 || count.held != 0 {
		t.Errorf("quota counts %d used and %d held, want 10 and 0", count.used, count.held)
	}
	if len(reserveAll()) != 0 {
		t.Error("a reservation was granted with the allowance spent")
	}
}

func TestDailyQuotaResetsAtUTCMidnight(t *testing.T) {
	t.Parallel()
	// The clock's zone is UTC+14: the day still turns at midnight UTC.
	kiritimati := time.FixedZone("UTC+14", 14*3600)
	clock := testpeer.NewClock(time.Date(2026, 3, 14, 23, 59, 58, 500e6, time.UTC).In(kiritimati))
	q := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(3)}, clock)
	addr := netip.MustParseAddr("2001:db8:7:7::1")
	sameBlock := netip.MustParseAddr("2001:db8:7:7:ffff::2")

	h, err := q.Reserve(addr, 2)
	if err != nil {
		t.Fatal(err)
	}
	h.Commit()
	late, err := q.Reserve(sameBlock, 1) // the same /64: the last one
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.Reserve(addr, 1)
	want := &apierror.Error{Status: 429, Type: "rate_limit_error", Code: "free_quota_exhausted", RetryAfter: 2,
		Msg: "signed-out visitors may generate 3 images a day and this address has 0 left today; sign in, or retry after midnight UTC"}
	var got *apierror.Error
	if !errors.As(err, &got) {
		t.Fatalf("error %v, want an *apierror.Error", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := q.Reserve(netip.MustParseAddr("2001:db8:7:8::1"), 3); err != nil {
		t.Errorf("another /64 was refused: %v", err)
	}

	clock.Advance(1500 * time.Millisecond) // 00:00:00 UTC
	// Yesterday's reservation settles into nothing: today starts whole.
	late.Commit()
	for i := range 3 {
		h, err := q.Reserve(addr, 1)
		if err != nil {
			t.Fatalf("image %d of the new day: %v", i, err)
		}
		h.Commit()
	}
	if _, err := q.Reserve(addr, 1); err == nil {
		t.Error("a fourth image on the new day was allowed")
	}
}

func TestDailyQuotaZeroAndUnlimited(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	addr := netip.MustParseAddr("198.51.100.1")

	none := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(0)}, clock)
	_, err := none.Reserve(addr, 1)
	var ae *apierror.Error
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != "sign_in_required" {
		t.Errorf("zero allowance: %v, want 403 sign_in_required", err)
	}

	unlimited := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: UnlimitedFreeImages()}, clock)
	for range 1000 {
		h, err := unlimited.Reserve(addr, 4)
		if err != nil {
			t.Fatal(err)
		}
		h.Commit()
	}
	if n := unlimited.counts.len(); n != 0 {
		t.Errorf("unlimited quota remembers %d addresses", n)
	}
}

// TestDailyQuotaMemoryBounded fills a quota capped at 64 address blocks
// with 10,000: counts are never forgotten early, so new blocks wait for
// the day to end, while blocks already counted keep their allowance.
func TestDailyQuotaMemoryBounded(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(rateTestEpoch)
	// One /24: the cap, not the wide allowance, is under test.
	q := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(5), WideFreeImagesPerDay: UnlimitedFreeImages(), MaxKeys: 64}, clock)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	granted := 0
	for i := range 10000 {
		h, err := q.Reserve(addr(i), 1)
		var ae *apierror.Error
		switch {
		case err == nil:
			granted++
			if i == 63 {
				// Its generation failed: a count of nothing, whose place
				// the next block takes.
				h.Release()
				continue
			}
			h.Commit()
		case !errors.As(err, &ae) || ae.Code != "free_quota_exhausted" || ae.RetryAfter < 1:
			t.Fatalf("block %d: %v", i, err)
		}
		if n := q.counts.len(); n > 64 {
			t.Fatalf("%d counts with a cap of 64", n)
		}
	}
	if granted != 65 {
		t.Errorf("%d blocks granted an image, want the first 65", granted)
	}
	// A block already counted still has its allowance: 4 more.
	for range 4 {
		h, err := q.Reserve(addr(0), 1)
		if err != nil {
			t.Fatalf("counted block refused: %v", err)
		}
		h.Commit()
	}
	// Counts of past days are worth nothing: a new block forgets two as it
	// arrives, and a sweep the rest.
	clock.Advance(24 * time.Hour)
	if _, err := q.Reserve(addr(9999), 1); err != nil {
		t.Errorf("a new block on the next day: %v", err)
	}
	if n := q.Sweep(); n != 62 {
		t.Errorf("sweep after the day forgot %d, want 62", n)
	}
}

// TestDailyQuotaOverHTTP refuses through the gateway's error handler with
// Retry-After until midnight UTC.
func TestDailyQuotaOverHTTP(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 3, 14, 22, 0, 0, 0, time.UTC))
	q := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(1)}, clock)
	ips, err := clientip.New(clientip.Config{})
	if err != nil {
		t.Fatal(err)
	}
	app := rateTestApp()
	app.Post("/gen", func(c *fiber.Ctx) error {
		h, err := q.Reserve(ips.Addr(c), 1)
		if err != nil {
			return err
		}
		defer h.Release() // a no-op once committed
		h.Commit()
		return c.SendString("image")
	})
	var got []string
	for range 2 {
		resp, err := app.Test(httptest.NewRequest(http.MethodPost, "/gen", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got = append(got, resp.Status+" "+resp.Header.Get("Retry-After"))
	}
	want := []string{"200 OK ", "429 Too Many Requests 7200"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// BenchmarkDailyQuotaMillionIPs asks for one free image from each of
// 1,000,000 distinct addresses under the default cap and reports the heap
// the quota holds, which must stay under the documented 96 MiB.
func BenchmarkDailyQuotaMillionIPs(b *testing.B) {
	b.ReportAllocs()
	var heap float64
	var keys int
	for b.Loop() {
		clock := testpeer.NewClock(rateTestEpoch)
		before := rateHeapInUse()
		q, err := NewQuota(QuotaConfig{}, clock.Now)
		if err != nil {
			b.Fatal(err)
		}
		for i := range 1_000_000 {
			// Past the cap new blocks are refused; the heap stays put.
			// Each address is in a /24 of its own, so the wide /24
			// allowance never refuses one before the cap does.
			if h, err := q.Reserve(netip.AddrFrom4([4]byte{byte(1 + i>>16), byte(i >> 8), byte(i), 1}), 1); err == nil {
				h.Commit()
			}
		}
		heap = float64(rateHeapInUse() - before)
		keys = q.counts.len()
	}
	b.ReportMetric(heap/(1<<20), "heap-MiB")
	b.ReportMetric(heap/float64(keys), "bytes/key")
	if keys != defaultFreeQuotaMaxKeys || heap > 96<<20 {
		b.Errorf("%d counts in %.1f MiB; want %d in at most 96 MiB", keys, heap/(1<<20), defaultFreeQuotaMaxKeys)
	}
}

// TestDailyQuotaPerWideBlock has one holder of an IPv6 /48 rotate through
// its /64s, and of an IPv4 /24 through its addresses: each block gets its
// own allowance, but together they stop at the wide allowance; a refused
// wide reservation holds nothing, a released one gives images back, and
// the next /48 or /24 is untouched.
func TestDailyQuotaPerWideBlock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		nth, other func(i int) netip.Addr
	}{
		{"ipv6 /48", func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", i)) },
			func(int) netip.Addr { return netip.MustParseAddr("2001:db8:2::1") }},
		{"ipv4 /24", func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", i)) },
			func(int) netip.Addr { return netip.MustParseAddr("203.0.114.1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := testpeer.NewClock(rateTestEpoch)
			q := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(3), WideFreeImagesPerDay: FreeImagesPerDay(10)}, clock)
			used := 0
			for i := 1; used < 10; i++ {
				h, err := q.Reserve(tc.nth(i), min(3, 10-used))
				if err != nil {
					t.Fatalf("block %d: %v after %d images", i, err, used)
				}
				h.Commit()
				used += min(3, 10-used)
			}
			h, err := q.Reserve(tc.nth(100), 1)
			var ae *apierror.Error
			if !errors.As(err, &ae) || ae.Status != 429 || !strings.Contains(ae.Msg, "network") || ae.RetryAfter <= 0 {
				t.Fatalf("a fresh block of a spent wide block: %v %v, want a 429 naming the network", h, err)
			}
			// The refusal held nothing in the fresh block: once the wide
			// limit is lifted by a new day, it has its whole allowance.
			if h, err := q.Reserve(tc.other(0), 3); err != nil {
				t.Errorf("another wide block: %v", err)
			} else {
				h.Release()
			}
			clock.Advance(24 * time.Hour)
			h, err = q.Reserve(tc.nth(100), 3)
			if err != nil {
				t.Fatalf("next day: %v", err)
			}
			// A released hold gives its images back to the wide block too.
			h.Release()
			for i := 1; i <= 3; i++ {
				h, err := q.Reserve(tc.nth(200+i), 3)
				if err != nil {
					t.Fatalf("after a release, block %d: %v", i, err)
				}
				h.Commit()
			}
			if _, err := q.Reserve(tc.nth(250), 2); err == nil {
				t.Error("more than the wide allowance after a release")
			}
			if h, err := q.Reserve(tc.nth(250), 1); err != nil {
				t.Errorf("the last image of the wide allowance: %v", err)
			} else {
				h.Commit()
			}
		})
	}
}

func TestDailyQuotaWideDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg       QuotaConfig
		n         int
		unlimited bool
	}{
		{QuotaConfig{}, 100, false},
		{QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(4)}, 40, false},
		{QuotaConfig{FreeImagesPerDay: UnlimitedFreeImages()}, 0, true},
		{QuotaConfig{FreeImagesPerDay: FreeImagesPerDay(4), WideFreeImagesPerDay: FreeImagesPerDay(7)}, 7, false},
		{QuotaConfig{FreeImagesPerDay: UnlimitedFreeImages(), WideFreeImagesPerDay: FreeImagesPerDay(7)}, 7, false},
	} {
		if n, u := tc.cfg.wideLimit(); n != tc.n || u != tc.unlimited {
			t.Errorf("%+v: wide limit %d unlimited %v, want %d %v", tc.cfg, n, u, tc.n, tc.unlimited)
		}
	}
	// Only the wide limit: a per-block unlimited allowance still stops at it.
	clock := testpeer.NewClock(rateTestEpoch)
	q := mustDailyQuota(t, QuotaConfig{FreeImagesPerDay: UnlimitedFreeImages(), WideFreeImagesPerDay: FreeImagesPerDay(2)}, clock)
	for i := range 2 {
		h, err := q.Reserve(netip.MustParseAddr("192.0.2.1"), 1)
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		h.Commit()
	}
	if _, err := q.Reserve(netip.MustParseAddr("192.0.2.200"), 1); err == nil {
		t.Error("an unlimited per-block allowance ignored the wide one")
	}
}
