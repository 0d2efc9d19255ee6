package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/internal/cftest"
	"github.com/imagegate/imagegate/internal/testpeer"
)

const (
	cfToken     = "cf-test-token_0123456789abcdefghijKLMN"
	cfZone      = "0123456789abcdef0123456789abcdef"
	cfOtherZone = "fedcba9876543210fedcba9876543210"
)

var cfStart = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// purgeEnv is a Purger wired to a fake Cloudflare sharing its fake clock.
type purgeEnv struct {
	cf    *cftest.Server
	clock *testpeer.Clock
	p     *Purger
	logs  *testpeer.Buffer
}

// newPurgeEnv starts a fake with cf (token, zone and clock filled in) and
// a Purger against it, configured by cfg after test defaults are set: the
// fake's token and zone, no real waiting.
func newPurgeEnv(t *testing.T, cf cftest.Config, cfg PurgerConfig) *purgeEnv {
	t.Helper()
	e := &purgeEnv{clock: testpeer.NewClock(cfStart), logs: &testpeer.Buffer{}}
	cf.Token, cf.ZoneID, cf.Now = cfToken, cfZone, e.clock.Now
	e.cf = cftest.NewServer(t, cf)
	if cfg.APIToken == "" {
		cfg.APIToken = cfToken
	}
	if cfg.ZoneID == "" {
		cfg.ZoneID = cfZone
	}
	cfg.BaseURL = e.cf.URL
	cfg.Clock = e.clock
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := NewPurger(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	return e
}

// checkNoToken fails t if the API token shows anywhere it could leak.
func (e *purgeEnv) checkNoToken(t *testing.T, rep *PurgeReport, err error) {
	t.Helper()
	var texts []string
	texts = append(texts, e.logs.String())
	if err != nil {
		texts = append(texts, err.Error())
	}
	if rep != nil {
		for _, b := range rep.Batches {
			texts = append(texts, b.Reason)
		}
	}
	for _, s := range texts {
		if strings.Contains(s, cfToken) || strings.Contains(s, cfToken[:12]) {
			t.Fatalf("the API token leaked into %q", s)
		}
	}
}

func testURLs(n int) []string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = OutputURL("https://cdn.example.com", HashHex([]byte(fmt.Sprint(i))), "png")
	}
	return urls
}

func testTags(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = ObjectTag(HashHex([]byte(fmt.Sprint("tag", i))))
	}
	return tags
}

// sizes returns the item count of every request the fake received.
func sizes(reqs []cftest.Request) []int {
	var out []int
	for _, r := range reqs {
		out = append(out, len(r.Files)+len(r.Tags)+len(r.Hosts)+len(r.Prefixes))
	}
	return out
}

func TestPurgeBatches(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		req     PurgeRequest
		perCall int
		cfMax   int
		want    []int
	}{
		{"250 URLs", PurgeRequest{URLs: testURLs(250)}, 0, 0, []int{100, 100, 50}},
		{"exactly 100 URLs", PurgeRequest{URLs: testURLs(100)}, 0, 0, []int{100}},
		{"one URL", PurgeRequest{URLs: testURLs(1)}, 0, 0, []int{1}},
		{"30 a call", PurgeRequest{URLs: testURLs(65)}, 30, 0, []int{30, 30, 5}},
		{"500 URLs on Enterprise", PurgeRequest{URLs: testURLs(501)}, 500, 500, []int{500, 1}},
		{"tags stay at 100 a call", PurgeRequest{Tags: testTags(250)}, 500, 500, []int{100, 100, 50}},
		{"duplicates dropped", PurgeRequest{URLs: append(testURLs(101), testURLs(101)...)}, 0, 0, []int{100, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newPurgeEnv(t, cftest.Config{MaxItems: tc.cfMax}, PurgerConfig{MaxItemsPerCall: tc.perCall})
			rep, err := e.p.Purge(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			reqs := e.cf.Requests()
			if diff := cmp.Diff(tc.want, sizes(reqs)); diff != "" {
				t.Fatalf("items per call (-want +got):\n%s", diff)
			}
			want := slices.Compact(slices.Clone(append(tc.req.URLs, tc.req.Tags...)))
			if tc.name == "duplicates dropped" {
				want = testURLs(101)
			}
			got := e.cf.Purged()
			if diff := cmp.Diff(want, append(got.Files, got.Tags...)); diff != "" {
				t.Errorf("purged items (-want +got):\n%s", diff)
			}
			if n := rep.Count(OutcomePurged); n != len(want) || len(rep.Items) != len(want) {
				t.Errorf("report: %d of %d items purged, want all %d", n, len(rep.Items), len(want))
			}
			for i, b := range rep.Batches {
				if b.Outcome != OutcomePurged || b.PurgeID != reqs[i].ID || b.Attempts != 1 {
					t.Errorf("batch %d = %+v, want purged as %s in 1 attempt", i, b, reqs[i].ID)
				}
			}
			if s := e.p.Stats(); s.Requests != uint64(len(reqs)) || s.Purged != uint64(len(want)) || s.Failed != 0 {
				t.Errorf("Stats() = %+v", s)
			}
		})
	}
}

func TestPurgeBodies(t *testing.T) {
	t.Parallel()
	type body struct {
		Files, Tags, Hosts, Prefixes []string
		Everything                   bool
	}
	cases := []struct {
		name string
		req  PurgeRequest
		want []body
	}{
		{"tags", PurgeRequest{Tags: []string{"ig-o:abc", OutputsTag}}, []body{{Tags: []string{"ig-o:abc", OutputsTag}}}},
		{"tags differing in case are one", PurgeRequest{Tags: []string{"Tag-A", "tag-a", "TAG-B"}}, []body{{Tags: []string{"Tag-A", "TAG-B"}}}},
		{"hosts", PurgeRequest{Hosts: []string{"cdn.example.com", "CDN.example.com", "img.example.com"}}, []body{{Hosts: []string{"cdn.example.com", "img.example.com"}}}},
		{"prefixes", PurgeRequest{Prefixes: []string{"cdn.example.com/o", "cdn.example.com/o/ab"}}, []body{{Prefixes: []string{"cdn.example.com/o", "cdn.example.com/o/ab"}}}},
		{"everything", PurgeRequest{Everything: true}, []body{{Everything: true}}},
		{"one call per kind", PurgeRequest{
			URLs: []string{"https://cdn.example.com/o/a.png"}, Tags: []string{"t"},
			Hosts: []string{"cdn.example.com"}, Prefixes: []string{"cdn.example.com/o"},
		}, []body{
			{Files: []string{"https://cdn.example.com/o/a.png"}}, {Tags: []string{"t"}},
			{Hosts: []string{"cdn.example.com"}}, {Prefixes: []string{"cdn.example.com/o"}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
			rep, err := e.p.Purge(t.Context(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var got []body
			for _, r := range e.cf.Requests() {
				if r.Status != http.StatusOK {
					t.Errorf("fake answered HTTP %d: %v", r.Status, r.Errors)
				}
				got = append(got, body{r.Files, r.Tags, r.Hosts, r.Prefixes, r.Everything})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("request bodies (-want +got):\n%s", diff)
			}
			if rep.Count(OutcomePurged) != len(rep.Items) {
				t.Errorf("not every item purged: %+v", rep.Items)
			}
			if tc.req.Everything {
				if diff := cmp.Diff([]PurgeItem{{Kind: PurgeAll, Outcome: OutcomePurged}}, rep.Items); diff != "" {
					t.Errorf("items (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestPurgeRetries(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		replies    []cftest.Reply
		attempts   int
		sleptLeast time.Duration
	}{
		{"429 with Retry-After", []cftest.Reply{{Status: 429, RetryAfter: 7 * time.Second}}, 2, 7 * time.Second},
		{"429 without Retry-After", []cftest.Reply{{Status: 429}}, 2, time.Second},
		{"500", []cftest.Reply{{Status: 500}}, 2, time.Second},
		{"502", []cftest.Reply{{Status: 502}}, 2, time.Second},
		{"two 503s back off exponentially", []cftest.Reply{{Status: 503}, {Status: 503}}, 3, 3 * time.Second},
		{"503 with Retry-After", []cftest.Reply{{Status: 503, RetryAfter: 5 * time.Second}}, 2, 5 * time.Second},
		{"429 then 500", []cftest.Reply{{Status: 429, RetryAfter: 2 * time.Second}, {Status: 500}}, 3, 4 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
			e.cf.Enqueue(tc.replies...)
			urls := testURLs(3)
			rep, err := e.p.Purge(t.Context(), PurgeRequest{URLs: urls})
			if err != nil {
				t.Fatalf("Purge: %v (report %+v)", err, rep)
			}
			if got := len(e.cf.Requests()); got != tc.attempts {
				t.Errorf("fake saw %d requests, want %d", got, tc.attempts)
			}
			if diff := cmp.Diff(urls, e.cf.Purged().Files); diff != "" {
				t.Errorf("purged (-want +got):\n%s", diff)
			}
			if b := rep.Batches; len(b) != 1 || b[0].Attempts != tc.attempts || b[0].Outcome != OutcomePurged {
				t.Errorf("batches = %+v, want one purged in %d attempts", b, tc.attempts)
			}
			if slept := e.clock.Slept(); slept < tc.sleptLeast {
				t.Errorf("backed off %v in all, want at least %v", slept, tc.sleptLeast)
			}
			e.checkNoToken(t, rep, err)
		})
	}
}

func TestPurgeRetriesReuseTheConnection(t *testing.T) {
	t.Parallel()
	// cloudflare-go leaves the answers it retries unread and unclosed,
	// which would cost a connection each; the Purger's transport drains
	// them, so every attempt goes over one connection.
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
	e.cf.Enqueue(cftest.Reply{Status: 500}, cftest.Reply{Status: 429}, cftest.Reply{Status: 503})
	if _, err := e.p.Purge(t.Context(), PurgeRequest{Tags: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.Purge(t.Context(), PurgeRequest{Tags: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	if n, c := len(e.cf.Requests()), e.cf.Connections(); n != 5 || c != 1 {
		t.Errorf("%d requests over %d connections, want 5 over 1", n, c)
	}
}

func TestPurgePersistentFailureIsPerItem(t *testing.T) {
	t.Parallel()
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{Retries: 2})
	// Batch 1 passes; batch 2 meets 500 on all three attempts; batch 3 passes.
	e.cf.Enqueue(cftest.Reply{}, cftest.Reply{Status: 500}, cftest.Reply{Status: 500}, cftest.Reply{Status: 500})
	urls := testURLs(250)
	rep, err := e.p.Purge(t.Context(), PurgeRequest{URLs: urls})
	if !errors.Is(err, ErrPurgeIncomplete) || errors.Is(err, ErrPurgeUnauthorized) {
		t.Fatalf("Purge error = %v, want ErrPurgeIncomplete only", err)
	}
	if diff := cmp.Diff(append(slices.Clone(urls[:100]), urls[200:]...), e.cf.Purged().Files); diff != "" {
		t.Errorf("purged (-want +got):\n%s", diff)
	}
	for i, it := range rep.Items {
		wantFailed := i >= 100 && i < 200
		if it.Item != urls[i] || (it.Outcome == OutcomeFailed) != wantFailed {
			t.Fatalf("item %d = %+v, want %s failed=%v", i, it, urls[i], wantFailed)
		}
		if wantFailed && !strings.Contains(it.Reason, "HTTP 500 after 3 attempts") {
			t.Fatalf("item %d reason %q lacks the status and attempts", i, it.Reason)
		}
	}
	if got := []int{rep.Batches[0].Attempts, rep.Batches[1].Attempts, rep.Batches[2].Attempts}; !slices.Equal(got, []int{1, 3, 1}) {
		t.Errorf("attempts per batch = %v, want [1 3 1]", got)
	}
	if s := e.p.Stats(); s.Purged != 150 || s.Failed != 100 || s.Requests != 5 {
		t.Errorf("Stats() = %+v", s)
	}
	e.checkNoToken(t, rep, err)
}

func TestPurgeRetryAfterHoldsLaterCalls(t *testing.T) {
	t.Parallel()
	// Without retries the first call fails on its 429, but the account
	// stays rate-limited for the Retry-After: the next call waits for it.
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{Retries: -1})
	e.cf.Enqueue(cftest.Reply{Status: 429, RetryAfter: 30 * time.Second})
	rep, err := e.p.Purge(t.Context(), PurgeRequest{URLs: testURLs(150)})
	if !errors.Is(err, ErrPurgeIncomplete) {
		t.Fatalf("Purge error = %v", err)
	}
	reqs := e.cf.Requests()
	if len(reqs) != 2 || reqs[1].At.Sub(reqs[0].At) < 30*time.Second {
		t.Fatalf("requests at %v, want two, 30 s apart", []time.Time{reqs[0].At, reqs[len(reqs)-1].At})
	}
	if rep.Count(OutcomeFailed) != 100 || !strings.Contains(rep.Items[0].Reason, "HTTP 429 after 1 attempt: Please wait") {
		t.Errorf("first batch: %d failed, reason %q", rep.Count(OutcomeFailed), rep.Items[0].Reason)
	}
}

func TestPurgeIsolatesRejectedItems(t *testing.T) {
	t.Parallel()
	urls := testURLs(100)
	t.Run("one bad item", func(t *testing.T) {
		t.Parallel()
		e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
		e.cf.RejectItem(urls[37], cftest.Error{Code: 1015, Message: "Unable to purge that file"})
		rep, err := e.p.Purge(t.Context(), PurgeRequest{URLs: urls})
		if !errors.Is(err, ErrPurgeIncomplete) {
			t.Fatalf("Purge error = %v", err)
		}
		failed := rep.Failed()
		if len(failed) != 1 || failed[0].Item != urls[37] || !strings.Contains(failed[0].Reason, "Unable to purge that file (1015)") {
			t.Fatalf("failed = %+v, want only urls[37] with Cloudflare's reason", failed)
		}
		want := slices.Delete(slices.Clone(urls), 37, 38)
		got := e.cf.Purged().Files
		slices.Sort(want)
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("purged (-want +got):\n%s", diff)
		}
		if n := len(e.cf.Requests()); n > 1+2*7 {
			t.Errorf("%d calls to isolate one item among 100, want at most 15", n)
		}
	})
	t.Run("whole call refused", func(t *testing.T) {
		t.Parallel()
		// The zone takes 20 items a call, we send 100: both halves fail
		// too, and the search stops there.
		e := newPurgeEnv(t, cftest.Config{MaxItems: 20}, PurgerConfig{})
		rep, err := e.p.Purge(t.Context(), PurgeRequest{URLs: urls})
		if !errors.Is(err, ErrPurgeIncomplete) {
			t.Fatalf("Purge error = %v", err)
		}
		if diff := cmp.Diff([]int{100, 50, 50}, sizes(e.cf.Requests())); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if n := rep.Count(OutcomeFailed); n != 100 {
			t.Errorf("%d items failed, want 100", n)
		}
		if r := rep.Items[0].Reason; !strings.Contains(r, "HTTP 400") || !strings.Contains(r, "up to 20 items") {
			t.Errorf("reason %q lacks Cloudflare's answer", r)
		}
	})
}

func TestPurgeWrongCredentials(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		token  string
		zone   string
		reason string
	}{
		{"unknown token", "not-the-configured-token", "", "HTTP 400: Invalid API Token (1000)"},
		{"zone of another account", "", cfOtherZone, "HTTP 403: Authentication error (10000)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{APIToken: tc.token, ZoneID: tc.zone})
			rep, err := e.p.Purge(t.Context(), PurgeRequest{URLs: testURLs(250), Tags: []string{"t"}})
			if !errors.Is(err, ErrPurgeUnauthorized) || !errors.Is(err, ErrPurgeIncomplete) {
				t.Fatalf("Purge error = %v, want ErrPurgeUnauthorized and ErrPurgeIncomplete", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not say %q", err, tc.reason)
			}
			if n := len(e.cf.Requests()); n != 1 {
				t.Errorf("sent %d calls after the refusal, want 1 in all", n)
			}
			if n := rep.Count(OutcomeFailed); n != 251 {
				t.Errorf("%d items failed, want all 251", n)
			}
			if r := rep.Items[0].Reason; r != tc.reason {
				t.Errorf("first item reason %q, want %q", r, tc.reason)
			}
			if r := rep.Items[250].Reason; !strings.HasPrefix(r, "not sent: ") {
				t.Errorf("last item reason %q, want not sent", r)
			}
			e.checkNoToken(t, rep, err)
		})
	}
}

func TestPurgeSuccessFalseIsFailure(t *testing.T) {
	t.Parallel()
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
	e.cf.Enqueue(cftest.Reply{Status: 200, Errors: []cftest.Error{{Code: 1012, Message: "refused"}}})
	rep, err := e.p.Purge(t.Context(), PurgeRequest{Tags: []string{"t"}})
	if !errors.Is(err, ErrPurgeIncomplete) {
		t.Fatalf("Purge error = %v, want ErrPurgeIncomplete", err)
	}
	if f := rep.Failed(); len(f) != 1 || f[0].Reason != "HTTP 200 with success=false: refused (1012)" {
		t.Errorf("failed = %+v", f)
	}
}

func TestPurgeRetriesTimedOutAttempt(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		stalls   int
		outcome  PurgeOutcome
		attempts int
	}{
		{"one stall", 1, OutcomePurged, 2},
		{"stalls through the retries", 2, OutcomeFailed, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The timeout must cut the stalled attempts only: it is far
			// above what a loopback round trip takes even under -race on
			// a loaded machine (an attempt cut before it reached the fake
			// would leave the stall to the retry).
			e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{AttemptTimeout: 5 * time.Second, Retries: 1})
			for range tc.stalls {
				e.cf.Enqueue(cftest.Reply{Stall: true})
			}
			rep, _ := e.p.Purge(t.Context(), PurgeRequest{Tags: []string{"t"}})
			b := rep.Batches[0]
			if b.Outcome != tc.outcome || b.Attempts != tc.attempts {
				t.Fatalf("batch = %+v, want %s after %d attempts", b, tc.outcome, tc.attempts)
			}
			if tc.outcome == OutcomeFailed && b.Reason != "timed out after 2 attempts" {
				t.Errorf("reason %q", b.Reason)
			}
			if e.clock.Slept() < time.Second {
				t.Errorf("no backoff before retrying a timeout: slept %v", e.clock.Slept())
			}
		})
	}
}

func TestPurgeContextEnded(t *testing.T) {
	t.Parallel()
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep, err := e.p.Purge(ctx, PurgeRequest{URLs: testURLs(150)})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrPurgeIncomplete) {
		t.Fatalf("Purge error = %v, want context.Canceled", err)
	}
	if n := len(e.cf.Requests()); n != 0 {
		t.Errorf("sent %d requests on a canceled context", n)
	}
	if n := rep.Count(OutcomeFailed); n != 150 {
		t.Errorf("%d items failed, want 150", n)
	}
}

func TestPlanSendsNothing(t *testing.T) {
	t.Parallel()
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
	urls := testURLs(250)
	rep, err := e.p.Plan(PurgeRequest{URLs: urls, Tags: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []PurgeBatch{
		{Kind: PurgeByURL, Items: urls[:100], Outcome: OutcomePlanned},
		{Kind: PurgeByURL, Items: urls[100:200], Outcome: OutcomePlanned},
		{Kind: PurgeByURL, Items: urls[200:], Outcome: OutcomePlanned},
		{Kind: PurgeByTag, Items: []string{"a", "b"}, Outcome: OutcomePlanned},
	}
	if diff := cmp.Diff(want, rep.Batches); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if !rep.DryRun || rep.Count(OutcomePlanned) != 252 {
		t.Errorf("DryRun %v, %d planned items, want true and 252", rep.DryRun, rep.Count(OutcomePlanned))
	}
	if n := len(e.cf.Requests()); n != 0 {
		t.Errorf("Plan sent %d requests", n)
	}
	if _, err := e.p.Plan(PurgeRequest{Tags: []string{"a b"}}); !errors.Is(err, ErrInvalidPurge) {
		t.Errorf("Plan of an invalid tag = %v", err)
	}
}

func TestPurgePacing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		cf        cftest.Config
		cfg       PurgerConfig
		req       PurgeRequest
		calls     int
		want429   bool
		minSpread time.Duration // between first and last request on the fake clock
	}{
		{"tags at the Free rate", cftest.Config{RequestLimit: cftest.Limit{Rate: 5.0 / 60}},
			PurgerConfig{Rate: 5.0 / 60}, PurgeRequest{Tags: testTags(1000)}, 10, false, 9 * 12 * time.Second},
		{"tags at the Pro rate with a burst server-side", cftest.Config{RequestLimit: cftest.Limit{Rate: 5, Burst: 25}},
			PurgerConfig{Rate: 5}, PurgeRequest{Tags: testTags(1000)}, 10, false, 9 * 200 * time.Millisecond},
		{"URLs at the Free rate", cftest.Config{URLLimit: cftest.Limit{Rate: 800}},
			PurgerConfig{URLRate: 800}, PurgeRequest{URLs: testURLs(2000)}, 20, false, 19 * 125 * time.Millisecond},
		// Controls: paced too fast for the zone, the fake answers 429,
		// which shows the checks above have teeth; Retry-After then
		// brings every call through.
		{"tags too fast", cftest.Config{RequestLimit: cftest.Limit{Rate: 5.0 / 60}},
			PurgerConfig{Rate: 10 * 5.0 / 60}, PurgeRequest{Tags: testTags(500)}, 5, true, 4 * 12 * time.Second},
		{"URLs too fast", cftest.Config{URLLimit: cftest.Limit{Rate: 800}},
			PurgerConfig{URLRate: 8000}, PurgeRequest{URLs: testURLs(500)}, 5, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newPurgeEnv(t, tc.cf, tc.cfg)
			rep, err := e.p.Purge(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("Purge: %v", err)
			}
			reqs := e.cf.Requests()
			n429 := e.cf.Count(http.StatusTooManyRequests)
			if got := len(reqs) - n429; got != tc.calls {
				t.Errorf("%d successful calls, want %d", got, tc.calls)
			}
			if (n429 > 0) != tc.want429 {
				t.Errorf("fake answered 429 %d times; want429 = %v", n429, tc.want429)
			}
			if got := e.p.Stats().RateLimited; got != uint64(n429) {
				t.Errorf("Stats().RateLimited = %d, fake counted %d", got, n429)
			}
			if spread := reqs[len(reqs)-1].At.Sub(reqs[0].At); spread < tc.minSpread {
				t.Errorf("calls spread over %v, want at least %v", spread, tc.minSpread)
			}
			if rep.Count(OutcomePurged) != len(rep.Items) {
				t.Errorf("%d of %d items purged", rep.Count(OutcomePurged), len(rep.Items))
			}
		})
	}
}

// invalidItemCases are items the Purger must refuse before sending.
var invalidItemCases = []struct {
	name string
	req  PurgeRequest
	want string // in the error
}{
	{"relative URL", PurgeRequest{URLs: []string{"/o/x.png"}}, `url "/o/x.png" is not an absolute http or https URL`},
	{"ftp URL", PurgeRequest{URLs: []string{"ftp://cdn.example.com/x"}}, `url "ftp://cdn.example.com/x" is not an absolute http or https URL`},
	{"URL with space", PurgeRequest{URLs: []string{"https://cdn.example.com/a b"}}, "percent-encode it"},
	{"URL with fragment", PurgeRequest{URLs: []string{"https://cdn.example.com/a#b"}}, "has a fragment"},
	{"URL with user info", PurgeRequest{URLs: []string{"https://u:p@cdn.example.com/a"}}, "user info"},
	{"URL without host", PurgeRequest{URLs: []string{"https:///a"}}, "not an absolute"},
	{"empty URL", PurgeRequest{URLs: []string{""}}, `url "" is empty`},
	{"tag with space", PurgeRequest{Tags: []string{"a b"}}, `tag "a b" contains a space, a comma`},
	{"tag with comma", PurgeRequest{Tags: []string{"a,b"}}, `tag "a,b" contains`},
	{"non-ASCII tag", PurgeRequest{Tags: []string{"café"}}, `tag "café" contains`},
	{"empty tag", PurgeRequest{Tags: []string{""}}, `tag "" is empty`},
	{"long tag", PurgeRequest{Tags: []string{strings.Repeat("t", 1025)}}, "longer than 1024"},
	{"host with scheme", PurgeRequest{Hosts: []string{"https://cdn.example.com"}}, "without scheme"},
	{"host with port", PurgeRequest{Hosts: []string{"cdn.example.com:443"}}, "without port or path"},
	{"host label", PurgeRequest{Hosts: []string{"-cdn.example.com"}}, "not a valid hostname"},
	{"prefix with scheme", PurgeRequest{Prefixes: []string{"https://cdn.example.com/o"}}, `prefix "https://cdn.example.com/o" must not include a scheme`},
	{"prefix with query", PurgeRequest{Prefixes: []string{"cdn.example.com/o?a=1"}}, "has a query string"},
	{"prefix with fragment", PurgeRequest{Prefixes: []string{"cdn.example.com/o#a"}}, "has a fragment"},
	{"prefix too deep", PurgeRequest{Prefixes: []string{"cdn.example.com" + strings.Repeat("/a", 32)}}, "has 32 path separators, Cloudflare allows at most 31"},
	{"prefix without host", PurgeRequest{Prefixes: []string{"/o/"}}, "must start with a hostname"},
	{"nothing", PurgeRequest{}, "nothing to purge"},
	{"everything and more", PurgeRequest{Everything: true, Tags: []string{"t"}}, "cannot be combined"},
}

func TestPurgeRefusesInvalidItems(t *testing.T) {
	t.Parallel()
	e := newPurgeEnv(t, cftest.Config{}, PurgerConfig{})
	for _, tc := range invalidItemCases {
		t.Run(tc.name, func(t *testing.T) {
			// Add a valid item: one bad item refuses the whole request.
			req := tc.req
			if !req.Everything && len(req.URLs)+len(req.Tags)+len(req.Hosts)+len(req.Prefixes) > 0 {
				req.URLs = append(slices.Clone(req.URLs), "https://cdn.example.com/fine")
			}
			rep, err := e.p.Purge(t.Context(), req)
			if !errors.Is(err, ErrInvalidPurge) || rep != nil {
				t.Fatalf("Purge = %v, %v; want nil and ErrInvalidPurge", rep, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	t.Run("every problem at once", func(t *testing.T) {
		err := PurgeRequest{URLs: []string{"/a", "https://ok.example.com/"}, Tags: []string{"a b"}, Prefixes: []string{"x.example.com/?q"}}.Validate()
		for _, want := range []string{`url "/a"`, `tag "a b"`, `prefix "x.example.com/?q"`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not name %s", err, want)
			}
		}
		if strings.Contains(err.Error(), "ok.example.com") {
			t.Errorf("error names a valid item: %v", err)
		}
	})
	t.Run("long items are cut short", func(t *testing.T) {
		err := PurgeRequest{Tags: []string{strings.Repeat("x", 5000) + " "}}.Validate()
		if err == nil || len(err.Error()) > 400 {
			t.Errorf("error is %d bytes long", len(err.Error()))
		}
	})
	if n := len(e.cf.Requests()); n != 0 {
		t.Errorf("invalid requests sent %d calls", n)
	}
}

func TestPurgerConfigValidate(t *testing.T) {
	t.Parallel()
	good := PurgerConfig{APIToken: cfToken, ZoneID: cfZone}
	cases := []struct {
		name string
		mod  func(*PurgerConfig)
		want []string // in the error; none means valid
	}{
		{"defaults", func(*PurgerConfig) {}, nil},
		{"everything set", func(c *PurgerConfig) {
			c.BaseURL, c.MaxItemsPerCall, c.Rate, c.URLRate = "http://127.0.0.1:1/client/v4/", 500, 50, 3000
			c.Retries, c.RetryMinDelay, c.RetryMaxDelay, c.AttemptTimeout = -1, time.Millisecond, time.Second, time.Second
		}, nil},
		{"no token", func(c *PurgerConfig) { c.APIToken = "" }, []string{"api token is missing"}},
		{"token with newline", func(c *PurgerConfig) { c.APIToken = cfToken + "\n" }, []string{"api token contains whitespace"}},
		{"zone name", func(c *PurgerConfig) { c.ZoneID = "example.com" }, []string{`zone id "example.com" must be 32 lowercase hex digits`}},
		{"relative API URL", func(c *PurgerConfig) { c.BaseURL = "api.cloudflare.com/client/v4" }, []string{"api url"}},
		{"batch too large", func(c *PurgerConfig) { c.MaxItemsPerCall = 501 }, []string{"batch size 501"}},
		{"negative rate", func(c *PurgerConfig) { c.Rate = -1 }, []string{"purge rate -1"}},
		{"infinite URL rate", func(c *PurgerConfig) { c.URLRate = 1 / zero() }, []string{"purge URL rate +Inf"}},
		{"one a day", func(c *PurgerConfig) { c.Rate = 1.0 / 86400 }, []string{"at least one per hour"}},
		{"min above max delay", func(c *PurgerConfig) { c.RetryMinDelay = time.Minute }, []string{"min delay 1m0s exceeds max delay 30s"}},
		{"negative timeout", func(c *PurgerConfig) { c.AttemptTimeout = -time.Second }, []string{"must not be negative"}},
		{"all at once", func(c *PurgerConfig) {
			c.APIToken, c.ZoneID, c.MaxItemsPerCall, c.Rate = "", "x", -1, -5
		}, []string{"api token is missing", "zone id", "batch size -1", "purge rate -5"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tc.mod(&cfg)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				if _, err := NewPurger(cfg, nil); err != nil {
					t.Fatalf("NewPurger: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), cfToken) {
				t.Errorf("error repeats the token: %v", err)
			}
			if _, err := NewPurger(cfg, nil); err == nil {
				t.Error("NewPurger accepted an invalid config")
			}
		})
	}
}

func zero() float64 { return 0 }

var rateCases = []struct {
	in   string
	want float64
	ok   bool
}{
	{"5/min", 5.0 / 60, true},
	{"5/m", 5.0 / 60, true},
	{"5 / minute", 5.0 / 60, true},
	{"10/s", 10, true},
	{"0.5", 0.5, true},
	{"3600/h", 1, true},
	{"800/sec", 800, true},
	{"", 0, false},
	{"0/s", 0, false},
	{"-1/s", 0, false},
	{"5/day", 0, false},
	{"inf", 0, false},
	{"NaN/s", 0, false},
	{"five/min", 0, false},
	{"1e400", 0, false},
}

func TestParseRate(t *testing.T) {
	t.Parallel()
	for _, tc := range rateCases {
		got, err := ParseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, tc := range rateCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err == nil && !(r > 0 && r < 1e308) {
			t.Fatalf("ParseRate(%q) = %v, want a finite positive rate", s, r)
		}
		if err != nil && r != 0 {
			t.Fatalf("ParseRate(%q) = %v with error %v", s, r, err)
		}
	})
}

// FuzzPurgeItem checks the Purger's validation against the fake's
// independent rules: whatever the Purger would send, Cloudflare (as the
// fake models it) accepts.
func FuzzPurgeItem(f *testing.F) {
	for _, tc := range invalidItemCases {
		for _, l := range [][]string{tc.req.URLs, tc.req.Tags, tc.req.Hosts, tc.req.Prefixes} {
			for _, item := range l {
				f.Add(item)
			}
		}
	}
	for _, s := range []string{"https://cdn.example.com/o/a.png?x=1", "cdn.example.com/o/", "ig-m:sdxl@1", "a_b.example.com", "http://[::1]/a", "https://cdn.example.com:8443/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, item string) {
		for _, c := range []struct {
			ours   func(string) string
			theirs func(string) error
		}{
			{checkPurgeURL, cftest.CheckFile},
			{checkPurgeTag, cftest.CheckTag},
			{checkPurgeHost, cftest.CheckHost},
			{checkPurgePrefix, cftest.CheckPrefix},
		} {
			if c.ours(item) == "" {
				if err := c.theirs(item); err != nil {
					t.Fatalf("we accept %q, Cloudflare would not: %v", item, err)
				}
			}
		}
	})
}

func TestOutputURL(t *testing.T) {
	t.Parallel()
	want := "https://cdn.example.com/o/" + testHash + ".png"
	for _, base := range []string{"https://cdn.example.com", "https://cdn.example.com/"} {
		got := OutputURL(base, testHash, "png")
		if got != want {
			t.Errorf("OutputURL(%q) = %q, want %q", base, got, want)
		}
		u := strings.TrimPrefix(got, "https://cdn.example.com")
		if h, e, ok := ParseOutputPath(u); !ok || h != testHash || e != "png" {
			t.Errorf("path of %q does not parse back", got)
		}
		if why := checkPurgeURL(got); why != "" {
			t.Errorf("OutputURL %q cannot be purged: %s", got, why)
		}
	}
}

func TestCacheTags(t *testing.T) {
	t.Parallel()
	if got, want := ObjectTag(testHash), "ig-o:"+testHash; got != want {
		t.Errorf("ObjectTag = %q, want %q", got, want)
	}
	modelCases := []struct{ model, version, want string }{
		{"retro", "1", "ig-m:retro@1"},
		{"SDXL", "1.0", "ig-m:sdxl@1.0"},
		{"my model", "v2,beta", "ig-m:my%20model@v2%2Cbeta"},
		{"a@b", "c", "ig-m:a%40b@c"},
		{"a", "b@c", "ig-m:a@b%40c"},
		{"modèle", "1", "ig-m:mod%C3%A8le@1"},
		{"x", strings.Repeat("v", 2000), ""},
	}
	seen := map[string]string{}
	for _, tc := range modelCases {
		got := ModelTag(tc.model, tc.version)
		if tc.want != "" && got != tc.want {
			t.Errorf("ModelTag(%q, %q) = %q, want %q", tc.model, tc.version, got, tc.want)
		}
		if why := checkPurgeTag(got); why != "" {
			t.Errorf("ModelTag(%q, %q) = %q is not a valid tag: %s", tc.model, tc.version, got, why)
		}
		if prev, dup := seen[strings.ToLower(got)]; dup {
			t.Errorf("ModelTag(%q, %q) = %q collides with %s", tc.model, tc.version, got, prev)
		}
		seen[strings.ToLower(got)] = tc.model + "@" + tc.version
	}
	if !strings.HasPrefix(ModelTag("x", strings.Repeat("v", 2000)), "ig-m:sha256:") {
		t.Error("an overlong model tag is not hashed")
	}
	if checkPurgeTag(OutputsTag) != "" || checkPurgeTag(ObjectTag(testHash)) != "" {
		t.Error("OutputsTag or ObjectTag is not a valid tag")
	}
}

func TestOwnerTag(t *testing.T) {
	t.Parallel()
	// Computed independently with OpenSSL 3.0:
	//
	//	printf 'imagegate owner cache tag v1\0acct_42' |
	//	    openssl dgst -sha256 -hmac 'owner-tag-test-key-0123456789abcdef-XYZ' | cut -c1-32
	const key = "owner-tag-test-key-0123456789abcdef-XYZ"
	tg, err := NewOwnerTagger([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tg.Tag("acct_42"), "ig-u:432eb44403bcf7bda4a7502e36edacfb"; got != want {
		t.Errorf("Tag = %q, want %q", got, want)
	}
	other, _ := NewOwnerTagger([]byte(key + "!"))
	tags := map[string]bool{tg.Tag("acct_42"): true, tg.Tag("acct_43"): true, other.Tag("acct_42"): true, tg.Tag(""): true}
	if len(tags) != 4 {
		t.Errorf("owner tags collide: %v", tags)
	}
	valid := regexp.MustCompile(`^ig-u:[0-9a-f]{32}$`)
	for tag := range tags {
		if !valid.MatchString(tag) || strings.Contains(tag, "42") && strings.Contains(tag, "acct") {
			t.Errorf("tag %q is not opaque", tag)
		}
	}
	if _, err := NewOwnerTagger([]byte("short")); err == nil {
		t.Error("NewOwnerTagger accepted a 5-byte key")
	}
}
