package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

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

	resp, res = e.admin(testAdminToken, "/v1/admin/purge", body)
	if resp.StatusCode != 200 || len(res.ObjectsDeleted) != 3 || res.CDN == nil || len(res.CDN.Failed()) != 0 {
		t.Fatalf("purge: %d %+v", resp.StatusCode, res)
	}
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
