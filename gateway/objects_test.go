package gateway

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/edge"
)

func TestObjectLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, raw := e.postJSON(`{"prompt":"signed links","size":"256x256"}`)
	link := decodeImages(t, raw).Data[0].URL
	path := pathOf(t, link)
	hash := strings.TrimSuffix(strings.TrimPrefix(path, "/o/"), ".png")

	resp, body := e.get(link)
	if resp.StatusCode != 200 {
		t.Fatalf("signed link: %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
		t.Errorf("Cache-Control %q", got)
	}
	if got := resp.Header.Get("ETag"); got != `"`+hash+`"` {
		t.Errorf("ETag %q", got)
	}
	model := e.gw.catalog.list()[0]
	wantTags := edge.OutputsTag + "," + edge.ObjectTag(hash) + "," + edge.ModelTag(model.Name, model.Version)
	if got := resp.Header.Get("Cache-Tag"); got != wantTags {
		t.Errorf("Cache-Tag %q, want %q (all outputs, the object, its model version)", got, wantTags)
	}
	if edge.HashHex(body) != hash {
		t.Errorf("object bytes do not hash to their name")
	}
	if resp, body := e.get(link, "If-None-Match", `"`+hash+`"`); resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("If-None-Match: %d with %d bytes", resp.StatusCode, len(body))
	}

	// Another key, an expired link, another path, a tampered MAC, no token:
	// for an object that exists and for one that does not, the same 403
	// and the same bytes, so a bad link cannot tell whether an object
	// exists (the signature is checked before the lookup).
	other, _ := edge.NewSigner(edge.SignerConfig{Current: []byte(strings.Repeat("k", 32)), TTL: time.Hour}, time.Now)
	old, _ := edge.LoadOrCreateKey(e.dir + "/signing.key")
	past, _ := edge.NewSigner(edge.SignerConfig{Current: old, TTL: time.Hour}, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	otherPath := "/o/" + strings.Repeat("0", 64) + ".png"
	missingPath := "/o/" + strings.Repeat("1", 64) + ".png"
	// tamper changes the last character of a signed link's MAC.
	tamper := func(signed string) string {
		flip := "A"
		if strings.HasSuffix(signed, "A") {
			flip = "B"
		}
		return signed[:len(signed)-1] + flip
	}
	badLinks := func(p, signed string) map[string]string {
		return map[string]string{
			"other key":  e.url + other.Sign(p),
			"expired":    e.url + past.Sign(p),
			"other path": e.url + p + "?" + strings.SplitN(e.signer.Sign(otherPath), "?", 2)[1],
			// The served link itself (or a freshly signed one for the
			// missing object), its MAC changed: no second boundary can
			// make it differ elsewhere.
			"tampered": tamper(signed),
			"unsigned": e.url + p,
		}
	}
	existing, missing := badLinks(path, link), badLinks(missingPath, e.url+e.signer.Sign(missingPath))
	for name, u := range existing {
		resp, body := e.get(u)
		if resp.StatusCode != 403 {
			t.Errorf("%s: status %d, want 403", name, resp.StatusCode)
		}
		if strings.Contains(string(body), "\x89PNG") {
			t.Errorf("%s: image bytes served", name)
		}
		mResp, mBody := e.get(missing[name])
		if mResp.StatusCode != 403 {
			t.Errorf("%s, object that does not exist: status %d, want 403", name, mResp.StatusCode)
		}
		if string(mBody) != string(body) {
			t.Errorf("%s: the body tells whether the object exists:\nexisting: %s\nmissing:  %s", name, body, mBody)
		}
		for _, h := range []string{"Content-Type", "Content-Length", "Cache-Control", "ETag", "Cache-Tag"} {
			if got, want := mResp.Header.Get(h), resp.Header.Get(h); got != want {
				t.Errorf("%s: %s %q for a missing object, %q for an existing one", name, h, got, want)
			}
		}
	}

	// A valid signature for an object that does not exist is a 404.
	if resp, _ := e.get(e.url + e.signer.Sign(otherPath)); resp.StatusCode != 404 {
		t.Errorf("missing object: %d, want 404", resp.StatusCode)
	}
	// A signed path that is not an object name is a 404 too, exactly, and
	// nothing outside the object store is read.
	resp, body = e.get(e.url + e.signer.Sign("/o/../../etc/passwd"))
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"code":"not_found"`) || strings.Contains(string(body), "root:") {
		t.Errorf("traversal: %d %s, want 404 not_found", resp.StatusCode, body)
	}
	// Weak and other validators.
	if resp, body := e.get(link, "If-None-Match", `W/"`+hash+`"`); resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("If-None-Match (weak): %d with %d bytes", resp.StatusCode, len(body))
	}
	if resp, body := e.get(link, "If-None-Match", `"`+hash[1:]+`0"`); resp.StatusCode != 200 || edge.HashHex(body) != hash {
		t.Errorf("If-None-Match of another object: %d with %d bytes", resp.StatusCode, len(body))
	}
}

func TestObjectCacheTagsNameOwnersOpaquely(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	b, acct := e.signedIn("tagged@example.com")
	resp := b.call("POST", "/v1/images/generations", `{"prompt":"owned output","size":"256x256"}`, nil)
	want(t, resp, 200)
	raw, _ := io.ReadAll(resp.Body)
	link := decodeImages(t, raw).Data[0].URL
	objResp, _ := e.get(link)
	tags := objResp.Header.Get("Cache-Tag")
	if !strings.Contains(tags, testOwnerTags.Tag(acct.ID)) {
		t.Errorf("Cache-Tag %q lacks the owner's tag", tags)
	}
	if strings.Contains(tags, acct.ID) || strings.Contains(tags, "tagged") {
		t.Errorf("Cache-Tag %q reveals the account", tags)
	}
}

// failingGets is an object store whose reads fail (the store is down).
type failingGets struct{ envObjects }

func (failingGets) Get(context.Context, string) ([]byte, error) {
	return nil, errors.New("object store unreachable")
}

// An object the gateway cannot read answers 500 without the headers of
// its bytes: nothing tells a CDN to keep the error for a year.
func TestObjectStoreFailureIsNotCachedForever(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newEnv(t, envOptions{dir: dir})
	_, raw := e.postJSON(`{"prompt":"a link the store cannot serve","size":"256x256"}`)
	link := decodeImages(t, raw).Data[0].URL
	e.close()

	// Restarted: L1 is empty, so the bytes must come from the store.
	e = newEnv(t, envOptions{dir: dir, objects: func(l *edge.Local) envObjects { return failingGets{l} }})
	resp, body := e.get(e.url + pathAndQuery(t, link))
	if resp.StatusCode != 500 {
		t.Fatalf("object with the store down: %d %s, want 500", resp.StatusCode, body)
	}
	for _, h := range []string{"Cache-Control", "ETag", "Cache-Tag"} {
		if v := resp.Header.Get(h); strings.Contains(v, "immutable") || (h != "Cache-Control" && v != "") {
			t.Errorf("the 500 carries %s: %q", h, v)
		}
	}
}
