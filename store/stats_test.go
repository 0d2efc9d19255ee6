package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
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

// The export publishes only groups of at least k accounts and nothing of
// opted-out, suspended, erasing or deleted accounts. Each excluded kind of
// account is the only one using a distinctive style (in a group of k or
// more, so it would be published if it leaked) and also adds generations
// to the published group with a distinctive steps value.
func TestExportStatsIsKAnonymousAndExcludesOptOuts(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	var ids []string
	build := func(kind string, n int, setup func(Account)) {
		for i := range n {
			a := mustAccount(t, db, fmt.Sprintf("%s%d@example.com", kind, i))
			ids = append(ids, a.ID)
			setup(a)
		}
	}
	// 12 contributing accounts: 3 generations each in the public group,
	// one cached; one account also uses 60 steps once.
	first := true
	build("pub", 12, func(a Account) {
		statGen(t, db, a, 1, "synthwave", 30, 7, 1000, false)
		statGen(t, db, a, 2, "synthwave", 25, 7, 1000, false)
		statGen(t, db, a, 3, "synthwave", 30, 7, 5, true)
		if first {
			statGen(t, db, a, 4, "synthwave", 60, 7, 1000, false)
			first = false
		}
	})
	// A small group: 3 accounts.
	build("few", 3, func(a Account) { statGen(t, db, a, 1, "pixel", 30, 7, 900, false) })
	leak := func(a Account) {
		statGen(t, db, a, 1, "synthwave", 150, 7, 1000, false)
		statGen(t, db, a, 2, "synthwave", 150, 7, 1000, false)
	}
	build("optout", 11, func(a Account) {
		statGen(t, db, a, 10, "noir", 30, 7, 900, false)
		leak(a)
		if err := db.SetSettings(a.ID, Settings{NoModelImprovement: true}); err != nil {
			t.Fatal(err)
		}
	})
	build("suspended", 10, func(a Account) {
		statGen(t, db, a, 10, "vapor", 30, 7, 900, false)
		leak(a)
		if err := db.SetStatus(a.ID, StatusSuspended); err != nil {
			t.Fatal(err)
		}
	})
	build("erasing", 10, func(a Account) {
		statGen(t, db, a, 10, "glitch", 30, 7, 900, false)
		leak(a)
		if _, err := db.BeginErasure(a.ID, ErasureByUser); err != nil {
			t.Fatal(err)
		}
	})
	if len(ids) < 25 {
		t.Fatalf("only %d accounts", len(ids))
	}

	got, err := db.ExportStats(10)
	if err != nil {
		t.Fatal(err)
	}
	group := got.Groups[0]
	if lat := group.LatencyMS; lat == nil || lat.P50 < 1000 || lat.P99 > 1020 {
		t.Errorf("latency %+v, want all percentiles within 2%% above 1000 ms", lat)
	}
	got.Groups[0].LatencyMS = nil
	want := StatsExport{
		Schema: StatsSchema, Generated: "2026-11-23", K: 10, SuppressedGroups: 1,
		Groups: []StatsGroup{{
			Month: "2026-11", Model: "retro", ModelVersion: "1", Size: "512x512", Style: "synthwave",
			Accounts: 12, Generations: 37, CacheHitRate: 0.3243, EditRate: 0,
			Steps:    map[string]int{"21-30": 36, OtherBucket: 1},
			Guidance: map[string]int{"5-8": 37},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("export (-want +got):\n%s", diff)
	}

	raw, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append([]string{"noir", "vapor", "glitch", "pixel", "101-150", "51-100", "prompt-marker", "example.com", "acct_"}, ids...) {
		if strings.Contains(string(raw), s) {
			t.Errorf("the export mentions %q", s)
		}
	}
	if !fileContains(t, path, []byte("synthwave")) {
		t.Error("test setup: styles are not stored in the clear")
	}

	for _, k := range []int{-1, 0, 1, 9} {
		if _, err := db.ExportStats(k); err == nil {
			t.Errorf("k=%d accepted", k)
		}
	}
	// With k above the largest group, nothing is published.
	got, err = db.ExportStats(13)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Groups) != 0 || got.SuppressedGroups != 2 {
		t.Errorf("k=13: %d groups, %d suppressed", len(got.Groups), got.SuppressedGroups)
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
