package store

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// day builds an expected AnalyticsDay; nil maps become empty ones.
func day(name string, views map[string]int64, visits, seconds int64, lengths, devices, countries map[string]int64) AnalyticsDay {
	d := newAnalyticsDay(name)
	d.Add(AnalyticsDay{PageViews: views, Visits: visits, VisitSeconds: seconds, VisitLengths: lengths, Devices: devices, Countries: countries})
	return d
}

// TestRecordPageViewAggregates follows two visits through the counters:
// page views go to the day they happen, a visit (its device, country and
// length) to the day it started, and a visit's length moves through the
// histogram as it grows, so each visit is counted in exactly one bucket.
func TestRecordPageViewAggregates(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	record := func(v PageView) {
		t.Helper()
		if err := db.RecordPageView(v); err != nil {
			t.Fatal(err)
		}
	}
	// 2026-11-23 23:50 UTC: a mobile visitor from Iceland starts a visit.
	clock.Advance(11*time.Hour + 50*time.Minute)
	start := clock.Now()
	record(PageView{Path: "/", Device: DeviceMobile, Country: "IS"})
	clock.Advance(20 * time.Second)
	record(PageView{Path: "/pricing", Device: DeviceMobile, Country: "IS", VisitStart: start, LastSeen: start})
	last := clock.Now()
	// A desktop visitor with no known country, one page only.
	record(PageView{Path: "/pricing", Device: DeviceDesktop, Country: AnalyticsUnknownCountry})
	// The first visit goes on past midnight: 15 minutes after its start.
	clock.Advance(14*time.Minute + 40*time.Second)
	record(PageView{Path: "/images/*", Device: DeviceMobile, Country: "IS", VisitStart: start, LastSeen: last})

	got, err := db.Analytics(start.Add(-48*time.Hour), clock.Now().Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []AnalyticsDay{
		day("2026-11-23", map[string]int64{"/": 1, "/pricing": 2}, 2, 15*60,
			map[string]int64{"0s": 1, "<30s": 0, "<30m": 1},
			map[string]int64{DeviceMobile: 1, DeviceDesktop: 1},
			map[string]int64{"IS": 1, AnalyticsUnknownCountry: 1}),
		day("2026-11-24", map[string]int64{"/images/*": 1}, 0, 0, nil, nil, nil),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("aggregates (-want +got):\n%s", diff)
	}
	if got, err := db.Analytics(clock.Now(), clock.Now()); err != nil || len(got) != 1 || got[0].Day != "2026-11-24" {
		t.Errorf("Analytics(one day) = %+v, %v; want only 2026-11-24", got, err)
	}

	var total AnalyticsDay
	for _, d := range want {
		total.Add(d)
	}
	if m := total.MedianVisitLength(); m != "0s" {
		t.Errorf("median of {0s, <30m} = %q, want 0s (the lower middle)", m)
	}
}

func TestVisitLengthBucket(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"}, {0, "0s"}, {time.Second, "<10s"}, {10 * time.Second, "<30s"},
		{59 * time.Second, "<1m"}, {time.Minute, "<3m"}, {9 * time.Minute, "<10m"}, {29 * time.Minute, "<30m"},
		{59 * time.Minute, "<1h"}, {2 * time.Hour, "<3h"}, {3 * time.Hour, "3h+"}, {100 * time.Hour, "3h+"},
	} {
		if got := visitLengthBucket(tc.d); got != tc.want {
			t.Errorf("visitLengthBucket(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestMedianVisitLength(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		lengths map[string]int64
		want    string
	}{
		{"none", nil, ""},
		{"one bucket", map[string]int64{"<3m": 4}, "<3m"},
		{"skewed long", map[string]int64{"0s": 1, "<1h": 3}, "<1h"},
		{"middle", map[string]int64{"0s": 2, "<1m": 1, "3h+": 2}, "<1m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := (AnalyticsDay{VisitLengths: tc.lengths}).MedianVisitLength(); got != tc.want {
				t.Errorf("median = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRecordPageViewRefusesFreeText checks that nothing but the fixed
// dimension shapes reaches the file: a caller bug that passed a raw URL,
// a user agent or an address is an error, and nothing is written.
func TestRecordPageViewRefusesFreeText(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	ok := PageView{Path: "/pricing", Device: DeviceDesktop, Country: "DE"}
	for _, tc := range []struct {
		name string
		edit func(*PageView)
	}{
		{"query string", func(v *PageView) { v.Path = "/search?q=marker-free-text" }},
		{"space", func(v *PageView) { v.Path = "/a b" }},
		{"upper case", func(v *PageView) { v.Path = "/Pricing" }},
		{"email", func(v *PageView) { v.Path = "/u/ada@example.com" }},
		{"relative", func(v *PageView) { v.Path = "pricing" }},
		{"long", func(v *PageView) { v.Path = "/" + strings.Repeat("a", 64) }},
		{"user agent as device", func(v *PageView) { v.Device = "Mozilla/5.0 (marker)" }},
		{"ip as country", func(v *PageView) { v.Country = "203.0.113.9" }},
		{"lower-case country", func(v *PageView) { v.Country = "de" }},
		{"three-letter country", func(v *PageView) { v.Country = "DEU" }},
		{"continued visit without start", func(v *PageView) { v.LastSeen = clock.Now() }},
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
		if fileContains(t, path, []byte(marker)) {
			t.Errorf("%q reached the store's files", marker)
		}
	}
	if err := db.RecordPageView(ok); err != nil {
		t.Errorf("a valid view after the refusals: %v", err)
	}
}

// TestRecordPageViewConcurrent checks that views recorded at once through
// bbolt's shared write transactions are each counted exactly once.
func TestRecordPageViewConcurrent(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			dev := DeviceDesktop
			if i%2 == 1 {
				dev = DeviceMobile
			}
			errs <- db.RecordPageView(PageView{Path: "/", Device: dev, Country: AnalyticsUnknownCountry})
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
	want := []AnalyticsDay{day("2026-11-23", map[string]int64{"/": n}, n, 0,
		map[string]int64{"0s": n}, map[string]int64{DeviceDesktop: n / 2, DeviceMobile: n / 2}, map[string]int64{AnalyticsUnknownCountry: n})}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("concurrent views (-want +got):\n%s", diff)
	}
}

// TestAnalyticsSurviveReopen checks the counters are durable.
func TestAnalyticsSurviveReopen(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	if err := db.RecordPageView(PageView{Path: "/", Device: DeviceTablet, Country: "FR"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	got, err := db2.Analytics(clock.Now(), clock.Now())
	if err != nil || len(got) != 1 || got[0].Devices[DeviceTablet] != 1 || got[0].Countries["FR"] != 1 {
		t.Errorf("after reopen: %+v, %v", got, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if err := db2.RecordPageView(PageView{Path: "/", Device: "phone", Country: "FR"}); !errors.Is(err, errAnalyticsValue) {
		t.Errorf("unknown device: %v, want errAnalyticsValue", err)
	}
}
