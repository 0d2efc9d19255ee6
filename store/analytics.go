package store

import (
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// First-party analytics (promise K4) are kept only as daily counters. A
// page view adds to the counters of its day and is then forgotten: no row
// describes a visit or a visitor, the dimensions are counted separately
// (never cross-tabulated), and nothing in the bucket is a free-text value
// — RecordPageView refuses any path, device class or country that is not
// of the fixed shapes below. The aggregates hold nothing about any person,
// so they need no retention limit and nothing to erase when an account is
// deleted: no count can be traced back to it.

// Device classes of a page view, from the browser's User-Agent.
const (
	DeviceDesktop = "desktop"
	DeviceMobile  = "mobile"
	DeviceTablet  = "tablet"
	DeviceBot     = "bot"
)

// Placeholders for dimensions that are unknown or not on the allow-list.
const (
	// AnalyticsOtherPath counts page views of paths not on the gateway's
	// allow-list.
	AnalyticsOtherPath = "other"
	// AnalyticsUnknownCountry counts visits whose country no trusted proxy
	// named.
	AnalyticsUnknownCountry = "unknown"
)

// VisitLengths are the labels of the visit-length histogram, shortest
// first. A visit is in exactly one bucket, the one of its length so far:
// "0s" is a visit of a single page view.
var VisitLengths = []string{"0s", "<10s", "<30s", "<1m", "<3m", "<10m", "<30m", "<1h", "<3h", "3h+"}

var visitLengthBounds = []time.Duration{0, 10 * time.Second, 30 * time.Second, time.Minute, 3 * time.Minute,
	10 * time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour}

// visitLengthBucket names the histogram bucket of a visit length d.
func visitLengthBucket(d time.Duration) string {
	if d <= 0 {
		return VisitLengths[0]
	}
	for i, b := range visitLengthBounds[1:] {
		if d < b {
			return VisitLengths[i+1]
		}
	}
	return VisitLengths[len(VisitLengths)-1]
}

// AnalyticsDay is one UTC day of aggregated analytics. Visits, their
// lengths, devices and countries count visits that started that day (a
// visit crossing midnight stays with its first day); PageViews counts the
// views made that day.
type AnalyticsDay struct {
	Day       string           `json:"day"` // YYYY-MM-DD
	PageViews map[string]int64 `json:"page_views"`
	Visits    int64            `json:"visits"`
	// VisitSeconds is the summed length of the day's visits so far.
	VisitSeconds int64            `json:"visit_seconds"`
	VisitLengths map[string]int64 `json:"visit_lengths"`
	Devices      map[string]int64 `json:"devices"`
	Countries    map[string]int64 `json:"countries"`
}

func newAnalyticsDay(day string) AnalyticsDay {
	return AnalyticsDay{Day: day, PageViews: map[string]int64{}, VisitLengths: map[string]int64{},
		Devices: map[string]int64{}, Countries: map[string]int64{}}
}

// Add adds o's counts to d (for totals over a range of days).
func (d *AnalyticsDay) Add(o AnalyticsDay) {
	add := func(dst *map[string]int64, src map[string]int64) {
		if *dst == nil {
			*dst = map[string]int64{}
		}
		for k, v := range src {
			(*dst)[k] += v
		}
	}
	add(&d.PageViews, o.PageViews)
	add(&d.VisitLengths, o.VisitLengths)
	add(&d.Devices, o.Devices)
	add(&d.Countries, o.Countries)
	d.Visits += o.Visits
	d.VisitSeconds += o.VisitSeconds
}

// MedianVisitLength is the histogram bucket holding the median visit, or
// "" when there is none.
func (d AnalyticsDay) MedianVisitLength() string {
	var total int64
	for _, n := range d.VisitLengths {
		total += n
	}
	if total == 0 {
		return ""
	}
	var seen int64
	for _, label := range VisitLengths {
		seen += d.VisitLengths[label]
		if 2*seen >= total {
			return label
		}
	}
	return VisitLengths[len(VisitLengths)-1]
}

// PageView is one page view to count, already reduced to its aggregate
// dimensions by the caller.
type PageView struct {
	// Path is a path from the caller's allow-list ("/", "/pricing",
	// "/images/*") or AnalyticsOtherPath: lower-case letters, digits and
	// "/*._-", at most 64 bytes.
	Path string
	// Device is one of the Device* classes.
	Device string
	// Country is an ISO 3166-1 alpha-2 code (two upper-case letters) or
	// AnalyticsUnknownCountry.
	Country string
	// VisitStart is when the visit this view belongs to started, and
	// LastSeen when its previous view was; a zero LastSeen makes this view
	// the first of a new visit (VisitStart is then ignored).
	VisitStart, LastSeen time.Time
}

// errAnalyticsValue refuses a dimension that is not of its fixed shape, so
// free text can never reach the analytics bucket.
var errAnalyticsValue = errors.New("store: analytics value is not an aggregate dimension")

func (v PageView) validate() error {
	if !validAnalyticsPath(v.Path) {
		return fmt.Errorf("%w: path", errAnalyticsValue)
	}
	if !slices.Contains([]string{DeviceDesktop, DeviceMobile, DeviceTablet, DeviceBot}, v.Device) {
		return fmt.Errorf("%w: device", errAnalyticsValue)
	}
	if v.Country != AnalyticsUnknownCountry && !(len(v.Country) == 2 && isUpper(v.Country[0]) && isUpper(v.Country[1])) {
		return fmt.Errorf("%w: country", errAnalyticsValue)
	}
	if !v.LastSeen.IsZero() && (v.VisitStart.IsZero() || v.VisitStart.After(v.LastSeen)) {
		return errors.New("store: a continued visit needs a start no later than its last view")
	}
	return nil
}

func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }

func validAnalyticsPath(p string) bool {
	if p == AnalyticsOtherPath {
		return true
	}
	if len(p) == 0 || len(p) > 64 || p[0] != '/' {
		return false
	}
	for i := range len(p) {
		switch b := p[i]; {
		case 'a' <= b && b <= 'z', '0' <= b && b <= '9':
		case b == '/', b == '*', b == '.', b == '_', b == '-':
		default:
			return false
		}
	}
	return true
}

// dayKey names a UTC day.
func dayKey(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// RecordPageView adds one page view to the day's counters; the first view
// of a visit also counts the visit, its device class and country, and a
// later view adds the time since the previous one to its visit's length.
// Concurrent calls share write transactions (bbolt Batch), so a busy site
// does not pay one disk sync per view.
func (db *DB) RecordPageView(v PageView) error {
	if err := v.validate(); err != nil {
		return err
	}
	now := db.now().UTC()
	return db.bolt.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAnalytics)
		days := map[string]*AnalyticsDay{}
		load := func(t time.Time) (*AnalyticsDay, error) {
			k := dayKey(t)
			if d, ok := days[k]; ok {
				return d, nil
			}
			d := newAnalyticsDay(k)
			if err := getJSON(b, []byte(k), &d); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			days[k] = &d
			return &d, nil
		}
		if err := ApplyPageView(load, v, now); err != nil {
			return err
		}
		for k, d := range days {
			if err := putJSON(b, []byte(k), d); err != nil {
				return err
			}
		}
		return nil
	})
}

// Analytics returns the aggregates of the UTC days from..to (inclusive)
// that have any, oldest first.
func (db *DB) Analytics(from, to time.Time) ([]AnalyticsDay, error) {
	lo, hi := dayKey(from), dayKey(to)
	var out []AnalyticsDay
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAnalytics).Cursor()
		for k, v := c.Seek([]byte(lo)); k != nil && string(k) <= hi; k, v = c.Next() {
			d := newAnalyticsDay(string(k))
			if err := decodeRecord(v, &d); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// ApplyPageView adds one validated view to the day aggregates load
// returns (creating them as needed; load(t) is the day of t), as of now.
// It is the whole aggregation rule, shared by every store.
func ApplyPageView(load func(t time.Time) (*AnalyticsDay, error), v PageView, now time.Time) error {
	today, err := load(now)
	if err != nil {
		return err
	}
	today.PageViews[v.Path]++
	if v.LastSeen.IsZero() {
		today.Visits++
		today.VisitLengths[visitLengthBucket(0)]++
		today.Devices[v.Device]++
		today.Countries[v.Country]++
	} else {
		first, err := load(v.VisitStart)
		if err != nil {
			return err
		}
		before, after := v.LastSeen.Sub(v.VisitStart), now.Sub(v.VisitStart)
		if gap := now.Sub(v.LastSeen); gap > 0 {
			first.VisitSeconds += int64(gap / time.Second)
		}
		if from, to := visitLengthBucket(before), visitLengthBucket(after); from != to && after > before {
			// Move the visit to the bucket of its new length. A visit
			// from before the counters existed (or a day already
			// removed by hand) has nothing to move.
			if first.VisitLengths[from] > 0 {
				first.VisitLengths[from]--
				first.VisitLengths[to]++
			}
		}
	}
	return nil
}

// Validate checks that v carries only aggregate dimensions.
func (v PageView) Validate() error { return v.validate() }

// NewAnalyticsDay is an empty aggregate for day (YYYY-MM-DD).
func NewAnalyticsDay(day string) AnalyticsDay { return newAnalyticsDay(day) }

// AnalyticsDayKey is the day (YYYY-MM-DD, UTC) aggregates of t go to.
func AnalyticsDayKey(t time.Time) string { return dayKey(t) }
