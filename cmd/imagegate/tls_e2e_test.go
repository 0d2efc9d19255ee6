package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
	"github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1/inferencev1connect"
	"github.com/imagegate/imagegate/internal/testpeer"
)

// testPKI is a private CA and a server certificate it issued for
// 127.0.0.1 and localhost, written as PEM files the way an operator hands
// them to `imagegate inference` and the gateways.
type testPKI struct {
	ca     *testpeer.CA
	caFile string // the CA certificate alone: --inference-ca-file
	cert   string // server certificate: --tls-cert-file
	key    string // its key: --tls-key-file
	dir    string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{ca: testpeer.NewCA(t, "imagegate test CA"), dir: dir,
		caFile: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "tier.pem"), key: filepath.Join(dir, "tier-key.pem")}
	writeFile(t, p.caFile, p.ca.PEM())
	p.writeLeaf(t, p.cert, p.key, time.Now().Add(24*time.Hour))
	return p
}

// writeLeaf issues a server certificate for 127.0.0.1, ::1 and localhost
// valid until notAfter, writes it and its key, and returns its serial
// number.
func (p *testPKI) writeLeaf(t *testing.T, certFile, keyFile string, notAfter time.Time) int64 {
	t.Helper()
	leaf := p.ca.Issue(t, notAfter, "localhost", "127.0.0.1", "::1")
	writeFile(t, certFile, leaf.CertPEM)
	writeFile(t, keyFile, leaf.KeyPEM)
	return leaf.Serial
}

// client returns an HTTP client that trusts only the test CA and offers
// HTTP/2 and HTTP/1.1, letting the server choose.
func (p *testPKI) client(t *testing.T) *http.Client {
	t.Helper()
	roots := p.ca.Pool()
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	tr := &http.Transport{Protocols: protocols, TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsTierGenerations reads the tier's generation counter over TLS, with
// the token /metrics requires there.
func tlsTierGenerations(t *testing.T, c *http.Client, tierURL, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", tierURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("tier /metrics: %d %s", resp.StatusCode, raw)
	}
	total := 0
	for _, m := range generationsRE.FindAllStringSubmatch(string(raw), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total
}

func TestInferenceServesTLSAndRequiresToken(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	const token = "tier-over-tls-0123456789"
	tier := start(t, "inference", "--addr", "127.0.0.1:0",
		"--tls-cert-file", pki.cert, "--tls-key-file", pki.key, "--inference-token", token)
	if !strings.HasPrefix(tier.url, "https://") {
		t.Fatalf("tier announced %s, want an https:// URL", tier.url)
	}
	c := pki.client(t)

	// /metrics speaks HTTP/2 (ALPN) and, on a TLS tier, needs the token.
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", 401},
		{"wrong token", "Bearer not-the-token-000000", 401},
		{"token", "Bearer " + token, 200},
	} {
		req, _ := http.NewRequest("GET", tier.url+"/metrics", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("/metrics with %s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("/metrics with %s: %s, want HTTP/2 by ALPN", tc.name, resp.Proto)
		}
	}

	// The Connect service refuses callers without the token, TLS or not.
	svc := inferencev1connect.NewInferenceServiceClient(c, tier.url)
	_, err := svc.ListModels(t.Context(), connect.NewRequest(&inferencev1.ListModelsRequest{}))
	if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
		t.Errorf("ListModels without token: %v, want unauthenticated", err)
	}
	req := connect.NewRequest(&inferencev1.ListModelsRequest{})
	req.Header().Set("Authorization", "Bearer "+token)
	res, err := svc.ListModels(t.Context(), req)
	if err != nil || len(res.Msg.GetModels()) == 0 || res.Msg.GetModels()[0].GetName() != "retro" {
		t.Errorf("ListModels with token: %v %v", res, err)
	}
}

func TestGatewayReachesTierOverTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	const token = "gateway-to-tier-0123456789"
	tier := start(t, "inference", "--addr", "127.0.0.1:0",
		"--tls-cert-file", pki.cert, "--tls-key-file", pki.key, "--inference-token", token)
	// The CA arrives through the environment, as a Fly secret or a
	// container's env would bring it.
	gw := startEnv(t, []string{"IMAGEGATE_INFERENCE_CA_FILE=" + pki.caFile},
		"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--inference", tier.url, "--inference-token", token)
	waitReady(t, gw.url)
	resp, out := generate(t, gw.url, `{"prompt":"a sunset delivered over TLS","size":"256x256"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %v\n%s", resp.StatusCode, out, gw.logs())
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=miss") {
		t.Errorf("Cache-Status %q, want a miss served by the tier", cs)
	}
	img, err := client.Get(firstURL(t, out))
	if err != nil {
		t.Fatal(err)
	}
	img.Body.Close()
	if img.StatusCode != 200 || img.Header.Get("Content-Type") != "image/png" {
		t.Errorf("output link: %d %s", img.StatusCode, img.Header.Get("Content-Type"))
	}
	if got := tlsTierGenerations(t, pki.client(t), tier.url, token); got != 1 {
		t.Errorf("tier counted %d generations, want 1", got)
	}
}

func TestGatewayRefusesUntrustedTier(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	const token = "untrusted-tier-0123456789"
	tier := start(t, "inference", "--addr", "127.0.0.1:0",
		"--tls-cert-file", pki.cert, "--tls-key-file", pki.key, "--inference-token", token)
	// No CA given: the system roots do not know the tier's private CA.
	gw := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--inference", tier.url,
		"--inference-token", token, "--inference-timeout", "2s")
	resp, out := generate(t, gw.url, `{"prompt":"nobody trusts this tier","size":"256x256"}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("untrusted tier: status %d %v, want 503 with Retry-After", resp.StatusCode, out)
	}
	if logs := gw.logs(); !strings.Contains(logs, "x509: certificate signed by unknown authority") {
		t.Errorf("the gateway's log does not say why the tier is unreachable:\n%s", logs)
	}
	if got := tlsTierGenerations(t, pki.client(t), tier.url, token); got != 0 {
		t.Errorf("the tier generated %d images for a gateway that could not verify it", got)
	}
}

func TestInferenceRefusesUnsafeTLSSetups(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	expiredCert, expiredKey := filepath.Join(pki.dir, "old.pem"), filepath.Join(pki.dir, "old-key.pem")
	pki.writeLeaf(t, expiredCert, expiredKey, time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"certificate without key", []string{"--tls-cert-file", pki.cert, "--inference-token", "t0123456789"}, "go together"},
		{"key without certificate", []string{"--tls-key-file", pki.key, "--inference-token", "t0123456789"}, "go together"},
		{"TLS without token", []string{"--tls-cert-file", pki.cert, "--tls-key-file", pki.key}, "needs --inference-token"},
		{"key of another certificate", []string{"--tls-cert-file", pki.cert, "--tls-key-file", expiredKey, "--inference-token", "t0123456789"}, "private key does not match"},
		{"expired certificate", []string{"--tls-cert-file", expiredCert, "--tls-key-file", expiredKey, "--inference-token", "t0123456789"}, "expired"},
		{"missing file", []string{"--tls-cert-file", pki.cert + ".gone", "--tls-key-file", pki.key, "--inference-token", "t0123456789"}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout bytes.Buffer
			args := append([]string{"inference", "--addr", "127.0.0.1:0"}, tc.args...)
			err := run(t.Context(), args, &stdout, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
			if strings.Contains(stdout.String(), "listening") {
				t.Errorf("the tier started listening: %s", stdout.String())
			}
		})
	}
}

func TestCertReloaderServesRenewedCertificates(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	certFile, keyFile := filepath.Join(pki.dir, "live.pem"), filepath.Join(pki.dir, "live-key.pem")
	first := pki.writeLeaf(t, certFile, keyFile, time.Now().Add(24*time.Hour))
	logs := &testpeer.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	r, err := newCertReloader(certFile, keyFile, logger)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		c, err := r.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.Int64()
	}
	// touch gives the files a modification time of their own, whatever
	// the file system's clock resolution.
	step := time.Now()
	touch := func() {
		t.Helper()
		step = step.Add(time.Minute)
		for _, f := range []string{certFile, keyFile} {
			if err := os.Chtimes(f, step, step); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := serial(); got != first {
		t.Fatalf("serving serial %d, want %d", got, first)
	}

	renewed := pki.writeLeaf(t, certFile, keyFile, time.Now().Add(48*time.Hour))
	touch()
	if got := serial(); got != renewed {
		t.Errorf("after renewal serving serial %d, want %d", got, renewed)
	}

	// A broken write keeps the last good certificate and says so once.
	writeFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"))
	touch()
	for range 3 {
		if got := serial(); got != renewed {
			t.Errorf("after a broken write serving serial %d, want the previous %d", got, renewed)
		}
	}
	complaints := strings.Count(logs.String(), "cannot be used")
	if complaints != 1 {
		t.Errorf("logged the broken files %d times, want once:\n%s", complaints, logs.String())
	}

	// A vanished file is no reason to stop serving either.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != renewed {
		t.Errorf("with the file gone serving serial %d, want %d", got, renewed)
	}

	// The next good write is picked up.
	again := pki.writeLeaf(t, certFile, keyFile, time.Now().Add(72*time.Hour))
	touch()
	if got := serial(); got != again {
		t.Errorf("after repair serving serial %d, want %d", got, again)
	}
}

func TestLoadCAFile(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	leafPEM, err := os.ReadFile(pki.cert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(leafPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	if pool, err := loadCAFile(""); pool != nil || err != nil {
		t.Errorf(`loadCAFile("") = %v, %v; want nil, nil (system roots)`, pool, err)
	}
	pool, err := loadCAFile(pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("a certificate the CA issued does not verify against the loaded pool: %v", err)
	}

	notPEM := filepath.Join(pki.dir, "not-pem.txt")
	writeFile(t, notPEM, []byte("this is no certificate\n"))
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(pki.dir, "absent.pem"), "no such file"},
		{"not PEM", notPEM, "no PEM certificates"},
	} {
		if _, err := loadCAFile(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestCheckTLSFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		cert, key, tok string
		wantErr        bool
	}{
		{"plain h2c", "", "", "", false},
		{"plain h2c with token", "", "", "tok", false},
		{"TLS with token", "c.pem", "k.pem", "tok", false},
		{"TLS without token", "c.pem", "k.pem", "", true},
		{"certificate alone", "c.pem", "", "tok", true},
		{"key alone", "", "k.pem", "tok", true},
	} {
		if err := checkTLSFlags(tc.cert, tc.key, tc.tok); (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.wantErr)
		}
	}
}

func TestWarnIfExposed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, addr, token, want string
	}{
		{"loopback without token", "127.0.0.1:9090", "", ""},
		{"loopback with token", "[::1]:9090", "s3cr3t-xyz", ""},
		{"all interfaces without token", "0.0.0.0:9090", "", "accepts any caller"},
		{"all interfaces with token", "[::]:9090", "s3cr3t-xyz", "clear text"},
		{"private address with token", "10.1.2.3:9090", "s3cr3t-xyz", "clear text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			a, err := net.ResolveTCPAddr("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			warnIfExposed(slog.New(slog.NewTextHandler(&logs, nil)), a, tc.token)
			if tc.want == "" && logs.Len() > 0 {
				t.Errorf("warned on loopback: %s", logs.String())
			}
			if tc.want != "" && !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log %q, want a warning about %q", logs.String(), tc.want)
			}
			if tc.token != "" && strings.Contains(logs.String(), tc.token) {
				t.Errorf("the log carries the token: %s", logs.String())
			}
		})
	}
}
