package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/internal/cftest"
	"github.com/imagegate/imagegate/store"
)

const testAdminToken = "admin-token-for-tests-0001"

func (e *env) admin(token, path, body string) (*http.Response, purgeResult) {
	e.t.Helper()
	b := &browser{t: e.t, e: e, client: &http.Client{Timeout: time.Minute}, header: http.Header{"Authorization": {"Bearer " + token}}}
	var res purgeResult
	resp := b.call("POST", path, body, nil)
	if resp.StatusCode == 200 || resp.StatusCode == 502 {
		json.NewDecoder(resp.Body).Decode(&res)
	}
	return resp, res
}

func TestAdminPurge(t *testing.T) {
	t.Parallel()
	const token, zone = "cf-token-0123456789", "0123456789abcdef0123456789abcdef"
	cdn := cftest.NewServer(t, cftest.Config{Token: token, ZoneID: zone})
	p, err := edge.NewPurger(edge.PurgerConfig{APIToken: token, ZoneID: zone, BaseURL: cdn.URL, Rate: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{purger: p, cfg: Config{AdminToken: testAdminToken, CDNURL: "https://cdn.example.com"}})
	_, out := e.postJSON(`{"prompt":"purge me","size":"256x256"}`)
	var gen imagesResponse
	json.Unmarshal(out, &gen)
	u, _ := url.Parse(gen.Data[0].URL)
	hash := strings.TrimSuffix(strings.TrimPrefix(u.Path, "/o/"), ".png")
	body := `{"objects":["` + hash + `"]}`

	// A wrong token is refused, purges nothing, and is audit-logged.
	if resp, _ := e.admin("wrong-token-00000000000", "/v1/admin/purge", body); resp.StatusCode != 401 {
		t.Fatalf("wrong token: %d, want 401", resp.StatusCode)
	}
	if resp, _ := e.postJSON(`{"prompt":"purge me","size":"256x256"}`); resp.Header.Get("Cache-Status") != "imagegate; hit; detail=l1" {
		t.Fatalf("a refused purge changed the cache: %q", resp.Header.Get("Cache-Status"))
	}
	if len(cdn.Requests()) != 0 {
		t.Fatalf("a refused purge reached the CDN")
	}

	// A dry run sends nothing.
	resp, res := e.admin(testAdminToken, "/v1/admin/purge", `{"objects":["`+hash+`"],"dry_run":true}`)
	if resp.StatusCode != 200 || !res.DryRun || res.CDN == nil || len(cdn.Requests()) != 0 {
		t.Fatalf("dry run: %d %+v, %d CDN calls", resp.StatusCode, res, len(cdn.Requests()))
	}

	manifests := 0
	filepath.Walk(filepath.Join(e.dir, "objects"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(string(readFile(t, p)), hash) {
			manifests++
		}
		return nil
	})
	if manifests == 0 {
		t.Fatal("no manifest names the output before the purge: the check below would prove nothing")
	}
	resp, res = e.admin(testAdminToken, "/v1/admin/purge", body)
	if resp.StatusCode != 200 || len(res.ObjectsDeleted) != 3+manifests || res.CDN == nil || len(res.CDN.Failed()) != 0 {
		t.Fatalf("purge: %d %+v", resp.StatusCode, res)
	}
	// Nothing about the purged output remains in the object store: not
	// the output, not a manifest naming it.
	filepath.Walk(filepath.Join(e.dir, "objects"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && (strings.Contains(p, hash) || strings.Contains(string(readFile(t, p)), hash)) {
			t.Errorf("%s survived the purge of %s", p, hash)
		}
		return nil
	})
	if !slices.Contains(cdn.Purged().Files, "https://cdn.example.com/o/"+hash+".png") || !slices.Contains(cdn.Purged().Tags, edge.ObjectTag(hash)) {
		t.Errorf("CDN purge %+v lacks the object's URL or tag", cdn.Purged())
	}
	if resp, _ := e.postJSON(`{"prompt":"purge me","size":"256x256"}`); !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=miss") {
		t.Errorf("after purge: %q, want a miss", resp.Header.Get("Cache-Status"))
	}

	var kinds []string
	e.db.AllSecurityEvents(func(ev store.SecurityEvent) error {
		kinds = append(kinds, ev.Kind+" "+ev.Detail)
		return nil
	})
	joined := strings.Join(kinds, "\n")
	if !strings.Contains(joined, eventAdminRefused) || !strings.Contains(joined, eventAdminPurge+" objects=1") || !strings.Contains(joined, "result=ok") {
		t.Errorf("audit log lacks the refused and the accepted purge:\n%s", joined)
	}
}

func TestAdminPurgeWithoutCDNSaysSo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	e.postJSON(`{"prompt":"model purge","size":"256x256"}`)
	model := e.gw.catalog.list()[0]
	resp, res := e.admin(testAdminToken, "/v1/admin/purge", `{"tags":["`+edge.ModelTag(model.Name, model.Version)+`"]}`)
	if resp.StatusCode != 200 || !strings.Contains(res.CDNSkipped, "not configured") || res.Nodes[0].Entries != 1 {
		t.Fatalf("purge by model tag: %d %+v", resp.StatusCode, res)
	}
	// The shared tier still has the output, so the next answer is l3:
	// this node's own tiers were emptied.
	if resp, _ := e.postJSON(`{"prompt":"model purge","size":"256x256"}`); resp.Header.Get("Cache-Status") != "imagegate; hit; detail=l3" {
		t.Errorf("after a model purge: %q, want an l3 hit", resp.Header.Get("Cache-Status"))
	}
	for _, bad := range []string{`{}`, `{"objects":["../etc"]}`, `{"urls":["not a url"]}`, `{"tags":["has space"]}`, `{"objects":[],"nope":1}`} {
		if resp, _ := e.admin(testAdminToken, "/v1/admin/purge", bad); resp.StatusCode != 400 {
			t.Errorf("purge %s: %d, want 400", bad, resp.StatusCode)
		}
	}
	// Peers must authenticate too.
	if resp, _ := e.admin("", "/v1/admin/invalidate", `{"everything":true}`); resp.StatusCode != 401 {
		t.Errorf("unauthenticated invalidate: %d", resp.StatusCode)
	}
	off := newEnv(t, envOptions{})
	if resp, _ := off.admin(testAdminToken, "/v1/admin/purge", `{"everything":true}`); resp.StatusCode != 403 {
		t.Errorf("admin API without a token configured: %d, want 403", resp.StatusCode)
	}
}

// Guessing the admin token is rate limited like any other request, and
// the guesses cannot flood the security log.
func TestAdminTokenGuessesAreLimitedAndLoggedSparingly(t *testing.T) {
	t.Parallel()
	cfg := Config{AdminToken: testAdminToken}
	cfg.RateLimits.Anonymous = LimitPolicy{Quota: 30, Window: time.Hour}
	e := newEnv(t, envOptions{cfg: cfg, limits: true})
	refused, limited := 0, 0
	for i := 0; i < 40; i++ {
		resp, _ := e.admin("guess-"+strings.Repeat("x", i), "/v1/admin/purge", `{"everything":true}`)
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			refused++
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("guess %d: %d, want 401 or 429", i, resp.StatusCode)
		}
	}
	if refused != 30 || limited != 10 {
		t.Errorf("40 guesses: %d refused, %d rate limited; want 30 and 10", refused, limited)
	}
	rows := 0
	e.db.AllSecurityEvents(func(ev store.SecurityEvent) error {
		if ev.Kind == eventAdminRefused {
			rows++
		}
		return nil
	})
	if rows != refusalLogPolicy.Quota {
		t.Errorf("%d refused guesses wrote %d security-log rows, want %d", refused, rows, refusalLogPolicy.Quota)
	}
	// The budget is the client's: the right token waits for it too.
	if resp, _ := e.admin(testAdminToken, "/v1/admin/purge", `{"everything":true}`); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the guessing client with the right token: %d, want 429 until its budget refills", resp.StatusCode)
	}
}

// Gateways call each other's invalidate route with a token derived from
// the admin token; that token opens nothing else.
func TestPeerTokenOpensOnlyInvalidate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	peer := peerToken(testAdminToken)
	if peer == "" || strings.Contains(peer, testAdminToken) || peer != peerToken(testAdminToken) || peer == peerToken(testAdminToken+"x") {
		t.Fatalf("peer token %q must be a stable, one-way function of the admin token", peer)
	}
	body := `{"objects":["` + strings.Repeat("ab", 32) + `"]}`
	if resp, _ := e.admin(peer, "/v1/admin/invalidate", body); resp.StatusCode != 200 {
		t.Errorf("invalidate with the peer token: %d, want 200", resp.StatusCode)
	}
	if resp, _ := e.admin(testAdminToken, "/v1/admin/invalidate", body); resp.StatusCode != 200 {
		t.Errorf("invalidate with the admin token: %d, want 200", resp.StatusCode)
	}
	for _, path := range []string{"/v1/admin/purge", "/v1/admin/accounts/delete"} {
		if resp, _ := e.admin(peer, path, body); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s with the peer token: %d, want 401", path, resp.StatusCode)
		}
	}
	invalidations := 0
	e.db.AllSecurityEvents(func(ev store.SecurityEvent) error {
		if ev.Kind == eventAdminInvalidate {
			invalidations++
		}
		return nil
	})
	if invalidations != 2 {
		t.Errorf("%d invalidations audit-logged, want 2", invalidations)
	}
}

// What a purge drops from this node's own tiers: a prefix that stops short
// of /o/ covers every output, one under /o/ selects hashes by prefix.
func TestPurgeMatcherCoversWhatTheCDNPurges(t *testing.T) {
	t.Parallel()
	a := cache.Entry{Object: "ab" + strings.Repeat("0", 62), Model: "retro", ModelVersion: "1"}
	b := cache.Entry{Object: "cd" + strings.Repeat("0", 62), Model: "retro", ModelVersion: "1"}
	for _, tc := range []struct {
		name   string
		req    purgeJSON
		wantA  bool
		wantB  bool
		noneOK bool // nil matcher: nothing local to drop
	}{
		{"hash prefix", purgeJSON{Prefixes: []string{"cdn.example.com/o/ab"}}, true, false, false},
		{"host only", purgeJSON{Prefixes: []string{"cdn.example.com"}}, true, true, false},
		{"host root", purgeJSON{Prefixes: []string{"cdn.example.com/"}}, true, true, false},
		{"host /o", purgeJSON{Prefixes: []string{"cdn.example.com/o"}}, true, true, false},
		{"other path", purgeJSON{Prefixes: []string{"cdn.example.com/static"}}, false, false, true},
		{"host purge", purgeJSON{Hosts: []string{"cdn.example.com"}}, true, true, false},
		{"output URL", purgeJSON{URLs: []string{"https://cdn.example.com/o/" + b.Object + ".png"}}, false, true, false},
		{"model tag", purgeJSON{Tags: []string{edge.ModelTag("retro", "1")}}, true, true, false},
	} {
		m := purgeMatcher(tc.req, "https://cdn.example.com")
		if m == nil {
			if !tc.noneOK {
				t.Errorf("%s: no matcher", tc.name)
			}
			continue
		}
		if tc.noneOK {
			t.Errorf("%s: matches outputs, want nothing local", tc.name)
			continue
		}
		if m(a) != tc.wantA || m(b) != tc.wantB {
			t.Errorf("%s: matches a=%v b=%v, want %v %v", tc.name, m(a), m(b), tc.wantA, tc.wantB)
		}
	}
}
