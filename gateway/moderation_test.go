package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/store"
)

// seriesValue reads one series of a counter in reg, matched by its label
// values in the order of the label names (as Gather sorts them).
func seriesValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			lp := m.GetLabel()
			if len(lp) != len(labels) {
				continue
			}
			for i, l := range lp {
				if l.GetValue() != labels[i] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
		return 0
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

func apiErrorOf(t *testing.T, body []byte) errorDetail {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("not an error body: %s", body)
	}
	return b.Error
}

// moderationEnv is a gateway whose policy lists "forbidden*" as sexual,
// with an admin token.
func moderationEnv(t *testing.T, classifier ClassifierConfig) *env {
	t.Helper()
	return newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken, Moderation: ModerationConfig{
		Rules:      []ModerationRule{{Category: "sexual", Terms: []string{"forbidden*"}}},
		Classifier: classifier,
	}}})
}

func TestModerationBlocksPromptBeforeInference(t *testing.T) {
	t.Parallel()
	e := moderationEnv(t, ClassifierConfig{})
	b, acct := e.signedIn("careful@example.com")
	want(t, b.call("POST", "/v1/images/generations", `{"prompt":"a harmless lighthouse","size":"256x256"}`, nil), 200)
	gens, objects := e.generations(), e.objectCount()
	before, err := e.db.Account(acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if gens != 1 || objects == 0 || before.Credits >= 50 {
		t.Fatalf("the allowed generation did not register: %v generations, %d objects, %d credits", gens, objects, before.Credits)
	}

	for _, who := range []struct {
		name string
		call func(body string) (int, []byte)
	}{
		{"account", func(body string) (int, []byte) {
			resp := b.call("POST", "/v1/images/generations", body, nil)
			raw, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, raw
		}},
		{"anonymous", func(body string) (int, []byte) {
			resp, raw := e.postJSON(body)
			return resp.StatusCode, raw
		}},
	} {
		status, raw := who.call(`{"prompt":"a FORBIDDEN-marker-7731 thing","negative_prompt":"blur","n":4,"size":"256x256"}`)
		if status != 400 {
			t.Fatalf("%s: status %d, want 400: %s", who.name, status, raw)
		}
		got := apiErrorOf(t, raw)
		if got.Code != "content_policy_violation" || got.Type != "invalid_request_error" || !strings.Contains(got.Message, "(sexual)") {
			t.Errorf("%s: error %+v, want content_policy_violation naming sexual", who.name, got)
		}
		if strings.Contains(strings.ToLower(string(raw)), "marker-7731") {
			t.Errorf("%s: the refusal echoes the prompt: %s", who.name, raw)
		}
	}
	after, _ := e.db.Account(acct.ID)
	if e.generations() != gens || e.objectCount() != objects || after.Credits != before.Credits || after.Held != 0 {
		t.Errorf("a refused prompt had effects: generations %v→%v, objects %d→%d, credits %d→%d (held %d)",
			gens, e.generations(), objects, e.objectCount(), before.Credits, after.Credits, after.Held)
	}
	if after.Status != store.StatusActive {
		t.Errorf("a sexual-category refusal suspended the account")
	}
	if n := e.db.GenerationCount(acct.ID); n != 1 {
		t.Errorf("history holds %d generations, want the allowed one only", n)
	}
	if list, _ := e.db.Reports(); len(list) != 0 {
		t.Errorf("a non-CSAM refusal was reported: %+v", list)
	}
	if got := seriesValue(t, e.gwReg, "imagegate_moderation_blocked_total", "sexual", "prompt"); got != 2 {
		t.Errorf("blocked{sexual,prompt} = %v, want 2", got)
	}
	if strings.Contains(strings.ToLower(e.logs.String()), "marker-7731") {
		t.Errorf("the prompt reached the logs")
	}
}

// adminReports lists the reports through the admin API.
func (e *env) adminReports(token string) (int, []reportJSON) {
	e.t.Helper()
	resp, raw := e.get(e.url+"/v1/admin/reports", "Authorization", "Bearer "+token)
	var out struct {
		Reports []reportJSON `json:"reports"`
	}
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("reports: %v in %s", err, raw)
		}
	}
	return resp.StatusCode, out.Reports
}

func TestModerationCSAMPromptReportsAndSuspends(t *testing.T) {
	t.Parallel()
	e := moderationEnv(t, ClassifierConfig{})
	b, acct := e.signedIn("reported@example.com")
	want(t, b.call("POST", "/v1/images/generations", `{"prompt":"an earlier harmless prompt","size":"256x256"}`, nil), 200)
	gens, objects := e.generations(), e.objectCount()

	resp := b.call("POST", "/v1/images/generations", `{"prompt":"loli marker-csam-5521","negative_prompt":"marker-negative-5521","seed":42,"size":"256x256"}`, nil)
	want(t, resp, 400)
	raw, _ := io.ReadAll(resp.Body)
	if got := apiErrorOf(t, raw); got.Code != "content_policy_violation" || !strings.Contains(got.Message, "sexual_minors") {
		t.Errorf("refusal %+v", got)
	}
	if e.generations() != gens || e.objectCount() != objects {
		t.Errorf("the refused prompt reached the GPU or the object store")
	}

	// The account is suspended: its session no longer works.
	want(t, b.call("GET", "/v1/account", "", nil), 401)
	if a, _ := e.db.Account(acct.ID); a.Status != store.StatusSuspended {
		t.Errorf("account status %q, want suspended", a.Status)
	}
	events, _ := e.db.SecurityEvents(acct.ID)
	if !slices.ContainsFunc(events, func(ev store.SecurityEvent) bool { return ev.Kind == moderation.EventAccountSuspended }) {
		t.Errorf("no %s event in the security log: %+v", moderation.EventAccountSuspended, events)
	}

	// A visitor without an account is reported by address.
	if resp, _ := e.postJSON(`{"prompt":"child porn marker-anon-5521","size":"256x256"}`); resp.StatusCode != 400 {
		t.Fatalf("anonymous CSAM prompt: %d", resp.StatusCode)
	}

	if status, _ := e.adminReports("wrong-admin-token-0000000"); status != 401 {
		t.Errorf("reports with a wrong token: %d, want 401", status)
	}
	status, reports := e.adminReports(testAdminToken)
	if status != 200 || len(reports) != 2 {
		t.Fatalf("reports: %d, %d reports", status, len(reports))
	}
	anon, mine := reports[0], reports[1] // newest first
	wantMine := reportJSON{
		ID: mine.ID, Created: mine.Created, HoldUntil: mine.Created.Add(365 * 24 * time.Hour), DaysLeft: 365,
		Category: "sexual_minors", Source: store.ReportFromPrompt, Account: acct.ID,
		Prompt: "loli marker-csam-5521", NegativePrompt: "marker-negative-5521", Params: mine.Params,
	}
	if diff := cmp.Diff(wantMine, mine); diff != "" {
		t.Errorf("account report (-want +got):\n%s", diff)
	}
	if mine.Params["seed"] != "42" || mine.Params["size"] != "256x256" || mine.Params["model"] == "" {
		t.Errorf("report parameters %v", mine.Params)
	}
	if anon.Account != "anonymous" || anon.ClientIP != "127.0.0.1" || anon.Prompt != "child porn marker-anon-5521" {
		t.Errorf("anonymous report %+v, want account anonymous with the client address", anon)
	}
	if got := seriesValue(t, e.gwReg, "imagegate_moderation_blocked_total", "sexual_minors", "prompt"); got != 2 {
		t.Errorf("blocked{sexual_minors,prompt} = %v, want 2", got)
	}

	// Erasure removes the account and its history, never the report.
	if _, err := e.db.BeginErasure(acct.ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		var err error
		if done, err = e.db.EraseStep(acct.ID, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.db.FinishErasure(acct.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Account(acct.ID); err == nil {
		t.Fatal("the account survived erasure")
	}
	_, after := e.adminReports(testAdminToken)
	if diff := cmp.Diff(reports, after); diff != "" {
		t.Errorf("reports changed by erasure (-before +after):\n%s", diff)
	}
	for _, path := range []string{"/v1/admin/reports/rpt_nope/image", "/v1/admin/reports/" + mine.ID + "/image", "/v1/admin/reports/..%2f/image"} {
		if resp, _ := e.get(e.url+path, "Authorization", "Bearer "+testAdminToken); resp.StatusCode != 404 {
			t.Errorf("%s: %d, want 404 (no such report, or one without an image)", path, resp.StatusCode)
		}
	}
	if strings.Contains(e.logs.String(), "marker-") {
		t.Errorf("a prompt reached the logs")
	}
}

// fakeClassifier is an OpenAI-style moderation endpoint that checks each
// request as the real one would (method, bearer token, JSON shape, data
// URLs) and flags every image with flagImages; text passes unless it
// holds flagText.
type fakeClassifier struct {
	t          *testing.T
	srv        *httptest.Server
	token      string
	flagImages []string // categories, OpenAI names
	flagText   string
	status     int // non-zero: answer this status instead

	mu     sync.Mutex
	images [][]byte
	texts  []string
}

func newFakeClassifier(t *testing.T, token string, flagImages ...string) *fakeClassifier {
	f := &fakeClassifier{t: t, token: token, flagImages: flagImages}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeClassifier) config(failOpen bool) ClassifierConfig {
	return ClassifierConfig{URL: f.srv.URL + "/v1/moderations", Token: f.token, Model: "omni-moderation-latest", FailOpen: failOpen}
}

func (f *fakeClassifier) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, msg string) {
		f.t.Errorf("classifier request refused: %s", msg)
		http.Error(w, msg, status)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/moderations" {
		fail(404, "wrong method or path "+r.Method+" "+r.URL.Path)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		fail(401, "bad token")
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		fail(415, "content type "+r.Header.Get("Content-Type"))
		return
	}
	var req struct {
		Model string `json:"model"`
		Input []struct {
			Type     string `json:"type"`
			Text     string `json:"text"`
			ImageURL *struct {
				URL string `json:"url"`
			} `json:"image_url"`
		} `json:"input"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Model != "omni-moderation-latest" || len(req.Input) == 0 {
		fail(400, "bad body")
		return
	}
	categories := map[string]bool{}
	for _, in := range req.Input {
		switch {
		case in.Type == "text" && in.Text != "" && in.ImageURL == nil:
			f.mu.Lock()
			f.texts = append(f.texts, in.Text)
			f.mu.Unlock()
			if f.flagText != "" && strings.Contains(in.Text, f.flagText) {
				categories["violence"] = true
			}
		case in.Type == "image_url" && in.Text == "" && in.ImageURL != nil:
			rest, ok := strings.CutPrefix(in.ImageURL.URL, "data:image/png;base64,")
			img, err := base64.StdEncoding.DecodeString(rest)
			if !ok || err != nil || !bytes.HasPrefix(img, []byte("\x89PNG\r\n\x1a\n")) {
				fail(400, "image_url is not a PNG data URL")
				return
			}
			f.mu.Lock()
			f.images = append(f.images, img)
			f.mu.Unlock()
			for _, c := range f.flagImages {
				categories[c] = true
			}
		default:
			fail(400, "bad input item")
			return
		}
	}
	if f.status != 0 {
		w.WriteHeader(f.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"id": "modr-1", "model": req.Model,
		"results": []any{map[string]any{"flagged": len(categories) > 0, "categories": categories}}})
}

func (f *fakeClassifier) seen() (texts []string, images [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.texts), slices.Clone(f.images)
}

func TestModerationFlaggedOutputNeverStored(t *testing.T) {
	t.Parallel()
	cls := newFakeClassifier(t, "classifier-token", "violence/graphic")
	e := moderationEnv(t, cls.config(false))
	b, acct := e.signedIn("output@example.com")
	before, _ := e.db.Account(acct.ID)
	objects := e.objectCount()

	resp := b.call("POST", "/v1/images/generations", `{"prompt":"a quiet harbour marker-out-1","size":"256x256"}`, nil)
	want(t, resp, 400)
	raw, _ := io.ReadAll(resp.Body)
	if got := apiErrorOf(t, raw); got.Code != "content_policy_violation" || !strings.Contains(got.Message, "generated image") || !strings.Contains(got.Message, "(violence)") {
		t.Errorf("refusal %+v", got)
	}
	texts, images := cls.seen()
	if e.generations() != 1 || len(images) != 1 || !slices.Contains(texts, "a quiet harbour marker-out-1") {
		t.Fatalf("want one generation judged as an image and the prompt judged as text: %v generations, %d images, texts %q", e.generations(), len(images), texts)
	}
	if e.objectCount() != objects {
		t.Errorf("a flagged output was written to the object store: %d → %d objects", objects, e.objectCount())
	}
	after, _ := e.db.Account(acct.ID)
	if after.Credits != before.Credits || after.Held != 0 || e.db.GenerationCount(acct.ID) != 0 {
		t.Errorf("a flagged output cost credits (%d → %d, held %d) or entered the history", before.Credits, after.Credits, after.Held)
	}
	// Nothing is cached either: asking again generates again.
	want(t, b.call("POST", "/v1/images/generations", `{"prompt":"a quiet harbour marker-out-1","size":"256x256"}`, nil), 400)
	if e.generations() != 2 || e.objectCount() != objects {
		t.Errorf("the second attempt was served from a tier: %v generations, %d objects", e.generations(), e.objectCount())
	}
	if got := seriesValue(t, e.gwReg, "imagegate_moderation_blocked_total", "violence", "output"); got != 2 {
		t.Errorf("blocked{violence,output} = %v, want 2", got)
	}

	// The same gateway stores what the classifier passes.
	clean := newFakeClassifier(t, "classifier-token")
	e2 := moderationEnv(t, clean.config(false))
	if resp, raw := e2.postJSON(`{"prompt":"a quiet harbour","size":"256x256"}`); resp.StatusCode != 200 || e2.objectCount() == 0 {
		t.Errorf("a passed output: %d %s, %d objects", resp.StatusCode, raw, e2.objectCount())
	}
}

func TestModerationCSAMOutputHeldInReport(t *testing.T) {
	t.Parallel()
	cls := newFakeClassifier(t, "classifier-token", "sexual", "sexual/minors")
	e := moderationEnv(t, cls.config(false))
	b, acct := e.signedIn("output-csam@example.com")
	objects := e.objectCount()

	resp := b.call("POST", "/v1/images/generations", `{"prompt":"an innocent-looking prompt","size":"256x256"}`, nil)
	want(t, resp, 400)
	raw, _ := io.ReadAll(resp.Body)
	if got := apiErrorOf(t, raw); !strings.Contains(got.Message, "sexual_minors") {
		t.Errorf("refusal %+v, want it to name %s", got, "sexual_minors")
	}
	if e.objectCount() != objects {
		t.Errorf("apparent CSAM was written to the object store")
	}
	want(t, b.call("GET", "/v1/account", "", nil), 401)

	_, reports := e.adminReports(testAdminToken)
	if len(reports) != 1 {
		t.Fatalf("%d reports, want 1", len(reports))
	}
	r := reports[0]
	if r.Source != store.ReportFromOutput || r.Account != acct.ID || r.ContentType != "image/png" || r.ImageBytes == 0 || r.ImageURL == "" {
		t.Fatalf("report %+v", r)
	}
	_, images := cls.seen()
	iresp, img := e.get(e.url+r.ImageURL, "Authorization", "Bearer "+testAdminToken)
	sum := sha256.Sum256(img)
	if iresp.StatusCode != 200 || iresp.Header.Get("Content-Type") != "image/png" || hex.EncodeToString(sum[:]) != r.ImageSHA256 || !bytes.Equal(img, images[0]) {
		t.Errorf("held material: %d %s, %d bytes; want the judged output", iresp.StatusCode, iresp.Header.Get("Content-Type"), len(img))
	}
	if resp, _ := e.get(e.url+r.ImageURL, "Authorization", "Bearer wrong-admin-token-00000"); resp.StatusCode != 401 {
		t.Errorf("material without the admin token: %d", resp.StatusCode)
	}
	if got := seriesValue(t, e.gwReg, "imagegate_moderation_blocked_total", "sexual_minors", "output"); got != 1 {
		t.Errorf("blocked{sexual_minors,output} = %v, want 1", got)
	}
}

func TestModerationClassifierDown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		failOpen bool
		status   int
	}{
		{"fail closed", false, 503},
		{"fail open", true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cls := newFakeClassifier(t, "classifier-token")
			cls.status = http.StatusBadGateway
			e := moderationEnv(t, cls.config(tc.failOpen))
			resp, raw := e.postJSON(`{"prompt":"a lighthouse","size":"256x256"}`)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if tc.failOpen {
				if got := seriesValue(t, e.gwReg, "imagegate_moderation_classifier_failures_total", "passed", "prompt"); got != 1 {
					t.Errorf("failures{prompt,passed} = %v, want 1", got)
				}
				// A pass the classifier never gave is not remembered:
				// the same prompt asks the classifier again.
				if resp, raw := e.postJSON(`{"prompt":"a lighthouse","size":"256x256"}`); resp.StatusCode != 200 {
					t.Fatalf("again: %d %s", resp.StatusCode, raw)
				}
				if got := seriesValue(t, e.gwReg, "imagegate_moderation_classifier_failures_total", "passed", "prompt"); got != 2 {
					t.Errorf("after a repeat, failures{prompt,passed} = %v, want 2: a fail-open pass was cached", got)
				}
				return
			}
			if resp.Header.Get("Retry-After") == "" || apiErrorOf(t, raw).Code != "unavailable" {
				t.Errorf("fail closed: Retry-After %q, body %s", resp.Header.Get("Retry-After"), raw)
			}
			if e.generations() != 0 || e.objectCount() != 0 {
				t.Errorf("fail closed still generated")
			}
		})
	}
	// A listed term blocks even when the classifier is down and moderation
	// fails open.
	cls := newFakeClassifier(t, "classifier-token")
	cls.status = http.StatusInternalServerError
	e := moderationEnv(t, cls.config(true))
	if resp, _ := e.postJSON(`{"prompt":"forbidden things","size":"256x256"}`); resp.StatusCode != 400 {
		t.Errorf("listed term with the classifier down (fail open): %d, want 400", resp.StatusCode)
	}
}

// TestNegativePromptIsModerated refuses a request whose negative prompt
// the policy blocks, before anything is reserved or generated.
func TestNegativePromptIsModerated(t *testing.T) {
	t.Parallel()
	e := moderationEnv(t, ClassifierConfig{})
	b, acct := e.signedIn("negative@example.com")
	before, _ := e.db.Account(acct.ID)
	resp := b.call("POST", "/v1/images/generations", `{"prompt":"a harmless lighthouse","negative_prompt":"forbidden things","size":"256x256"}`, nil)
	want(t, resp, 400)
	raw, _ := io.ReadAll(resp.Body)
	if got := apiErrorOf(t, raw); got.Code != "content_policy_violation" || !strings.HasPrefix(got.Message, "negative_prompt:") {
		t.Errorf("refusal %+v, want content_policy_violation naming negative_prompt", got)
	}
	after, _ := e.db.Account(acct.ID)
	if e.generations() != 0 || after.Credits != before.Credits || after.Held != 0 {
		t.Errorf("the refused request generated (%v) or charged (%d→%d credits)", e.generations(), before.Credits, after.Credits)
	}
}
