package store

import (
	"errors"
	"os"
	"testing"
	"time"
)

// day builds an expected AnalyticsDay; nil maps become empty ones.
func day(name string, views map[string]int64, visits, seconds int64, lengths, devices, countries map[string]int64) AnalyticsDay {
	d := newAnalyticsDay(name)
	d.Add(AnalyticsDay{PageViews: views, Visits: visits, VisitSeconds: seconds, VisitLengths: lengths, Devices: devices, Countries: countries})
	return d
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
