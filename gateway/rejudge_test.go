package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestCachedOutputsAreJudgedAgainUnderANewPolicy caches an output under
// one content policy, restarts the gateway on the same data with an image
// classifier added, and asks again: the hit is judged before it is
// served, refused when the classifier flags it, and, when it passes,
// judged only once.
func TestCachedOutputsAreJudgedAgainUnderANewPolicy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const body = `{"prompt":"a red barn at dawn","size":"256x256"}`
	first := newEnv(t, envOptions{dir: dir})
	if resp, raw := first.postJSON(body); resp.StatusCode != 200 {
		t.Fatalf("first generation: %d %s", resp.StatusCode, raw)
	}
	first.close()

	// A classifier that flags every image: the cached output is refused.
	flagging := newFakeClassifier(t, "classifier-token", "violence")
	strict := newEnv(t, envOptions{dir: dir, cfg: Config{Moderation: ModerationConfig{Classifier: flagging.config(false)}}})
	resp, raw := strict.postJSON(body)
	var eb errorBody
	json.Unmarshal(raw, &eb)
	if resp.StatusCode != 400 || eb.Error.Code != "content_policy_violation" {
		t.Fatalf("a cached output flagged by the new policy: %d %s, want a 400 content_policy_violation", resp.StatusCode, raw)
	}
	if _, images := flagging.seen(); len(images) != 1 {
		t.Errorf("the classifier saw %d images, want the cached one", len(images))
	}
	if strict.generations() != 0 {
		t.Errorf("the refused hit reached the GPU")
	}
	strict.close()

	// A classifier that passes it: served from the cache, judged once.
	passing := newFakeClassifier(t, "classifier-token")
	lenient := newEnv(t, envOptions{dir: dir, cfg: Config{Moderation: ModerationConfig{Classifier: passing.config(false)}}})
	for i := range 2 {
		resp, raw := lenient.postJSON(body)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
			t.Fatalf("request %d: %d %q %s", i, resp.StatusCode, resp.Header.Get("Cache-Status"), raw)
		}
	}
	if _, images := passing.seen(); len(images) != 1 {
		t.Errorf("the classifier saw %d images over two hits, want 1: the verdict was not recorded", len(images))
	}
	if lenient.generations() != 0 {
		t.Errorf("a hit was generated again")
	}
	lenient.close()

	// A new classifier that cannot answer, failing open: the hit is served
	// but not recorded as judged, so the next hit asks again.
	down := newFakeClassifier(t, "classifier-token")
	down.status = http.StatusInternalServerError
	open := newEnv(t, envOptions{dir: dir, cfg: Config{Moderation: ModerationConfig{Classifier: down.config(true)}}})
	for i := range 2 {
		if resp, raw := open.postJSON(body); resp.StatusCode != 200 {
			t.Fatalf("fail-open request %d: %d %s", i, resp.StatusCode, raw)
		}
	}
	if _, images := down.seen(); len(images) != 2 {
		t.Errorf("the unheard classifier was asked %d times over two hits, want 2: a partial verdict was recorded", len(images))
	}
}
