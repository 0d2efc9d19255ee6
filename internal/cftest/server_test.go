package cftest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imagegate/imagegate/internal/testpeer"
)

const (
	testToken = "test-token_0123456789abcdefABCDEF"
	testZone  = "0123456789abcdef0123456789abcdef"
	otherZone = "fedcba9876543210fedcba9876543210"
)

var testStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// answer is a decoded response.
type answer struct {
	Status     int
	RetryAfter string
	Success    bool            `json:"success"`
	Errors     []Error         `json:"errors"`
	Messages   []any           `json:"messages"`
	Result     json.RawMessage `json:"result"`
}

// call sends one raw request and decodes the envelope, failing t if the
// answer is not a well-formed Cloudflare envelope.
func call(t testing.TB, s *Server, method, path string, hdr map[string]string, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, strings.TrimSuffix(s.URL, "/client/v4")+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v", method, path, err)
	}
	a.Status = resp.StatusCode
	a.RetryAfter = resp.Header.Get("Retry-After")
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if a.Errors == nil || a.Messages == nil {
		t.Errorf("envelope lacks errors or messages arrays: %+v", a)
	}
	if a.Success != (a.Status == http.StatusOK && len(a.Errors) == 0) {
		t.Errorf("success = %v with status %d and errors %v", a.Success, a.Status, a.Errors)
	}
	if a.Success {
		var res struct{ ID string }
		if err := json.Unmarshal(a.Result, &res); err != nil || res.ID == "" {
			t.Errorf("successful answer has result %s, want {\"id\":...}", a.Result)
		}
	} else if string(a.Result) != "null" {
		t.Errorf("failed answer has result %s, want null", a.Result)
	}
	return a
}

// code returns the first error code and its first chain code.
func (a answer) code() (int, int) {
	if len(a.Errors) == 0 {
		return 0, 0
	}
	chain := 0
	if len(a.Errors[0].ErrorChain) > 0 {
		chain = a.Errors[0].ErrorChain[0].Code
	}
	return a.Errors[0].Code, chain
}

var (
	purgePath = "/client/v4/zones/" + testZone + "/purge_cache"
	goodHdr   = map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json"}
)

func hdrWith(k, v string) map[string]string {
	h := map[string]string{}
	for k, v := range goodHdr {
		h[k] = v
	}
	if v == "" {
		delete(h, k)
	} else {
		h[k] = v
	}
	return h
}

func manyFiles(n int) string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = `"https://cdn.example.com/` + strings.Repeat("a", i%7+1) + `"`
	}
	return `{"files":[` + strings.Join(urls, ",") + `]}`
}

var strictnessCases = []struct {
	name   string
	method string
	path   string
	hdr    map[string]string
	body   string
	status int
	code   int
	chain  int
}{
	{"files", "POST", purgePath, goodHdr, `{"files":["https://cdn.example.com/o/a.png"]}`, 200, 0, 0},
	{"files as cache keys", "POST", purgePath, goodHdr, `{"files":[{"url":"https://cdn.example.com/a","headers":{"Origin":"https://x.example"}}]}`, 200, 0, 0},
	{"tags", "POST", purgePath, goodHdr, `{"tags":["ig-o:abc","Tag2"]}`, 200, 0, 0},
	{"hosts", "POST", purgePath, goodHdr, `{"hosts":["cdn.example.com"]}`, 200, 0, 0},
	{"prefixes", "POST", purgePath, goodHdr, `{"prefixes":["cdn.example.com/o"]}`, 200, 0, 0},
	{"everything", "POST", purgePath, goodHdr, `{"purge_everything":true}`, 200, 0, 0},
	{"json with charset", "POST", purgePath, hdrWith("Content-Type", "application/json; charset=utf-8"), `{"tags":["a"]}`, 200, 0, 0},
	{"100 files", "POST", purgePath, goodHdr, manyFiles(100), 200, 0, 0},
	{"31 separators", "POST", purgePath, goodHdr, `{"prefixes":["cdn.example.com` + strings.Repeat("/a", 31) + `"]}`, 200, 0, 0},

	{"unknown path", "POST", "/client/v4/zones/" + testZone + "/purge", goodHdr, `{"tags":["a"]}`, 400, CodeNoRoute, 0},
	{"no api prefix", "POST", "/zones/" + testZone + "/purge_cache", goodHdr, `{"tags":["a"]}`, 400, CodeNoRoute, 0},
	{"zone name instead of id", "POST", "/client/v4/zones/example.com/purge_cache", goodHdr, `{"tags":["a"]}`, 400, CodeInvalidIdentifier, 0},
	{"GET", "GET", purgePath, goodHdr, ``, 405, CodeMethodNotAllowed, 0},
	{"DELETE", "DELETE", purgePath, goodHdr, `{"tags":["a"]}`, 405, CodeMethodNotAllowed, 0},
	{"no credentials", "POST", purgePath, hdrWith("Authorization", ""), `{"tags":["a"]}`, 400, CodeMissingAuth, 0},
	{"basic auth", "POST", purgePath, hdrWith("Authorization", "Basic dXNlcjpwYXNz"), `{"tags":["a"]}`, 400, CodeInvalidHeaders, CodeBadAuthorization},
	{"empty bearer", "POST", purgePath, hdrWith("Authorization", "Bearer "), `{"tags":["a"]}`, 400, CodeInvalidHeaders, CodeBadAuthorization},
	{"bearer with space", "POST", purgePath, hdrWith("Authorization", "Bearer a b"), `{"tags":["a"]}`, 400, CodeInvalidHeaders, CodeBadAuthorization},
	{"wrong token", "POST", purgePath, hdrWith("Authorization", "Bearer not-the-token"), `{"tags":["a"]}`, 400, CodeInvalidToken, 0},
	{"token's prefix", "POST", purgePath, hdrWith("Authorization", "Bearer "+testToken[:10]), `{"tags":["a"]}`, 400, CodeInvalidToken, 0},
	{"other zone", "POST", "/client/v4/zones/" + otherZone + "/purge_cache", goodHdr, `{"tags":["a"]}`, 403, CodeAuthentication, 0},
	{"no content type", "POST", purgePath, hdrWith("Content-Type", ""), `{"tags":["a"]}`, 400, CodeInvalidHeaders, CodeBadContentType},
	{"form content type", "POST", purgePath, hdrWith("Content-Type", "application/x-www-form-urlencoded"), `{"tags":["a"]}`, 400, CodeInvalidHeaders, CodeBadContentType},
	{"not json", "POST", purgePath, goodHdr, `tags=a`, 400, CodeMalformedJSON, 0},
	{"json array", "POST", purgePath, goodHdr, `["a"]`, 400, CodeMalformedJSON, 0},
	{"json null", "POST", purgePath, goodHdr, `null`, 400, CodeMalformedJSON, 0},
	{"trailing garbage", "POST", purgePath, goodHdr, `{"tags":["a"]}x`, 400, CodeMalformedJSON, 0},
	{"empty object", "POST", purgePath, goodHdr, `{}`, 400, CodeMustContainOne, 0},
	{"two kinds", "POST", purgePath, goodHdr, `{"hosts":["cdn.example.com"],"files":["https://cdn.example.com/a"]}`, 400, CodeMustContainOne, 0},
	{"everything and files", "POST", purgePath, goodHdr, `{"purge_everything":true,"files":["https://cdn.example.com/a"]}`, 400, CodeMustContainOne, 0},
	{"everything false", "POST", purgePath, goodHdr, `{"purge_everything":false}`, 400, CodeMustContainOne, 0},
	{"everything not bool", "POST", purgePath, goodHdr, `{"purge_everything":"yes"}`, 400, CodeMustContainOne, 0},
	{"empty files", "POST", purgePath, goodHdr, `{"files":[]}`, 400, CodeMustContainOne, 0},
	{"unknown field only", "POST", purgePath, goodHdr, `{"urls":["https://cdn.example.com/a"]}`, 400, CodeMustContainOne, 0},
	{"files not array", "POST", purgePath, goodHdr, `{"files":"https://cdn.example.com/a"}`, 400, CodeMustBeArray, 0},
	{"tag not string", "POST", purgePath, goodHdr, `{"tags":[1]}`, 400, CodeMustContainOne, 0},
	{"101 files", "POST", purgePath, goodHdr, manyFiles(101), 400, CodeTooManyItems, 0},
	{"relative file", "POST", purgePath, goodHdr, `{"files":["/o/a.png"]}`, 400, CodeInvalidItem, 0},
	{"ftp file", "POST", purgePath, goodHdr, `{"files":["ftp://cdn.example.com/a"]}`, 400, CodeInvalidItem, 0},
	{"tag with space", "POST", purgePath, goodHdr, `{"tags":["a b"]}`, 400, CodeInvalidItem, 0},
	{"tag with comma", "POST", purgePath, goodHdr, `{"tags":["a,b"]}`, 400, CodeInvalidItem, 0},
	{"empty tag", "POST", purgePath, goodHdr, `{"tags":[""]}`, 400, CodeInvalidItem, 0},
	{"long tag", "POST", purgePath, goodHdr, `{"tags":["` + strings.Repeat("t", MaxTagLen+1) + `"]}`, 400, CodeInvalidItem, 0},
	{"non-ASCII tag", "POST", purgePath, goodHdr, `{"tags":["café"]}`, 400, CodeInvalidItem, 0},
	{"host with scheme", "POST", purgePath, goodHdr, `{"hosts":["https://cdn.example.com"]}`, 400, CodeInvalidItem, 0},
	{"host with port", "POST", purgePath, goodHdr, `{"hosts":["cdn.example.com:443"]}`, 400, CodeInvalidItem, 0},
	{"prefix with scheme", "POST", purgePath, goodHdr, `{"prefixes":["https://cdn.example.com/o"]}`, 400, CodeInvalidItem, 0},
	{"prefix with query", "POST", purgePath, goodHdr, `{"prefixes":["cdn.example.com/o?a=b"]}`, 400, CodeInvalidItem, 0},
	{"prefix with fragment", "POST", purgePath, goodHdr, `{"prefixes":["cdn.example.com/o#x"]}`, 400, CodeInvalidItem, 0},
	{"32 separators", "POST", purgePath, goodHdr, `{"prefixes":["cdn.example.com` + strings.Repeat("/a", 32) + `"]}`, 400, CodeInvalidItem, 0},
	{"prefix path only", "POST", purgePath, goodHdr, `{"prefixes":["/o/"]}`, 400, CodeInvalidItem, 0},
}

func TestServerStrictness(t *testing.T) {
	t.Parallel()
	for _, tc := range strictnessCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewServer(t, Config{Token: testToken, ZoneID: testZone})
			a := call(t, s, tc.method, tc.path, tc.hdr, tc.body)
			code, chain := a.code()
			if a.Status != tc.status || code != tc.code || chain != tc.chain {
				t.Fatalf("got HTTP %d code %d chain %d (%v), want HTTP %d code %d chain %d",
					a.Status, code, chain, a.Errors, tc.status, tc.code, tc.chain)
			}
			reqs := s.Requests()
			if len(reqs) != 1 || reqs[0].Status != tc.status || reqs[0].Method != tc.method {
				t.Fatalf("recorded %+v, want one %s answered %d", reqs, tc.method, tc.status)
			}
			if got := s.Purged(); (tc.status == 200) != (len(got.Files)+len(got.Tags)+len(got.Hosts)+len(got.Prefixes)+got.Everything > 0) {
				t.Errorf("Purged() = %+v after HTTP %d", got, tc.status)
			}
		})
	}
}

func TestServerRecordsParsedRequests(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(testStart)
	s := NewServer(t, Config{Token: testToken, ZoneID: testZone, Now: clock.Now})
	call(t, s, "POST", purgePath, goodHdr, `{"files":["https://cdn.example.com/a",{"url":"https://cdn.example.com/b","headers":{"Origin":"https://x.example"}}]}`)
	clock.Advance(time.Second)
	call(t, s, "POST", purgePath, goodHdr, `{"tags":["t1","t2"]}`)
	call(t, s, "POST", purgePath, hdrWith("Authorization", "Bearer wrong"), `{"tags":["never"]}`)
	call(t, s, "POST", purgePath, goodHdr, `{"purge_everything":true}`)

	got := s.Requests()
	want := []Request{
		{At: testStart, Method: "POST", Path: purgePath, ZoneID: testZone, ContentType: "application/json", Authorized: true,
			Files: []string{"https://cdn.example.com/a", "https://cdn.example.com/b"}, Status: 200, ID: "00000000000000000000000000000001"},
		{At: testStart.Add(time.Second), Method: "POST", Path: purgePath, ZoneID: testZone, ContentType: "application/json", Authorized: true,
			Tags: []string{"t1", "t2"}, Status: 200, ID: "00000000000000000000000000000002"},
		{At: testStart.Add(time.Second), Method: "POST", Path: purgePath, ZoneID: testZone, ContentType: "application/json",
			Status: 400, Errors: []Error{{Code: CodeInvalidToken, Message: "Invalid API Token"}}},
		{At: testStart.Add(time.Second), Method: "POST", Path: purgePath, ZoneID: testZone, ContentType: "application/json", Authorized: true,
			Everything: true, Status: 200, ID: "00000000000000000000000000000003"},
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".Body" }, cmp.Ignore())); diff != "" {
		t.Errorf("Requests() mismatch (-want +got):\n%s", diff)
	}
	if c := s.Connections(); c != 1 {
		t.Errorf("Connections() = %d after four requests on one keep-alive client, want 1", c)
	}
	wantPurged := Purged{Files: []string{"https://cdn.example.com/a", "https://cdn.example.com/b"}, Tags: []string{"t1", "t2"}, Everything: 1}
	if diff := cmp.Diff(wantPurged, s.Purged()); diff != "" {
		t.Errorf("Purged() mismatch (-want +got):\n%s", diff)
	}
}

func TestServerRequestRateLimit(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(testStart)
	s := NewServer(t, Config{Token: testToken, ZoneID: testZone, Now: clock.Now,
		RequestLimit: Limit{Rate: 5.0 / 60, Burst: 2}})
	tags := `{"tags":["a"]}`
	for i := range 2 {
		if a := call(t, s, "POST", purgePath, goodHdr, tags); a.Status != 200 {
			t.Fatalf("request %d within the burst: HTTP %d", i, a.Status)
		}
	}
	a := call(t, s, "POST", purgePath, goodHdr, tags)
	if code, _ := a.code(); a.Status != 429 || code != CodeRateLimited || a.RetryAfter != "12" {
		t.Fatalf("over the rate: HTTP %d code %d Retry-After %q, want 429, %d, 12", a.Status, code, a.RetryAfter, CodeRateLimited)
	}
	// A refused request takes no token: 11.9 s later there is still none.
	clock.Advance(11900 * time.Millisecond)
	if a := call(t, s, "POST", purgePath, goodHdr, tags); a.Status != 429 {
		t.Fatalf("11.9 s later: HTTP %d, want 429", a.Status)
	}
	clock.Advance(100 * time.Millisecond)
	if a := call(t, s, "POST", purgePath, goodHdr, tags); a.Status != 200 {
		t.Fatalf("12 s later: HTTP %d, want 200", a.Status)
	}
	// File purges are counted in URLs, against another bucket (none here).
	if a := call(t, s, "POST", purgePath, goodHdr, manyFiles(100)); a.Status != 200 {
		t.Fatalf("file purge: HTTP %d, want 200", a.Status)
	}
	if got := s.Count(http.StatusTooManyRequests); got != 2 {
		t.Errorf("Count(429) = %d, want 2", got)
	}
}

func TestServerURLRateLimit(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(testStart)
	s := NewServer(t, Config{Token: testToken, ZoneID: testZone, Now: clock.Now, URLLimit: Limit{Rate: 800}})
	if a := call(t, s, "POST", purgePath, goodHdr, manyFiles(100)); a.Status != 200 {
		t.Fatalf("first 100 URLs: HTTP %d", a.Status)
	}
	if a := call(t, s, "POST", purgePath, goodHdr, manyFiles(2)); a.Status != 429 || a.RetryAfter != "1" {
		t.Fatalf("2 more URLs at once: HTTP %d Retry-After %q, want 429 and 1", a.Status, a.RetryAfter)
	}
	clock.Advance(2500 * time.Microsecond) // 800/s × 2.5 ms = 2 URLs
	if a := call(t, s, "POST", purgePath, goodHdr, manyFiles(2)); a.Status != 200 {
		t.Fatalf("2 URLs 2.5 ms later: HTTP %d", a.Status)
	}
	// Tag purges do not draw on the URL bucket.
	if a := call(t, s, "POST", purgePath, goodHdr, `{"tags":["a"]}`); a.Status != 200 {
		t.Fatalf("tag purge: HTTP %d", a.Status)
	}
}

func TestServerScriptedReplies(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Config{Token: testToken, ZoneID: testZone})
	s.Enqueue(
		Reply{Status: 429, RetryAfter: 1500 * time.Millisecond},
		Reply{Status: 502},
		Reply{Status: 200, Errors: []Error{{Code: 1012, Message: "refused on a 200"}}},
	)
	body := `{"tags":["a"]}`
	// A request refused on its own merits leaves the script alone.
	if a := call(t, s, "POST", purgePath, hdrWith("Authorization", ""), body); a.Status != 400 {
		t.Fatalf("no credentials: HTTP %d", a.Status)
	}
	type got struct {
		Status     int
		Code       int
		RetryAfter string
	}
	var gots []got
	for range 4 {
		a := call(t, s, "POST", purgePath, goodHdr, body)
		code, _ := a.code()
		gots = append(gots, got{a.Status, code, a.RetryAfter})
	}
	want := []got{{429, CodeRateLimited, "2"}, {502, CodeInternalError, ""}, {200, 1012, ""}, {200, 0, ""}}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("answers mismatch (-want +got):\n%s", diff)
	}
}

func TestServerRejectItem(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Config{Token: testToken, ZoneID: testZone})
	bad := "https://cdn.example.com/bad"
	s.RejectItem(bad, Error{Code: 1015, Message: "Unable to purge " + bad})
	a := call(t, s, "POST", purgePath, goodHdr, `{"files":["https://cdn.example.com/ok","`+bad+`"]}`)
	if code, _ := a.code(); a.Status != 400 || code != 1015 {
		t.Fatalf("batch with the rejected item: HTTP %d code %d", a.Status, code)
	}
	if a := call(t, s, "POST", purgePath, goodHdr, `{"files":["https://cdn.example.com/ok"]}`); a.Status != 200 {
		t.Fatalf("batch without it: HTTP %d", a.Status)
	}
	if a := call(t, s, "POST", purgePath, goodHdr, `{"files":["`+bad+`"]}`); a.Status != 400 {
		t.Fatalf("the item again: HTTP %d, want a persistent 400", a.Status)
	}
	if diff := cmp.Diff(Purged{Files: []string{"https://cdn.example.com/ok"}}, s.Purged()); diff != "" {
		t.Errorf("Purged() mismatch (-want +got):\n%s", diff)
	}
}

func TestServerStall(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Config{Token: testToken, ZoneID: testZone})
	s.Enqueue(Reply{Stall: true})
	// The client gives up only once the server holds the request: a short
	// deadline instead could end it before the server had read it, and a
	// loaded machine takes any time to get there.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	held := make(chan bool, 1)
	go func() {
		defer cancel()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) { // polling the record
			if len(s.Requests()) > 0 {
				held <- true
				return
			}
		}
		held <- false
	}()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.URL+"/zones/"+testZone+"/purge_cache", bytes.NewReader([]byte(`{"tags":["a"]}`)))
	for k, v := range goodHdr {
		req.Header.Set(k, v)
	}
	resp, err := s.Client().Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("stalled request answered HTTP %d", resp.StatusCode)
	}
	if !<-held {
		t.Fatal("the stalled request was never recorded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stalled request: %v, want it held until the client gave up", err)
	}
	if reqs := s.Requests(); len(reqs) != 1 || reqs[0].Status != 0 || len(reqs[0].Tags) != 1 {
		t.Errorf("recorded %+v, want one stalled request with its tag", reqs)
	}
	// The next request is answered normally.
	if a := call(t, s, "POST", purgePath, goodHdr, `{"tags":["a"]}`); a.Status != 200 {
		t.Errorf("after the stall: HTTP %d", a.Status)
	}
}

func TestClock(t *testing.T) {
	t.Parallel()
	c := testpeer.NewClock(testStart)
	if err := c.Sleep(t.Context(), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Advance(time.Second)
	_ = c.Sleep(t.Context(), -time.Second)
	if got, want := c.Now(), testStart.Add(4*time.Second); !got.Equal(want) {
		t.Errorf("Now() = %v, want %v", got, want)
	}
	if got := c.Slept(); got != 3*time.Second {
		t.Errorf("Slept() = %v, want 3s", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || c.Slept() != 3*time.Second {
		t.Errorf("Sleep on a done context = %v, slept %v; want context.Canceled and no advance", err, c.Slept())
	}
}

// FuzzServerBody feeds arbitrary bodies to an authorized request: the
// fake must answer each with 200 or 400 in a well-formed envelope, and
// record what it accepted.
func FuzzServerBody(f *testing.F) {
	for _, tc := range strictnessCases {
		if tc.method == "POST" && tc.path == purgePath {
			f.Add(tc.body)
		}
	}
	s := NewServer(f, Config{Token: testToken, ZoneID: testZone})
	f.Fuzz(func(t *testing.T, body string) {
		a := call(t, s, "POST", purgePath, goodHdr, body)
		if a.Status != 200 && a.Status != 400 {
			t.Fatalf("HTTP %d for body %q", a.Status, body)
		}
		if a.Status == 200 {
			reqs := s.Requests()
			r := reqs[len(reqs)-1]
			kinds := 0
			for _, l := range [][]string{r.Files, r.Tags, r.Hosts, r.Prefixes} {
				if len(l) > 0 {
					kinds++
				}
			}
			if r.Everything {
				kinds++
			}
			if kinds != 1 {
				t.Fatalf("accepted %q with %d kinds", body, kinds)
			}
		}
	})
}
