package gateway

import (
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
