package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// TestRecordPageViewAggregates follows two visits through the counters:
// page views go to the day they happen, a visit (its device, country and
// length) to the day it started, and a visit's length moves through the
// histogram as it grows, so each visit is counted in exactly one bucket.
func testRecordPageViewAggregates(t *testing.T, h Harness) {
	db, clock := h.open(t)
	record := func(v store.PageView) {
		t.Helper()
		if err := db.RecordPageView(v); err != nil {
			t.Fatal(err)
		}
	}
	// 2026-11-23 23:50 UTC: a mobile visitor from Iceland starts a visit.
	clock.Advance(11*time.Hour + 50*time.Minute)
	start := clock.Now()
	record(store.PageView{Path: "/", Device: store.DeviceMobile, Country: "IS"})
	clock.Advance(20 * time.Second)
	record(store.PageView{Path: "/pricing", Device: store.DeviceMobile, Country: "IS", VisitStart: start, LastSeen: start})
	last := clock.Now()
	// A desktop visitor with no known country, one page only.
	record(store.PageView{Path: "/pricing", Device: store.DeviceDesktop, Country: store.AnalyticsUnknownCountry})
	// The first visit goes on past midnight: 15 minutes after its start.
	clock.Advance(14*time.Minute + 40*time.Second)
	record(store.PageView{Path: "/images/*", Device: store.DeviceMobile, Country: "IS", VisitStart: start, LastSeen: last})

	got, err := db.Analytics(start.Add(-48*time.Hour), clock.Now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.AnalyticsDay{
		day("2026-11-23", map[string]int64{"/": 1, "/pricing": 2}, 2, 15*60,
			map[string]int64{"0s": 1, "<30s": 0, "<30m": 1},
			map[string]int64{store.DeviceMobile: 1, store.DeviceDesktop: 1},
			map[string]int64{"IS": 1, store.AnalyticsUnknownCountry: 1}),
		day("2026-11-24", map[string]int64{"/images/*": 1}, 0, 0, nil, nil, nil),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("aggregates (-want +got):\n%s", diff)
	}
	if got, err := db.Analytics(clock.Now(), clock.Now()); err != nil || len(got) != 1 || got[0].Day != "2026-11-24" {
		t.Errorf("Analytics(one day) = %+v, %v; want only 2026-11-24", got, err)
	}

	var total store.AnalyticsDay
	for _, d := range want {
		total.Add(d)
	}
	if m := total.MedianVisitLength(); m != "0s" {
		t.Errorf("median of {0s, <30m} = %q, want 0s (the lower middle)", m)
	}
}

// TestRecordPageViewRefusesFreeText checks that nothing but the fixed
// dimension shapes reaches the file: a caller bug that passed a raw URL,
// a user agent or an address is an error, and nothing is written.
func testRecordPageViewRefusesFreeText(t *testing.T, h Harness) {
	db, clock := h.open(t)
	ok := store.PageView{Path: "/pricing", Device: store.DeviceDesktop, Country: "DE"}
	for _, tc := range []struct {
		name string
		edit func(*store.PageView)
	}{
		{"query string", func(v *store.PageView) { v.Path = "/search?q=marker-free-text" }},
		{"space", func(v *store.PageView) { v.Path = "/a b" }},
		{"upper case", func(v *store.PageView) { v.Path = "/Pricing" }},
		{"email", func(v *store.PageView) { v.Path = "/u/ada@example.com" }},
		{"relative", func(v *store.PageView) { v.Path = "pricing" }},
		{"long", func(v *store.PageView) { v.Path = "/" + strings.Repeat("a", 64) }},
		{"user agent as device", func(v *store.PageView) { v.Device = "Mozilla/5.0 (marker)" }},
		{"ip as country", func(v *store.PageView) { v.Country = "203.0.113.9" }},
		{"lower-case country", func(v *store.PageView) { v.Country = "de" }},
		{"three-letter country", func(v *store.PageView) { v.Country = "DEU" }},
		{"continued visit without start", func(v *store.PageView) { v.LastSeen = clock.Now() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := ok
			tc.edit(&v)
			if err := db.RecordPageView(v); err == nil {
				t.Errorf("RecordPageView(%+v) accepted it", v)
			}
		})
	}
	if got, err := db.Analytics(clock.Now().Add(-time.Hour), clock.Now().Add(time.Hour)); err != nil || len(got) != 0 {
		t.Errorf("refused views were counted: %+v, %v", got, err)
	}
	for _, marker := range []string{"marker", "203.0.113.9", "ada@example.com"} {
		if h.Contains(t, db, []byte(marker)) {
			t.Errorf("%q reached the store's files", marker)
		}
	}
	if err := db.RecordPageView(ok); err != nil {
		t.Errorf("a valid view after the refusals: %v", err)
	}
}

// TestRecordPageViewConcurrent checks that views recorded at once through
// bbolt's shared write transactions are each counted exactly once.
func testRecordPageViewConcurrent(t *testing.T, h Harness) {
	db, clock := h.open(t)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			dev := store.DeviceDesktop
			if i%2 == 1 {
				dev = store.DeviceMobile
			}
			errs <- db.RecordPageView(store.PageView{Path: "/", Device: dev, Country: store.AnalyticsUnknownCountry})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.Analytics(clock.Now(), clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []store.AnalyticsDay{day("2026-11-23", map[string]int64{"/": n}, n, 0,
		map[string]int64{"0s": n}, map[string]int64{store.DeviceDesktop: n / 2, store.DeviceMobile: n / 2}, map[string]int64{store.AnalyticsUnknownCountry: n})}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("concurrent views (-want +got):\n%s", diff)
	}
}

// day builds an expected AnalyticsDay; nil maps become empty ones.
func day(name string, views map[string]int64, visits, seconds int64, lengths, devices, countries map[string]int64) store.AnalyticsDay {
	d := store.NewAnalyticsDay(name)
	d.Add(store.AnalyticsDay{PageViews: views, Visits: visits, VisitSeconds: seconds, VisitLengths: lengths, Devices: devices, Countries: countries})
	return d
}
