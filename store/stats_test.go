package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// statGen records a generation with the given parameters for acct.
func statGen(t *testing.T, db *DB, acct Account, n int, style string, steps int, guidance float32, latency int64, cached bool) {
	t.Helper()
	g := Generation{
		Prompt: fmt.Sprintf("prompt-marker-%s-%d", acct.ID, n), Model: "retro", ModelVersion: "1",
		Width: 512, Height: 512, Seed: uint64(n), Steps: steps, Guidance: guidance, Style: style,
		Object: fmt.Sprintf("%064x", rand.Uint64()), Ext: "png", ContentKey: fmt.Sprintf("ck-%s-%d", acct.ID, n),
		LatencyMS: latency, Cached: cached,
	}
	if _, _, err := db.RecordGeneration(acct.ID, g, 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
}

// Random histories, checked against an independent count: every group
// published has at least k contributing accounts, carries exactly their
// generations, and every group with k or more is published.
func TestExportStatsMatchesIndependentCount(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	rng := rand.New(rand.NewPCG(1, 2))
	styles := []string{"a", "b", "c", "d"}
	type key struct{ month, style string }
	accounts := map[key]map[string]bool{}
	gens := map[key]int{}
	var all []Account
	for i := range 60 {
		all = append(all, mustAccount(t, db, fmt.Sprintf("r%d@example.com", i)))
	}
	for month := range 2 {
		for i, a := range all {
			for n := range rng.IntN(4) {
				style := styles[min(rng.IntN(20)/6, 3)] // a, b, c 30% each, d 10%: rare
				statGen(t, db, a, month*10+n, style, 1+rng.IntN(150), float32(rng.IntN(30)), int64(rng.IntN(5000)), rng.IntN(3) == 0)
				if i%7 != 0 { // every seventh account opts out below
					k := key{clock.Now().Format("2006-01"), style}
					if accounts[k] == nil {
						accounts[k] = map[string]bool{}
					}
					accounts[k][a.ID] = true
					gens[k]++
				}
			}
		}
		clock.Advance(31 * 24 * time.Hour)
	}
	for i, a := range all {
		if i%7 == 0 {
			if err := db.SetSettings(a.ID, Settings{NoModelImprovement: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const k = 10
	got, err := db.ExportStats(k)
	if err != nil {
		t.Fatal(err)
	}
	// Small batches split accounts across transactions; nothing changes.
	small, err := db.exportStats(k, 7)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, small); diff != "" {
		t.Errorf("batches of 7 (-500 +7):\n%s", diff)
	}
	published := map[key]bool{}
	for _, g := range got.Groups {
		kk := key{g.Month, g.Style}
		published[kk] = true
		if g.Accounts < k || g.Accounts != len(accounts[kk]) || g.Generations != gens[kk] {
			t.Errorf("group %v: %d accounts %d generations, want %d and %d (k=%d)", kk, g.Accounts, g.Generations, len(accounts[kk]), gens[kk], k)
		}
		sum := 0
		for _, n := range g.Steps {
			sum += n
		}
		if sum != g.Generations {
			t.Errorf("group %v: steps buckets sum to %d of %d", kk, sum, g.Generations)
		}
	}
	suppressed := 0
	for kk, accts := range accounts {
		if len(accts) >= k && !published[kk] {
			t.Errorf("group %v with %d accounts is missing", kk, len(accts))
		}
		if len(accts) < k {
			suppressed++
		}
	}
	if suppressed == 0 || len(got.Groups) == 0 {
		t.Fatalf("test data: %d groups published, %d suppressed: both kinds are needed", len(got.Groups), suppressed)
	}
	if suppressed != got.SuppressedGroups {
		t.Errorf("suppressed %d, want %d", got.SuppressedGroups, suppressed)
	}
}

func TestStatsBuckets(t *testing.T) {
	t.Parallel()
	steps := map[int]string{1: "1-10", 10: "1-10", 11: "11-20", 30: "21-30", 31: "31-50", 100: "51-100", 150: "101-150", 151: "151+"}
	for in, want := range steps {
		if got := stepsBucket(in); got != want {
			t.Errorf("stepsBucket(%d) = %q, want %q", in, got, want)
		}
	}
	guidance := map[float32]string{0: "0-2", 1.99: "0-2", 2: "2-5", 7.5: "5-8", 11.9: "8-12", 12: "12+", 30: "12+"}
	for in, want := range guidance {
		if got := guidanceBucket(in); got != want {
			t.Errorf("guidanceBucket(%v) = %q, want %q", in, got, want)
		}
	}
	hist := map[int]int{}
	for _, ms := range []int64{0, 10, 100, 1000, 10000} {
		hist[latencyBucket(ms)]++
	}
	for q, want := range map[float64]int64{0.2: 0, 0.5: 100, 1: 10000} {
		got := percentile(hist, 5, q)
		if got < want || float64(got) > float64(want)*latencyStep+1 {
			t.Errorf("percentile %v = %d, want %d within 2%%", q, got, want)
		}
	}
}
