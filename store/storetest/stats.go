package storetest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// The export publishes only groups of at least k accounts and nothing of
// opted-out, suspended, erasing or deleted accounts. Each excluded kind of
// account is the only one using a distinctive style (in a group of k or
// more, so it would be published if it leaked) and also adds generations
// to the published group with a distinctive steps value.
func testExportStatsIsKAnonymousAndExcludesOptOuts(t *testing.T, h Harness) {
	db, _ := h.open(t)
	var ids []string
	build := func(kind string, n int, setup func(store.Account)) {
		for i := range n {
			a := mustAccount(t, db, fmt.Sprintf("%s%d@example.com", kind, i))
			ids = append(ids, a.ID)
			setup(a)
		}
	}
	// 12 contributing accounts: 3 generations each in the public group,
	// one cached; one account also uses 60 steps once.
	first := true
	build("pub", 12, func(a store.Account) {
		statGen(t, db, a, 1, "synthwave", 30, 7, 1000, false)
		statGen(t, db, a, 2, "synthwave", 25, 7, 1000, false)
		statGen(t, db, a, 3, "synthwave", 30, 7, 5, true)
		if first {
			statGen(t, db, a, 4, "synthwave", 60, 7, 1000, false)
			first = false
		}
	})
	// A small group: 3 accounts.
	build("few", 3, func(a store.Account) { statGen(t, db, a, 1, "pixel", 30, 7, 900, false) })
	leak := func(a store.Account) {
		statGen(t, db, a, 1, "synthwave", 150, 7, 1000, false)
		statGen(t, db, a, 2, "synthwave", 150, 7, 1000, false)
	}
	build("optout", 11, func(a store.Account) {
		statGen(t, db, a, 10, "noir", 30, 7, 900, false)
		leak(a)
		if err := db.SetSettings(a.ID, store.Settings{NoModelImprovement: true}); err != nil {
			t.Fatal(err)
		}
	})
	build("suspended", 10, func(a store.Account) {
		statGen(t, db, a, 10, "vapor", 30, 7, 900, false)
		leak(a)
		if err := db.SetStatus(a.ID, store.StatusSuspended); err != nil {
			t.Fatal(err)
		}
	})
	build("erasing", 10, func(a store.Account) {
		statGen(t, db, a, 10, "glitch", 30, 7, 900, false)
		leak(a)
		if _, err := db.BeginErasure(a.ID, store.ErasureByUser); err != nil {
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
	want := store.StatsExport{
		Schema: store.StatsSchema, Generated: "2026-11-23", K: 10, SuppressedGroups: 1,
		Groups: []store.StatsGroup{{
			Month: "2026-11", Model: "retro", ModelVersion: "1", Size: "512x512", Style: "synthwave",
			Accounts: 12, Generations: 37, CacheHitRate: 0.3243, EditRate: 0,
			Steps:    map[string]int{"21-30": 36, store.OtherBucket: 1},
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
	if !h.Contains(t, db, []byte("synthwave")) {
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

// statGen records a generation with the given parameters for acct.
func statGen(t *testing.T, db Store, acct store.Account, n int, style string, steps int, guidance float32, latency int64, cached bool) {
	t.Helper()
	g := store.Generation{
		Prompt: fmt.Sprintf("prompt-marker-%s-%d", acct.ID, n), Model: "retro", ModelVersion: "1",
		Width: 512, Height: 512, Seed: uint64(n), Steps: steps, Guidance: guidance, Style: style,
		Object: fmt.Sprintf("%064x", rand.Uint64()), Ext: "png", ContentKey: fmt.Sprintf("ck-%s-%d", acct.ID, n),
		LatencyMS: latency, Cached: cached,
	}
	if _, _, err := db.RecordGeneration(acct.ID, g, 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
}
