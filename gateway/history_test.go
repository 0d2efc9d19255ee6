package gateway

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// A hit recorded while the gateway shuts down is written by the request
// itself, not sent on the closed queue (which would panic) or dropped.
func TestHistoryAfterCloseIsWrittenNotDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, acct := e.signedIn("late@example.com")
	hash, ext := a.generate(`{"prompt":"recorded at shutdown","size":"256x256"}`)
	e.gw.history.close()
	e.gw.history.close() // idempotent: Shutdown closes it again

	it := historyItem{accountID: acct.ID, retention: 24 * time.Hour, gen: store.Generation{
		Prompt: "a hit during shutdown", Model: "retro", ModelVersion: "1", Width: 256, Height: 256,
		Object: hash, Ext: ext, ContentKey: strings.Repeat("c", 64), Cached: true,
	}}
	e.gw.history.enqueue(it)
	var prompts []string
	if err := e.db.Generations(acct.ID, func(g store.Generation) error {
		prompts = append(prompts, g.Prompt)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(prompts) != 2 || !strings.Contains(strings.Join(prompts, "|"), "a hit during shutdown") {
		t.Errorf("history after close: %q, want the generation and the late hit", prompts)
	}
}

// FuzzHistoryQuery feeds arbitrary ?limit= and ?before= values to the
// history route's parser: nothing panics, refusals are clean 400s, and
// what it accepts is within the contract.
func FuzzHistoryQuery(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""}, {"50", ""}, {"1", "gen_0000000000000001000000001abcdefgh"}, {"100", "x"},
		{"0", ""}, {"101", ""}, {"-1", ""}, {"1e2", ""}, {"99999999999999999999999", ""}, {" 5", ""},
		{"5", "\x00"}, {"5", "\xff"}, {"5", strings.Repeat("g", 65)}, {"+5", ""}, {"0x10", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, limit, before string) {
		n, b, err := parseHistoryQuery(limit, before)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status != 400 || ae.Msg == "" {
				t.Fatalf("refusal %v is not a clean 400", err)
			}
			return
		}
		if n < 1 || n > 100 || b != before || len(b) > 64 {
			t.Fatalf("accepted limit %d before %q from %q %q", n, b, limit, before)
		}
	})
}
