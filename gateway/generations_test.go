package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func decodeImages(t *testing.T, body []byte) imagesResponse {
	t.Helper()
	var r imagesResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("response is not the images shape: %v\n%s", err, body)
	}
	return r
}

func decodePNG(t *testing.T, data []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	return img
}

func TestGenerationURLThenHit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const body = `{"prompt":"a synthwave sunset over a grid","size":"512x512"}`

	resp, raw := e.postJSON(body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	if got := resp.Header.Get("Cache-Status"); got != "imagegate; fwd=miss; stored" {
		t.Errorf("first Cache-Status = %q", got)
	}
	first := decodeImages(t, raw)
	if len(first.Data) != 1 || first.Data[0].URL == "" || first.Data[0].B64JSON != "" {
		t.Fatalf("want one url image, got %+v", first.Data)
	}
	u, err := url.Parse(first.Data[0].URL)
	if err != nil || !strings.HasPrefix(u.Path, "/o/") || !strings.HasSuffix(u.Path, ".png") || !strings.HasPrefix(u.RawQuery, "verify=") {
		t.Fatalf("url %q is not a signed /o/<hash>.png link", first.Data[0].URL)
	}

	oresp, png512 := e.get(first.Data[0].URL)
	if oresp.StatusCode != 200 || oresp.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("object: status %d type %q", oresp.StatusCode, oresp.Header.Get("Content-Type"))
	}
	if b := decodePNG(t, png512).Bounds(); b.Dx() != 512 || b.Dy() != 512 {
		t.Errorf("image is %dx%d, want 512x512", b.Dx(), b.Dy())
	}
	gens := e.generations()

	resp, raw = e.postJSON(body)
	if got := resp.Header.Get("Cache-Status"); got != "imagegate; hit; detail=l1" {
		t.Errorf("second Cache-Status = %q, want a hit", got)
	}
	second := decodeImages(t, raw)
	if first.Data[0].Seed != second.Data[0].Seed || pathOf(t, first.Data[0].URL) != pathOf(t, second.Data[0].URL) {
		t.Errorf("hit returned a different image: %+v vs %+v", first.Data[0], second.Data[0])
	}
	if e.generations() != gens {
		t.Errorf("a hit reached the inference tier")
	}

	// b64_json returns the very bytes behind the URL.
	_, raw = e.postJSON(`{"prompt":"a synthwave sunset over a grid","size":"512x512","response_format":"b64_json"}`)
	b64 := decodeImages(t, raw)
	got, err := base64.StdEncoding.DecodeString(b64.Data[0].B64JSON)
	if err != nil || !bytes.Equal(got, png512) || b64.Data[0].URL != "" {
		t.Errorf("b64_json bytes differ from the object (err %v)", err)
	}
}

func pathOf(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

func TestNImagesHaveOwnSeedsAndEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, raw := e.postJSON(`{"prompt":"pixel city at night","size":"256x256","n":4,"seed":41}`)
	r := decodeImages(t, raw)
	if len(r.Data) != 4 {
		t.Fatalf("got %d images, want 4", len(r.Data))
	}
	paths := map[string]bool{}
	for i, d := range r.Data {
		if d.Seed != uint32(41+i) {
			t.Errorf("image %d seed %d, want %d", i, d.Seed, 41+i)
		}
		paths[pathOf(t, d.URL)] = true
	}
	if len(paths) != 4 {
		t.Errorf("4 images share objects: %v", paths)
	}
	if got := e.generations(); got != 4 {
		t.Errorf("tier generations = %v, want 4", got)
	}
	// The third image on its own is a hit on its own entry.
	resp, raw := e.postJSON(`{"prompt":"pixel city at night","size":"256x256","seed":43}`)
	if !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Errorf("seed 43 alone: Cache-Status %q, want hit", resp.Header.Get("Cache-Status"))
	}
	if one := decodeImages(t, raw); pathOf(t, one.Data[0].URL) != pathOf(t, r.Data[2].URL) {
		t.Errorf("seed 43 alone is not the third image of the n=4 request")
	}
}

func TestDerivedSeedIsStableAndPromptNormalised(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, raw := e.postJSON(`{"prompt":"Neon  sunset","size":"256x256"}`)
	a := decodeImages(t, raw)
	// Same prompt after NFC, trimming, whitespace collapsing and case
	// folding (retro ignores case): same key, so a hit.
	resp, raw := e.postJSON(`{"prompt":"  neon\tSUNSET ","size":"256x256"}`)
	b := decodeImages(t, raw)
	if !strings.Contains(resp.Header.Get("Cache-Status"), "hit") || a.Data[0].Seed != b.Data[0].Seed {
		t.Errorf("normalised prompt missed the cache: %q, seeds %d/%d", resp.Header.Get("Cache-Status"), a.Data[0].Seed, b.Data[0].Seed)
	}
	// Asking explicitly for the derived seed is the same request.
	resp, _ = e.postJSON(fmt.Sprintf(`{"prompt":"neon sunset","size":"256x256","seed":%d}`, a.Data[0].Seed))
	if !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Errorf("explicit derived seed missed: %q", resp.Header.Get("Cache-Status"))
	}
}

func TestNoCacheForcesRegeneration(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const body = `{"prompt":"vaporwave palms","size":"256x256"}`
	e.postJSON(body)
	before := e.generations()
	resp, _ := e.postJSON(body, "Cache-Control", "no-cache")
	if got := resp.Header.Get("Cache-Status"); !strings.HasPrefix(got, "imagegate; fwd=request") {
		t.Errorf("Cache-Status = %q, want fwd=request", got)
	}
	if e.generations() != before+1 {
		t.Errorf("no-cache did not reach the tier")
	}
}

func TestConcurrentIdenticalMissesGenerateOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const n = 100
	var wg sync.WaitGroup
	paths := make([]string, n)
	statuses := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, raw := e.postJSON(`{"prompt":"one hundred at once","size":"512x512"}`)
			if resp.StatusCode != 200 {
				t.Errorf("status %d: %s", resp.StatusCode, raw)
				return
			}
			paths[i] = pathOf(t, decodeImages(t, raw).Data[0].URL)
			statuses[i] = resp.Header.Get("Cache-Status")
		}()
	}
	wg.Wait()
	if got := e.generations(); got != 1 {
		t.Errorf("tier generations = %v, want exactly 1", got)
	}
	for i := range n {
		if paths[i] != paths[0] {
			t.Fatalf("request %d got %q, request 0 got %q", i, paths[i], paths[0])
		}
	}
	stored := 0
	for _, s := range statuses {
		if s == "imagegate; fwd=miss; stored" {
			stored++
		}
	}
	if stored != 1 {
		t.Errorf("%d responses claim to have generated and stored; want 1 (statuses %v)", stored, statuses)
	}
}

func TestRestartKeepsCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const body = `{"prompt":"persist me","size":"256x256"}`
	e := newEnv(t, envOptions{dir: dir})
	_, raw := e.postJSON(body)
	before := decodeImages(t, raw)
	e.close()

	e2 := newEnv(t, envOptions{dir: dir})
	resp, raw := e2.postJSON(body)
	if got := resp.Header.Get("Cache-Status"); got != "imagegate; hit; detail=l2" {
		t.Errorf("after restart Cache-Status = %q, want an L2 hit", got)
	}
	if e2.generations() != 0 {
		t.Errorf("restarted gateway regenerated")
	}
	after := decodeImages(t, raw)
	if pathOf(t, before.Data[0].URL) != pathOf(t, after.Data[0].URL) {
		t.Errorf("different object after restart")
	}
	// The signing key survived too: the old link still works.
	if resp, _ := e2.get(e2.url + pathAndQuery(t, before.Data[0].URL)); resp.StatusCode != 200 {
		t.Errorf("link issued before restart: status %d", resp.StatusCode)
	}
}

func pathAndQuery(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.RequestURI()
}

func TestBadGenerationRequestsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	long := strings.Repeat("a", 2001)
	cases := []struct {
		name, body string
		status     int
		field      string
	}{
		{"empty body", ``, 400, "request body"},
		{"malformed", `{"prompt":`, 400, "malformed"},
		{"trailing data", `{"prompt":"x"} {}`, 400, "trailing"},
		{"not an object", `["x"]`, 400, ""},
		{"unknown field", `{"prompt":"x","sise":"512x512"}`, 400, "sise"},
		{"missing prompt", `{"size":"512x512"}`, 400, "prompt"},
		{"blank prompt", `{"prompt":"   "}`, 400, "prompt"},
		{"prompt too long", `{"prompt":"` + long + `"}`, 400, "prompt"},
		{"negative prompt too long", `{"prompt":"x","negative_prompt":"` + long + `"}`, 400, "negative_prompt"},
		{"unknown size", `{"prompt":"x","size":"300x300"}`, 400, "size"},
		{"non-square size", `{"prompt":"x","size":"256x512"}`, 400, "size"},
		{"garbage size", `{"prompt":"x","size":"big"}`, 400, "size"},
		{"n zero", `{"prompt":"x","n":0}`, 400, "n:"},
		{"n five", `{"prompt":"x","n":5}`, 400, "n:"},
		{"n string", `{"prompt":"x","n":"2"}`, 400, "n:"},
		{"unknown format", `{"prompt":"x","response_format":"png"}`, 400, "response_format"},
		{"negative seed", `{"prompt":"x","seed":-1}`, 400, "seed"},
		{"huge seed", `{"prompt":"x","seed":4294967296}`, 400, "seed"},
		{"unknown style", `{"prompt":"x","style":"baroque"}`, 400, "style"},
		{"unknown model", `{"prompt":"x","model":"dall-e-3"}`, 400, "model"},
		{"steps", `{"prompt":"x","steps":1000}`, 400, "steps"},
		{"guidance", `{"prompt":"x","guidance":-1}`, 400, "guidance"},
		{"body too large", `{"prompt":"x","user":"` + strings.Repeat("u", 70<<10) + `"}`, 413, ""},
		{"invalid UTF-8 prompt", "{\"prompt\":\"cat \xff\xfe\"}", 400, "prompt"},
		{"invalid UTF-8 negative prompt", "{\"prompt\":\"cat\",\"negative_prompt\":\"\xc3\x28\"}", 400, "negative_prompt"},
		{"NUL prompt", `{"prompt":"\u0000\u0000"}`, 400, "prompt"},
		{"control-only prompt", `{"prompt":"\u0001\u001b\u007f\u0085"}`, 400, "prompt"},
		{"invisible-only prompt", `{"prompt":"\u200b\u2060\ufeff"}`, 400, "prompt"},
		{"control negative prompt", `{"prompt":"cat","negative_prompt":"\u0007"}`, 400, "negative_prompt"},
		{"duplicate prompt", `{"prompt":"cat","prompt":"explicit"}`, 400, "prompt"},
		{"duplicate in another case", `{"n":1,"N":4,"prompt":"cat"}`, 400, "N"},
		{"deep nesting", `{"prompt":` + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + `}`, 400, ""},
		{"deeper than encoding/json goes", `{"prompt":"x","user":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat("}", 10000) + `}`, 400, "malformed"},
		{"deep nesting in an ignored field", `{"prompt":"x","user":` + strings.Repeat(`{"a":`, 9000) + `1` + strings.Repeat("}", 9000) + `}`, 400, "user"},
		{"huge n", `{"prompt":"x","n":` + strings.Repeat("9", 5000) + `}`, 400, "n"},
		{"huge exponent", `{"prompt":"x","guidance":1e999999999}`, 400, "guidance"},
	}
	objects := e.objectCount()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, raw := e.postJSON(tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			var eb errorBody
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" || eb.Error.Code == "" {
				t.Fatalf("error body %s does not have the {error:{message,type,code}} shape", raw)
			}
			if !strings.Contains(eb.Error.Message, tc.field) {
				t.Errorf("message %q does not name %q", eb.Error.Message, tc.field)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("error response without security headers")
			}
		})
	}
	if e.generations() != 0 || e.objectCount() != objects || e.cache.Stats().Loads != 0 {
		t.Errorf("bad requests changed state: generations %v, objects %d→%d, loads %d",
			e.generations(), objects, e.objectCount(), e.cache.Stats().Loads)
	}
}

func TestErrorShapeAndHeadersEverywhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/nope", "/o/abc.png"} {
		resp, _ := e.get(e.url + path)
		for _, h := range []string{"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy", "Cross-Origin-Resource-Policy"} {
			if resp.Header.Get(h) == "" {
				t.Errorf("%s: missing %s", path, h)
			}
		}
	}
	resp, raw := e.get(e.url + "/nope")
	var eb errorBody
	if resp.StatusCode != 404 || json.Unmarshal(raw, &eb) != nil || eb.Error.Code != "not_found" {
		t.Errorf("unknown route: %d %s", resp.StatusCode, raw)
	}
	req, _ := http.NewRequest("GET", e.url+"/v1/images/generations", nil)
	resp, _ = e.do(req)
	if resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Errorf("GET on a POST route: %d", resp.StatusCode)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	if resp, _ := e.get(e.url + "/healthz"); resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
	if resp, raw := e.get(e.url + "/readyz"); resp.StatusCode != 200 {
		t.Errorf("readyz %d %s", resp.StatusCode, raw)
	}
	e.postJSON(`{"prompt":"metrics please","size":"256x256"}`)
	e.postJSON(`{"prompt":"metrics please","size":"256x256"}`)
	e.postJSON(`{"prompt":"x","size":"1x1"}`)
	// The figures are never on the gateway's own (public) listener.
	if resp, raw := e.get(e.url + "/metrics"); resp.StatusCode != 404 || strings.Contains(string(raw), "imagegate_") {
		t.Errorf("gateway /metrics: %d %.200s, want 404", resp.StatusCode, raw)
	}
	_, raw := e.get(e.metricsURL)
	text := string(raw)
	for _, want := range []string{
		`imagegate_http_requests_total{code="200",method="POST",route="/v1/images/generations"} 2`,
		`imagegate_http_requests_total{code="400",method="POST",route="/v1/images/generations"} 1`,
		`imagegate_cache_results_total{tier="l1"} 1`,
		`imagegate_cache_results_total{tier="miss"} 1`,
		`imagegate_cache_coalesced_total 0`,
		`imagegate_inference_request_duration_seconds`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "metrics please") {
		t.Errorf("a prompt leaked into metrics")
	}
}

func TestLogsHoldNoPrompts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	const marker = "zebracorn-marker-7731"
	e.postJSON(`{"prompt":"` + marker + ` sunset","size":"256x256"}`)
	e.postJSON(`{"prompt":"` + marker + ` sunset","size":"300x300"}`)
	e.postJSON(`{"prompt":"` + marker + `","negative_prompt":"` + marker + `","size":"256x256","n":2}`)
	e.edit(t, editOptions{prompt: marker, image: testPNG(t, 64, 64)})
	e.edit(t, editOptions{prompt: marker, image: []byte(marker)})
	if strings.Contains(e.logs.String(), marker) {
		t.Errorf("a prompt appeared in the logs:\n%s", e.logs.String())
	}
	_, raw := e.get(e.metricsURL)
	if strings.Contains(string(raw), marker) {
		t.Errorf("a prompt appeared in the metrics")
	}
}

func TestGenerationResponseCmp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, raw := e.postJSON(`{"prompt":"shape check","size":"256x256","seed":7}`)
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	keys := []string{}
	for k := range generic {
		keys = append(keys, k)
	}
	item := generic["data"].([]any)[0].(map[string]any)
	itemKeys := []string{}
	for k := range item {
		itemKeys = append(itemKeys, k)
	}
	slices.Sort(keys)
	slices.Sort(itemKeys)
	if diff := cmp.Diff([]string{"created", "data"}, keys); diff != "" {
		t.Errorf("top-level keys (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"seed", "url"}, itemKeys); diff != "" {
		t.Errorf("item keys (-want +got):\n%s", diff)
	}
}
