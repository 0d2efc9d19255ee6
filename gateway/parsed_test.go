package gateway

import (
	"strings"
	"testing"

	"github.com/imagegate/imagegate/inference"
)

// TestParsedGenerationsKeepOnlyWhatTheBodyDecides pins the parsed-body
// memory of the hit path: a repeated public body is answered from the
// parse kept for it, with the response and headers a fresh parse gives;
// private bodies (keys scoped to the requester) are never kept; and a
// parse made against another model catalogue is not used.
func TestParsedGenerationsKeepOnlyWhatTheBodyDecides(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const body = `{"prompt":"a kept parse of a lighthouse","size":"256x256","n":2}`
	resp, first := e.postJSON(body)
	if resp.StatusCode != 200 {
		t.Fatalf("first: %d %s", resp.StatusCode, first)
	}
	if n := e.gw.parsed.len(); n != 1 {
		t.Fatalf("%d parses kept after one public body, want 1", n)
	}
	resp, again := e.postJSON(body)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Status") != "imagegate; hit; detail=l1" {
		t.Fatalf("repeat: %d, Cache-Status %q: %s", resp.StatusCode, resp.Header.Get("Cache-Status"), again)
	}
	if resp.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("repeat headers: %v", resp.Header)
	}
	a, b := decodeImages(t, first), decodeImages(t, again)
	if len(a.Data) != 2 || len(b.Data) != 2 {
		t.Fatalf("images: %d then %d, want 2", len(a.Data), len(b.Data))
	}
	for i := range a.Data {
		if a.Data[i].Seed != b.Data[i].Seed || objectPath(a.Data[i].URL) != objectPath(b.Data[i].URL) {
			t.Errorf("image %d: %+v then %+v", i, a.Data[i], b.Data[i])
		}
		if resp, img := e.get(b.Data[i].URL); resp.StatusCode != 200 || len(img) == 0 {
			t.Errorf("image %d link from the kept parse: %d", i, resp.StatusCode)
		}
	}

	if resp, out := e.postJSON(`{"prompt":"a private lighthouse","size":"256x256","private":true}`); resp.StatusCode != 200 {
		t.Fatalf("private: %d %s", resp.StatusCode, out)
	}
	if n := e.gw.parsed.len(); n != 1 {
		t.Errorf("%d parses kept after a private body, want still 1", n)
	}

	// The catalogue changes (the tier says the model is at another
	// version): the kept parse, keyed under the old version, must not
	// answer. The tier still runs the old version, so the gateway refuses
	// rather than serving the old key's hit.
	var infos []inference.ModelInfo
	for _, m := range e.gw.catalog.list() {
		m.Version += "-next"
		infos = append(infos, m.ModelInfo)
	}
	e.gw.catalog.set(infos)
	if resp, out := e.postJSON(body); resp.StatusCode == 200 || resp.Header.Get("Cache-Status") == "imagegate; hit; detail=l1" {
		t.Errorf("after a catalogue change: %d, Cache-Status %q (a parse of the old catalogue answered): %s",
			resp.StatusCode, resp.Header.Get("Cache-Status"), out)
	}
}

// objectPath is a link's path, without its signature.
func objectPath(link string) string {
	p, _, _ := strings.Cut(link, "?")
	return p
}
