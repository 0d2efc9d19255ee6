package main

import (
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/cftest"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// TestPurgeReachesEveryGatewayAndTheCDN runs two gateway processes on one
// real S3 server (versitygw) behind a fake Cloudflare API, then purges an
// output through one of them with `imagegate purge`.
func TestPurgeReachesEveryGatewayAndTheCDN(t *testing.T) {
	t.Parallel()
	s3 := testpeer.Versitygw(t)
	bucket := s3.NewBucket(t)
	const token, zone, admin = "cf-token-0123456789", "0123456789abcdef0123456789abcdef", "admin-token-0123456789"
	cdn := cftest.NewServer(t, cftest.Config{Token: token, ZoneID: zone})
	common := []string{
		"--s3-endpoint", s3.Endpoint, "--s3-bucket", bucket, "--s3-access-key-id", s3.AccessKey,
		"--s3-secret-access-key", s3.SecretKey, "--s3-region", s3.Region,
		"--cdn-url", "https://cdn.example.com", "--admin-token", admin,
		"--cloudflare-api-token", token, "--cloudflare-zone-id", zone, "--cloudflare-api-url", cdn.URL,
		"--cloudflare-purge-rate", "100/s",
		// Gateways of one deployment share the link-signing key.
		"--signing-key", strings.Repeat("ab", 32),
	}
	b := start(t, append([]string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, common...)...)
	a := start(t, append([]string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--peers", b.url}, common...)...)
	waitReady(t, a.url)
	waitReady(t, b.url)

	const body = `{"prompt":"a purge test skyline","size":"256x256"}`
	resp, out := generate(t, a.url, body)
	if got := resp.Header.Get("Cache-Status"); !strings.Contains(got, "fwd=miss") {
		t.Fatalf("first request on A: %q", got)
	}
	link := firstURL(t, out)
	if resp, _ := generate(t, b.url, body); !strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
		t.Fatalf("B does not share A's output: %q", resp.Header.Get("Cache-Status"))
	}
	if resp, _ := generate(t, b.url, body); resp.Header.Get("Cache-Status") != "imagegate; hit; detail=l1" {
		t.Fatalf("B's second request: %q", resp.Header.Get("Cache-Status"))
	}
	u, _ := url.Parse(link)
	hash := strings.TrimSuffix(strings.TrimPrefix(u.Path, "/o/"), ".png")
	onNode := func(base string) string { return base + u.Path + "?" + u.RawQuery }
	for _, base := range []string{a.url, b.url} {
		if r, err := client.Get(onNode(base)); err != nil || r.StatusCode != 200 {
			t.Fatalf("object on %s before purge: %v %v", base, r.StatusCode, err)
		}
	}

	purge := func() string {
		t.Helper()
		cmd := exec.Command(binary, "purge", "--gateway", a.url, "--object", hash)
		cmd.Env = append(cmd.Environ(), "IMAGEGATE_ADMIN_TOKEN="+admin)
		outb, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("imagegate purge: %v\n%s", err, outb)
		}
		return string(outb)
	}
	report := purge()
	if !strings.Contains(report, "ok  self") || !strings.Contains(report, "ok  "+b.url) {
		t.Errorf("purge report does not show both gateways:\n%s", report)
	}
	wantURL := "https://cdn.example.com/o/" + hash + ".png"
	if !slices.Contains(cdn.Purged().Files, wantURL) {
		t.Errorf("the CDN purge did not name %s: %+v", wantURL, cdn.Purged())
	}
	// Neither node serves the old bytes any more.
	for _, base := range []string{a.url, b.url} {
		r, err := client.Get(onNode(base))
		if err != nil || r.StatusCode != 404 {
			t.Errorf("object on %s after purge: %v %v, want 404", base, r.StatusCode, err)
		}
	}
	// Neither answers the request from cache: B regenerates it...
	if resp, _ := generate(t, b.url, body); !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=miss") {
		t.Errorf("B after purge: %q, want a miss", resp.Header.Get("Cache-Status"))
	}
	// ...and after a second purge (retro is deterministic: the same
	// output, the same hash), so does A.
	purge()
	if resp, _ := generate(t, a.url, body); !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=miss") {
		t.Errorf("A after purge: %q, want a miss", resp.Header.Get("Cache-Status"))
	}

	// A wrong admin token purges nothing.
	cmd := exec.Command(binary, "purge", "--gateway", a.url, "--object", hash, "--admin-token", "wrong-token-000000000")
	if outb, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(outb), "401") {
		t.Errorf("purge with a wrong token: %v\n%s", err, outb)
	}
}
