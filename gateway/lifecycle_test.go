package gateway

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/internal/cftest"
	"github.com/imagegate/imagegate/store"
)

// objectOf returns the object hash and ext of a generation answer.
func objectOf(t testing.TB, raw []byte) (hash, ext string) {
	t.Helper()
	var gen imagesResponse
	if err := json.Unmarshal(raw, &gen); err != nil || len(gen.Data) == 0 {
		t.Fatalf("generation answer %s", raw)
	}
	u, _ := url.Parse(gen.Data[0].URL)
	name := strings.TrimPrefix(u.Path, "/o/")
	hash, ext, _ = strings.Cut(name, ".")
	return hash, ext
}

func (b *browser) generate(body string) (hash, ext string) {
	b.t.Helper()
	resp := b.call("POST", "/v1/images/generations", body, nil)
	want(b.t, resp, 200)
	raw, _ := io.ReadAll(resp.Body)
	return objectOf(b.t, raw)
}

func (e *env) objectFile(hash, ext string) string {
	return filepath.Join(e.dir, "objects", edge.OutputName(hash, ext))
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readZip returns the archive's files by name.
func readZip(t *testing.T, raw []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatalf("export is not a ZIP: %v", err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	return files
}

func TestExportThenErasureEverywhere(t *testing.T) {
	t.Parallel()
	const token, zone = "cf-token-0123456789", "0123456789abcdef0123456789abcdef"
	cdn := cftest.NewServer(t, cftest.Config{Token: token, ZoneID: zone})
	p, err := edge.NewPurger(edge.PurgerConfig{APIToken: token, ZoneID: zone, BaseURL: cdn.URL, Rate: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{purger: p, cfg: Config{CDNURL: "https://cdn.example.com", LifecycleInterval: time.Hour}})

	a, acctA := e.signedIn("leaving-marker@example.com")
	bb, acctB := e.signedIn("staying@example.com")
	shared, _ := a.generate(`{"prompt":"a shared skyline","size":"256x256"}`)
	if h, _ := bb.generate(`{"prompt":"a shared skyline","size":"256x256"}`); h != shared {
		t.Fatalf("the shared prompt gave different objects")
	}
	private, _ := a.generate(`{"prompt":"zebracorn private marker","size":"256x256","private":true}`)
	want(t, a.call("PUT", "/v1/consent", `{"preferences":true,"analytics":false}`, nil), 200)
	bb.generate(`{"prompt":"only staying's prompt","size":"256x256"}`)

	// Export: everything of A, nothing of B.
	resp := a.call("GET", "/v1/account/export", "", nil)
	want(t, resp, 200)
	raw, _ := io.ReadAll(resp.Body)
	files := readZip(t, raw)
	for _, name := range []string{"README.txt", "account.json", "consents.json", "generations.json", "transactions.json", "security-events.json", "missing.json",
		"images/" + shared + ".png", "images/" + private + ".png"} {
		if _, ok := files[name]; !ok {
			t.Errorf("export lacks %s", name)
		}
	}
	var gens []store.Generation
	if err := json.Unmarshal(files["generations.json"], &gens); err != nil || len(gens) != 2 {
		t.Fatalf("generations.json: %v, %d entries", err, len(gens))
	}
	if !strings.Contains(string(files["generations.json"]), "zebracorn private marker") || !strings.Contains(string(files["account.json"]), "leaving-marker@example.com") {
		t.Errorf("export misses A's prompt or email")
	}
	var ledger []store.LedgerEntry
	json.Unmarshal(files["transactions.json"], &ledger)
	if len(ledger) < 2 { // the monthly grant and a charge at least
		t.Errorf("transactions.json has %d entries", len(ledger))
	}
	var consents []store.Consent
	json.Unmarshal(files["consents.json"], &consents)
	if len(consents) != 1 || !consents[0].Preferences {
		t.Errorf("consents.json %s", files["consents.json"])
	}
	if !strings.Contains(string(files["security-events.json"]), eventLogin) {
		t.Errorf("security-events.json lacks the sign-in")
	}
	for name, data := range files {
		if bytes.Contains(data, []byte("staying")) || bytes.Contains(data, []byte(acctB.ID)) {
			t.Errorf("%s holds another account's data", name)
		}
	}
	if !bytes.Equal(files["images/"+private+".png"], readFile(t, e.objectFile(private, "png"))) {
		t.Errorf("exported image differs from the stored output")
	}

	// Erasure, re-authenticated by password.
	want(t, a.call("DELETE", "/v1/account", `{"password":"wrong password here"}`, nil), 403)
	want(t, a.call("DELETE", "/v1/account", `{"password":"`+testPassword+`"}`, nil), 202)
	want(t, a.call("GET", "/v1/account", "", nil), 401)
	if err := e.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}

	if _, err := e.db.Account(acctA.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("account after erasure: %v", err)
	}
	if _, err := e.db.AccountByEmail("leaving-marker@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the email still finds an account: %v", err)
	}
	if c, _ := e.db.Consents(acctA.ID); len(c) != 0 {
		t.Errorf("consents survive: %+v", c)
	}
	if ev, _ := e.db.SecurityEvents(acctA.ID); len(ev) != 0 {
		t.Errorf("security events survive: %+v", ev)
	}
	if n := e.db.GenerationCount(acctA.ID); n != 0 {
		t.Errorf("%d generations survive", n)
	}
	if l, _ := e.db.Ledger(acctA.ID); len(l) == 0 {
		t.Errorf("the pseudonymous ledger was not kept for accounting")
	}
	// The private output is gone from the object store, both tiers and
	// the CDN; the shared one stays for B, who is still served a hit.
	if exists(e.objectFile(private, "png")) {
		t.Errorf("the private output is still in the object store")
	}
	if _, err := e.cache.Object(t.Context(), private, "png"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the private output is still cached: %v", err)
	}
	if _, _, ok := e.cache.ObjectModel(private); ok {
		t.Errorf("an L2 entry still points at the private output")
	}
	manifests, _ := filepath.Glob(filepath.Join(e.dir, "objects", "k", "*"))
	for _, m := range manifests {
		if bytes.Contains(readFile(t, m), []byte(private)) {
			t.Errorf("a manifest still points at the private output: %s", m)
		}
	}
	if !exists(e.objectFile(shared, "png")) {
		t.Errorf("the output shared with B was deleted")
	}
	resp = bb.call("POST", "/v1/images/generations", `{"prompt":"a shared skyline","size":"256x256"}`, nil)
	if !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Errorf("B after A's erasure: %q, want a hit", resp.Header.Get("Cache-Status"))
	}
	purged := cdn.Purged()
	if !slices.Contains(purged.Files, "https://cdn.example.com/o/"+private+".png") || !slices.Contains(purged.Tags, testOwnerTags.Tag(acctA.ID)) {
		t.Errorf("CDN purges %+v lack the private output's URL or A's owner tag", purged)
	}
	if slices.Contains(purged.Files, "https://cdn.example.com/o/"+shared+".png") {
		t.Errorf("the shared output was purged by URL while B uses it")
	}
	e.mailWithSubject("leaving-marker@example.com", "Your account has been deleted")
	if strings.Contains(e.logs.String(), "zebracorn") || strings.Contains(e.logs.String(), "leaving-marker") {
		t.Errorf("the logs hold A's prompt or email")
	}
}

// An image that is gone is listed in missing.json; one that cannot be
// read right now fails the export rather than be called missing.
func TestExportTellsGoneFromUnreadable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a, _ := e.signedIn("exporter@example.com")
	gone, ext := a.generate(`{"prompt":"an image that will be gone","size":"256x256"}`)
	unreadable, _ := a.generate(`{"prompt":"an image that cannot be read","size":"256x256"}`)
	if err := e.cache.InvalidateAll(); err != nil { // nothing answers from memory
		t.Fatal(err)
	}
	if err := os.Remove(e.objectFile(gone, ext)); err != nil {
		t.Fatal(err)
	}

	resp := a.call("GET", "/v1/account/export", "", nil)
	want(t, resp, 200)
	raw, _ := io.ReadAll(resp.Body)
	files := readZip(t, raw)
	var missing []string
	if err := json.Unmarshal(files["missing.json"], &missing); err != nil || !slices.Equal(missing, []string{gone + "." + ext}) {
		t.Errorf("missing.json = %s, want just the deleted image", files["missing.json"])
	}
	if _, ok := files["images/"+unreadable+"."+ext]; !ok {
		t.Errorf("the readable image is not in the export")
	}

	// A read error (a symlink loop where the file should be) is not
	// "gone".
	e.cache.InvalidateAll()
	path := e.objectFile(unreadable, ext)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(path), path); err != nil {
		t.Fatal(err)
	}
	resp = a.call("GET", "/v1/account/export", "", nil)
	raw, _ = io.ReadAll(resp.Body)
	if _, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw))); err == nil {
		t.Errorf("an export with an unreadable image completed as if it were whole")
	}
}

func TestErasureResumesAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newEnv(t, envOptions{dir: dir, cfg: Config{LifecycleInterval: time.Hour}})
	b, acct := e.signedIn("crash@example.com")
	hashes := map[string]bool{}
	for _, prompt := range []string{"one", "two", "three"} {
		h, _ := b.generate(`{"prompt":"crash ` + prompt + `","size":"256x256","private":true}`)
		hashes[h] = true
	}
	// The process dies after the first step of the erasure.
	if _, err := e.db.BeginErasure(acct.ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	if done, err := e.db.EraseStep(acct.ID, 1); err != nil || done {
		t.Fatalf("first step: %v %v", done, err)
	}
	e.close()

	e2 := newEnv(t, envOptions{dir: dir, cfg: Config{LifecycleInterval: time.Hour}})
	if err := e2.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := e2.db.PendingErasures(); len(jobs) != 0 {
		t.Errorf("erasure not finished after restart: %+v", jobs)
	}
	if _, err := e2.db.Account(acct.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("account after resumed erasure: %v", err)
	}
	for h := range hashes {
		if exists(e2.objectFile(h, "png")) {
			t.Errorf("output %s survived the resumed erasure", h)
		}
	}
	e2.mailWithSubject("crash@example.com", "Your account has been deleted")
}

func TestRetentionAfter31Days(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	const token, zone = "cf-token-0123456789", "0123456789abcdef0123456789abcdef"
	cdn := cftest.NewServer(t, cftest.Config{Token: token, ZoneID: zone})
	p, err := edge.NewPurger(edge.PurgerConfig{APIToken: token, ZoneID: zone, BaseURL: cdn.URL, Rate: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{now: clock.Now, purger: p, cfg: Config{CDNURL: "https://cdn.example.com", LifecycleInterval: time.Hour}})
	free, _ := e.signedIn("free@example.com")
	pro, proAcct := e.signedIn("pro@example.com")
	if err := e.db.SetPlan(proAcct.ID, "pro"); err != nil {
		t.Fatal(err)
	}
	due, _ := free.generate(`{"prompt":"free plan output","size":"256x256"}`)
	kept, _ := pro.generate(`{"prompt":"pro plan output","size":"256x256"}`)
	_, anonRaw := e.postJSON(`{"prompt":"anonymous output","size":"256x256"}`)
	anon, _ := objectOf(t, anonRaw)

	clock.Advance(31 * 24 * time.Hour)
	fresh, _ := free.generate(`{"prompt":"free plan output, today","size":"256x256"}`)
	if err := e.gw.LifecyclePass(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep, err := e.db.Sweep(t.Context(), store.Retention{})
	if err != nil {
		t.Fatal(err)
	}
	purged := cdn.Purged()
	manifests, _ := filepath.Glob(filepath.Join(e.dir, "objects", "k", "*"))
	for h, wantKept := range map[string]bool{due: false, anon: false, kept: true, fresh: true} {
		if got := exists(e.objectFile(h, "png")); got != wantKept {
			t.Errorf("output %s: kept %v, want %v", h[:8], got, wantKept)
		}
		// Every tier lets a due output go, and only a due one: L1 (the
		// object store no longer has it, so bytes would come from memory),
		// L2's index, the manifests, and the CDN by URL and object tag.
		_, err := e.cache.Object(t.Context(), h, "png")
		if inL1 := err == nil; inL1 != wantKept {
			t.Errorf("output %s: cached %v (%v), want %v", h[:8], inL1, err, wantKept)
		} else if !wantKept && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("output %s: %v, want not found", h[:8], err)
		}
		if _, _, inL2 := e.cache.ObjectModel(h); inL2 != wantKept {
			t.Errorf("output %s: in L2 %v, want %v", h[:8], inL2, wantKept)
		}
		manifested := false
		for _, m := range manifests {
			manifested = manifested || bytes.Contains(readFile(t, m), []byte(h))
		}
		if manifested != wantKept {
			t.Errorf("output %s: a manifest names it %v, want %v", h[:8], manifested, wantKept)
		}
		byURL := slices.Contains(purged.Files, "https://cdn.example.com/o/"+h+".png")
		byTag := slices.Contains(purged.Tags, edge.ObjectTag(h))
		if byURL == wantKept || byTag == wantKept {
			t.Errorf("output %s: CDN purged by URL %v, by object tag %v; want %v", h[:8], byURL, byTag, !wantKept)
		}
	}
	if rep.SecurityEvents == 0 {
		t.Errorf("no security-log rows were due after 31 days")
	}
	_, metrics := e.get(e.metricsURL)
	for _, want := range []string{"imagegate_retention_objects_deleted_total 2", "imagegate_retention_references_expired_total 2"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	var left []store.SecurityEvent
	e.db.AllSecurityEvents(func(ev store.SecurityEvent) error { left = append(left, ev); return nil })
	for _, ev := range left {
		if clock.Now().Sub(ev.Time) > 30*24*time.Hour {
			t.Errorf("a security row older than 30 days survived: %+v", ev)
		}
	}
}
