package store

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MinStatsK is the smallest minimum group size an export may use.
const MinStatsK = 10

// StatsSchema names the format of StatsExport; it changes when a field's
// meaning does.
const StatsSchema = "imagegate.stats.v1"

// StatsExport is the model-improvement data set (promise C5): generation
// statistics aggregated per group, anonymized by construction.
//
//   - Only generation parameters and measurements are read: never prompts
//     (they stay sealed), images, seeds, object names or content keys.
//   - Accounts that opted out of model improvement, that are suspended or
//     being erased, and deleted ones contribute nothing.
//   - A group is published only when at least K distinct accounts
//     contributed to it; smaller groups are dropped whole (only their
//     number is reported). Within a published group, a steps or guidance
//     bucket used by fewer than K accounts is merged into "other".
//   - No account id appears, and no time finer than the month (the
//     export's own date is a day).
//
// No quality signal is exported: the store keeps no record of a user
// asking again for the same content (a repeated request renews the
// existing generation), so regeneration rates cannot be derived.
type StatsExport struct {
	Schema string `json:"schema"`
	// Generated is the UTC day of the export, YYYY-MM-DD.
	Generated string `json:"generated"`
	// K is the minimum number of distinct accounts behind every group and
	// every bucket shown.
	K      int          `json:"k"`
	Groups []StatsGroup `json:"groups"`
	// SuppressedGroups is how many groups had fewer than K accounts.
	SuppressedGroups int `json:"suppressed_groups"`
}

// StatsGroup aggregates the generations of one model version, size and
// style in one month.
type StatsGroup struct {
	// Month is the UTC month of creation, YYYY-MM.
	Month        string `json:"month"`
	Model        string `json:"model"`
	ModelVersion string `json:"model_version"`
	// Size is "<width>x<height>".
	Size  string `json:"size"`
	Style string `json:"style"`
	// Accounts is the number of distinct accounts (≥ K).
	Accounts    int `json:"accounts"`
	Generations int `json:"generations"`
	// CacheHitRate is the share of generations served from a cache tier.
	CacheHitRate float64 `json:"cache_hit_rate"`
	// EditRate is the share that were image-to-image.
	EditRate float64 `json:"edit_rate"`
	// LatencyMS are percentiles of the wait for generated (not cached)
	// images, within 2%; absent when every image came from a cache.
	LatencyMS *Percentiles `json:"latency_ms,omitempty"`
	// Steps and Guidance count generations per parameter bucket (see
	// stepsBuckets, guidanceBuckets); "other" gathers buckets used by
	// fewer than K accounts.
	Steps    map[string]int `json:"steps"`
	Guidance map[string]int `json:"guidance"`
}

// Percentiles of a distribution.
type Percentiles struct {
	P50 int64 `json:"p50"`
	P90 int64 `json:"p90"`
	P99 int64 `json:"p99"`
}

// stepsBuckets are the upper bounds (inclusive) of the steps buckets,
// named "1-10", "11-20", ..., "101-150".
var stepsBuckets = []int{10, 20, 30, 50, 100, 150}

// guidanceBuckets are the upper bounds (exclusive) of the guidance
// buckets, named "0-2", "2-5", ...; the last is "12+".
var guidanceBuckets = []float64{2, 5, 8, 12}

// OtherBucket gathers buckets used by fewer than K accounts.
const OtherBucket = "other"

func stepsBucket(steps int) string {
	lo := 1
	for _, hi := range stepsBuckets {
		if steps <= hi {
			return strconv.Itoa(lo) + "-" + strconv.Itoa(hi)
		}
		lo = hi + 1
	}
	return strconv.Itoa(lo) + "+"
}

func guidanceBucket(g float32) string {
	lo := 0.0
	for _, hi := range guidanceBuckets {
		if float64(g) < hi {
			return strconv.FormatFloat(lo, 'f', -1, 64) + "-" + strconv.FormatFloat(hi, 'f', -1, 64)
		}
		lo = hi
	}
	return strconv.FormatFloat(lo, 'f', -1, 64) + "+"
}

// statRecord is what an export reads of a stored generation: parameters
// and measurements only. The sealed prompts are not even decoded.
type statRecord struct {
	Created      time.Time `json:"created"`
	Model        string    `json:"model"`
	ModelVersion string    `json:"model_version"`
	Width        int       `json:"width"`
	Height       int       `json:"height"`
	Steps        int       `json:"steps"`
	Guidance     float32   `json:"guidance"`
	Style        string    `json:"style"`
	Edit         bool      `json:"edit"`
	LatencyMS    int64     `json:"latency_ms"`
	Cached       bool      `json:"cached"`
}

type statsKey struct{ month, model, version, size, style string }

// latencyStep is the ratio between latency histogram buckets: reported
// percentiles are within 2% of the true value.
const latencyStep = 1.02

type statsGroupAgg struct {
	accounts, gens, hits, edits int
	latency                     map[int]int // log-scale bucket → count
	misses                      int
	steps, guidance             map[string]*statsBucketAgg
}

type statsBucketAgg struct{ accounts, gens int }

// statsAccount is what one account touched, so each group and bucket
// counts it once.
type statsAccount struct {
	groups   map[statsKey]bool
	steps    map[statsKey]map[string]bool
	guidance map[statsKey]map[string]bool
}

// ExportStats aggregates every eligible generation into a StatsExport
// with minimum group size k (at least MinStatsK). It reads in batches,
// each in its own short transaction, and keeps memory proportional to
// the number of groups, not of generations.
func (db *DB) ExportStats(k int) (StatsExport, error) { return db.exportStats(k, 500) }

// exportStats reads batch generations per transaction.
func (db *DB) exportStats(k, batch int) (StatsExport, error) {
	if k < MinStatsK {
		return StatsExport{}, fmt.Errorf("store: k must be at least %d", MinStatsK)
	}
	sb := NewStatsBuilder()
	var cur string // the account being read
	var after []byte
	for {
		n := 0
		err := db.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketGenerations).Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && n < batch; k, v = c.Next() {
				n++
				after = append(after[:0], k...)
				id, _, ok := bytes.Cut(k, []byte{0})
				if !ok {
					return fmt.Errorf("store: bad generation key")
				}
				if string(id) != cur {
					sb.NextAccount()
					cur = string(id)
					if !statsEligible(tx, cur) {
						// Past every key of this account: "id\x01" sorts
						// after all "id\x00…".
						after = append(append(after[:0], id...), 1)
						return nil
					}
				}
				var r statRecord
				if err := decodeRecord(v, &r); err != nil {
					return err
				}
				sb.add(r)
			}
			return nil
		})
		if err != nil {
			return StatsExport{}, err
		}
		if n == 0 {
			break
		}
	}
	return sb.Export(k, db.now()), nil
}

// statsEligible reports whether an account may contribute to model
// improvement: it exists, is active, and has not opted out.
func statsEligible(tx *bolt.Tx, accountID string) bool {
	acct, err := getAccount(tx, accountID)
	return err == nil && acct.Status == StatusActive && !acct.Settings.NoModelImprovement
}

func addStat(groups map[statsKey]*statsGroupAgg, seen *statsAccount, r statRecord) {
	gk := statsKey{
		month: r.Created.UTC().Format("2006-01"), model: r.Model, version: r.ModelVersion,
		size: strconv.Itoa(r.Width) + "x" + strconv.Itoa(r.Height), style: r.Style,
	}
	a := groups[gk]
	if a == nil {
		a = &statsGroupAgg{latency: map[int]int{}, steps: map[string]*statsBucketAgg{}, guidance: map[string]*statsBucketAgg{}}
		groups[gk] = a
	}
	a.gens++
	if r.Cached {
		a.hits++
	} else {
		a.misses++
		a.latency[latencyBucket(r.LatencyMS)]++
	}
	if r.Edit {
		a.edits++
	}
	seen.groups[gk] = true
	for _, dim := range []struct {
		name string
		aggs map[string]*statsBucketAgg
		seen map[statsKey]map[string]bool
	}{
		{stepsBucket(r.Steps), a.steps, seen.steps},
		{guidanceBucket(r.Guidance), a.guidance, seen.guidance},
	} {
		b := dim.aggs[dim.name]
		if b == nil {
			b = &statsBucketAgg{}
			dim.aggs[dim.name] = b
		}
		b.gens++
		if dim.seen[gk] == nil {
			dim.seen[gk] = map[string]bool{}
		}
		dim.seen[gk][dim.name] = true
	}
}

// publicBuckets shows the buckets at least k accounts used and merges the
// others into OtherBucket.
func publicBuckets(aggs map[string]*statsBucketAgg, k int) map[string]int {
	out := map[string]int{}
	for name, b := range aggs {
		if b.accounts >= k {
			out[name] += b.gens
		} else {
			out[OtherBucket] += b.gens
		}
	}
	return out
}

func ratio(n, d int) float64 {
	if d == 0 {
		return 0
	}
	return math.Round(float64(n)/float64(d)*1e4) / 1e4
}

func latencyBucket(ms int64) int {
	if ms <= 0 {
		return 0
	}
	return int(math.Ceil(math.Log1p(float64(ms)) / math.Log(latencyStep)))
}

// percentile returns the upper bound of the histogram bucket holding the
// q-th quantile of n samples.
func percentile(hist map[int]int, n int, q float64) int64 {
	idx := make([]int, 0, len(hist))
	for i := range hist {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	rank := int(math.Ceil(q * float64(n)))
	seen := 0
	for _, i := range idx {
		if seen += hist[i]; seen >= rank {
			return int64(math.Round(math.Expm1(float64(i) * math.Log(latencyStep))))
		}
	}
	return 0
}

// StatsBuilder aggregates generations, account by account, into a
// k-anonymous StatsExport: the one aggregation rule every store feeds.
type StatsBuilder struct {
	groups map[statsKey]*statsGroupAgg
	seen   statsAccount
}

// NewStatsBuilder starts an empty aggregation, at the first account.
func NewStatsBuilder() *StatsBuilder {
	b := &StatsBuilder{groups: map[statsKey]*statsGroupAgg{}}
	b.NextAccount()
	return b
}

// NextAccount ends the current account: generations added next belong to
// another one. Only eligible accounts (active, not opted out of model
// improvement) may be fed.
func (b *StatsBuilder) NextAccount() {
	for gk := range b.seen.groups {
		b.groups[gk].accounts++
	}
	for gk, bs := range b.seen.steps {
		for name := range bs {
			b.groups[gk].steps[name].accounts++
		}
	}
	for gk, bs := range b.seen.guidance {
		for name := range bs {
			b.groups[gk].guidance[name].accounts++
		}
	}
	b.seen = statsAccount{groups: map[statsKey]bool{}, steps: map[statsKey]map[string]bool{}, guidance: map[statsKey]map[string]bool{}}
}

// Add counts one generation of the current account.
func (b *StatsBuilder) Add(g Generation) {
	b.add(statRecord{Created: g.Created, Model: g.Model, ModelVersion: g.ModelVersion, Width: g.Width, Height: g.Height,
		Steps: g.Steps, Guidance: g.Guidance, Style: g.Style, Edit: g.Edit, LatencyMS: g.LatencyMS, Cached: g.Cached})
}

func (b *StatsBuilder) add(r statRecord) { addStat(b.groups, &b.seen, r) }

// Export ends the last account and returns the groups with at least k
// accounts, dated now.
func (b *StatsBuilder) Export(k int, now time.Time) StatsExport {
	b.NextAccount()
	groups := b.groups
	out := StatsExport{Schema: StatsSchema, Generated: now.UTC().Format(time.DateOnly), K: k, Groups: []StatsGroup{}}
	for gk, a := range groups {
		if a.accounts < k {
			out.SuppressedGroups++
			continue
		}
		g := StatsGroup{
			Month: gk.month, Model: gk.model, ModelVersion: gk.version, Size: gk.size, Style: gk.style,
			Accounts: a.accounts, Generations: a.gens,
			CacheHitRate: ratio(a.hits, a.gens), EditRate: ratio(a.edits, a.gens),
			Steps: publicBuckets(a.steps, k), Guidance: publicBuckets(a.guidance, k),
		}
		if a.misses > 0 {
			g.LatencyMS = &Percentiles{P50: percentile(a.latency, a.misses, 0.50), P90: percentile(a.latency, a.misses, 0.90), P99: percentile(a.latency, a.misses, 0.99)}
		}
		out.Groups = append(out.Groups, g)
	}
	slices.SortFunc(out.Groups, func(a, b StatsGroup) int {
		return cmp.Or(cmp.Compare(a.Month, b.Month), cmp.Compare(a.Model, b.Model), cmp.Compare(a.ModelVersion, b.ModelVersion),
			cmp.Compare(a.Size, b.Size), cmp.Compare(a.Style, b.Style))
	})
	return out
}

// StatsEligible reports whether an account's generations may be counted.
func StatsEligible(a Account) bool {
	return a.Status == StatusActive && !a.Settings.NoModelImprovement
}
