package gateway

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/store"
)

// reapRaceEnv makes an output whose only reference has just been dropped:
// it is queued for deletion but still in this node's tiers, so the next
// request for it is a hit. It returns the prompt's body and the output's
// hash.
func reapRaceEnv(t *testing.T, prompt string) (*env, string, string) {
	t.Helper()
	e := newEnv(t, envOptions{cfg: Config{LifecycleInterval: time.Hour}})
	acct := consentAccount(t, e, "reaped@example.com")
	b := newConsentBrowser(t)
	consentSignIn(t, e, b, acct)
	body := `{"prompt":"` + prompt + `","size":"256x256"}`
	resp, raw := b.do("POST", e.url+"/v1/images/generations", body, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != 200 {
		t.Fatalf("generation: %d %s", resp.StatusCode, raw)
	}
	hash := outputHash(t, raw)
	var gens []store.Generation
	if err := e.db.Generations(acct.ID, func(g store.Generation) error { gens = append(gens, g); return nil }); err != nil || len(gens) != 1 {
		t.Fatalf("generations %v %v", gens, err)
	}
	if err := e.db.DeleteGeneration(acct.ID, gens[0].ID); err != nil {
		t.Fatal(err)
	}
	if used, _ := e.db.ObjectReferenced(hash); used {
		t.Fatal("the output is still referenced: nothing to race")
	}
	return e, body, hash
}

func outputHash(t *testing.T, raw []byte) string {
	t.Helper()
	var r imagesResponse
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Data) != 1 {
		t.Fatalf("response %s: %v", raw, err)
	}
	u, err := url.Parse(r.Data[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(u.Path, "/o/"), ".png")
}

// checkServed fails t unless the link in raw serves an image whose
// output is referenced in the store.
func checkServed(t *testing.T, e *env, raw []byte) {
	t.Helper()
	var r imagesResponse
	json.Unmarshal(raw, &r)
	if resp, body := e.get(r.Data[0].URL); resp.StatusCode != 200 || len(body) == 0 {
		t.Errorf("the link handed out answers %d after the reap", resp.StatusCode)
	}
	if used, err := e.db.ObjectReferenced(outputHash(t, raw)); err != nil || !used {
		t.Errorf("the output handed out is not referenced: %v %v", used, err)
	}
}

// TestReferenceJustBeforeTheClaimWins forces a hit on a queued output
// right before the reaper claims it: the reference reaches the store
// first, so the claim fails and the output stays, still served.
func TestReferenceJustBeforeTheClaimWins(t *testing.T) {
	t.Parallel()
	e, body, hash := reapRaceEnv(t, "reference before the claim")
	var raw []byte
	hook := func(step, h string) {
		if step == reapStepBeforeClaim && h == hash && raw == nil {
			r, b := e.postJSON(body)
			if r.StatusCode != 200 || !strings.Contains(r.Header.Get("Cache-Status"), "hit") {
				t.Errorf("racing request: %d %q", r.StatusCode, r.Header.Get("Cache-Status"))
			}
			raw = b
		}
	}
	e.gw.life.hook.Store(&hook)
	gens := e.generations()
	if err := e.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if raw == nil {
		t.Fatal("the reaper never reached the output")
	}
	checkServed(t, e, raw)
	if e.generations() != gens {
		t.Errorf("the output was generated again although the reference won")
	}
	if d, _ := e.db.DoomedObjects("", 10); len(d) != 0 {
		t.Errorf("still queued for deletion: %+v", d)
	}
}

// TestReferenceDuringTheDeletionRegenerates forces a hit on an output the
// reaper has claimed and is deleting: the request waits for the deletion,
// learns the bytes are gone, and generates them again, so the link it
// hands out works and the output is referenced.
func TestReferenceDuringTheDeletionRegenerates(t *testing.T) {
	t.Parallel()
	e, body, hash := reapRaceEnv(t, "reference during the deletion")
	type answer struct {
		status int
		cache  string
		raw    []byte
	}
	done := make(chan answer, 1)
	referencing := make(chan struct{}, 1)
	hook := func(step, h string) {
		if h != hash {
			return
		}
		switch step {
		case reapStepClaimed:
			go func() {
				r, b := e.postJSON(body)
				done <- answer{r.StatusCode, r.Header.Get("Cache-Status"), b}
			}()
			<-referencing // the request hit and is about to reference
		case reapStepReferencing:
			referencing <- struct{}{}
		}
	}
	e.gw.life.hook.Store(&hook)
	gens := e.generations()
	if err := e.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.status != 200 {
		t.Fatalf("racing request: %d %s", a.status, a.raw)
	}
	if !strings.Contains(a.cache, "fwd=") || e.generations() != gens+1 {
		t.Errorf("the request was not generated again: Cache-Status %q, generations %v→%v", a.cache, gens, e.generations())
	}
	checkServed(t, e, a.raw)
	// A later pass leaves it alone: it is referenced.
	if err := e.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkServed(t, e, a.raw)
}
