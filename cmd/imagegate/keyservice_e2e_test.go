package main

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/keyservice"
	"github.com/imagegate/imagegate/store/postgres"
)

// keyFileSlot reads one 48-byte slot (16-byte owner tag, 32-byte key) of
// a key file, as whoever holds a copy of the file could.
func keyFileSlot(t *testing.T, path string, slot uint64) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 48)
	if off := int(slot) * 48; off < len(raw) {
		copy(out, raw[off:])
	}
	return out
}

// keyFilesOf is every key file under dir, for checking that gateways
// keep none of their own.
func keyFilesOf(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".keys") || strings.HasSuffix(p, ".daykeys") || strings.HasSuffix(p, ".reportkeys")) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// TestThreeGatewaysShareOneKeyService runs a fleet as several regions
// would: three gateway processes with separate data directories and no
// key directory, on one PostgreSQL database, and one `imagegate keys
// serve` process keeping the key files. An account made on one gateway
// signs in and reads its sealed history on the others; an erasure
// through one zeroes the account's slot in the service's key file; a
// wrong token is refused and changes nothing; and with the service down a
// cache hit is still served while account reads fail (and recover once it
// is back), never taking the outage for an erasure.
func TestThreeGatewaysShareOneKeyService(t *testing.T) {
	t.Parallel()
	const (
		token    = "fleet-key-service-token-0123456789abcdef"
		password = "a long enough passphrase"
		prompt   = "a lighthouse sealed by the key service"
	)
	pg := testpeer.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	keyDir := t.TempDir()
	keyAddr := freeLoopbackAddr(t)
	startKeys := func() *proc {
		cmd := exec.Command(binary, "keys", "serve", "--addr", keyAddr, "--key-dir", keyDir)
		cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=info", "IMAGEGATE_KEY_SERVICE_TOKEN="+token)
		return startAll(t, []*exec.Cmd{cmd})[0]
	}
	keys := startKeys()
	keyService := "http://" + keyAddr
	if keys.url != keyService {
		t.Fatalf("keys serve listens on %s, want %s", keys.url, keyService)
	}

	var dirs []string
	var cmds []*exec.Cmd
	for range 3 {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		cmd := exec.Command(binary, "--addr", "127.0.0.1:0", "--data-dir", dir, "--database-url", dbURL,
			"--key-service-url", keyService, "--rate-limits", "off", "--lifecycle-interval", "200ms")
		cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn", "IMAGEGATE_KEY_SERVICE_TOKEN="+token)
		cmds = append(cmds, cmd)
	}
	gws := startAll(t, cmds)
	for _, g := range gws {
		waitReady(t, g.url)
	}
	for _, dir := range dirs {
		if files := keyFilesOf(t, dir); len(files) != 0 {
			t.Errorf("a gateway on the key service made key files of its own: %v", files)
		}
	}
	// The test's own view, as a fourth client of the database and service.
	kc, err := keyservice.NewClient(keyservice.ClientConfig{URL: keyService, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(t.Context(), postgres.Config{URL: dbURL, Keys: kc})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	accountsFile := filepath.Join(keyDir, "imagegate.db.keys")

	const email = "fleet-keys@example.com"
	u := newJarClient(t)
	t.Run("an account made on one gateway works on the others", func(t *testing.T) {
		u.expect(t, "POST", gws[0].url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
		u.expect(t, "POST", gws[1].url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
		for _, g := range gws {
			if raw := u.expect(t, "GET", g.url+"/v1/account", "", 200); !strings.Contains(string(raw), email) {
				t.Errorf("%s does not open the account's sealed email: %s", g.url, raw)
			}
		}
		u.expect(t, "POST", gws[1].url+"/v1/images/generations", `{"prompt":"`+prompt+`","size":"256x256","private":true}`, 200)
		acct, err := db.AccountByEmail(email)
		if err != nil {
			t.Fatal(err)
		}
		pollUntil(t, "the generation recorded", func() bool { return db.GenerationCount(acct.ID) == 1 })
		if hist := u.expect(t, "GET", gws[2].url+"/v1/account/generations", "", 200); !strings.Contains(string(hist), prompt) {
			t.Errorf("the history read on another gateway lacks the sealed prompt: %s", hist)
		}
		// The operator's check runs on the key service too, beside the
		// live gateways, with no key files of its own.
		reconcile := exec.Command(binary, "billing", "reconcile", "--data-dir", t.TempDir(), "--database-url", dbURL, "--key-service-url", keyService)
		reconcile.Env = append(os.Environ(), "IMAGEGATE_KEY_SERVICE_TOKEN="+token)
		if out, err := reconcile.CombinedOutput(); err != nil || !strings.Contains(string(out), "ok: every balance equals its ledger") {
			t.Errorf("billing reconcile through the key service: %v\n%s", err, out)
		}
	})

	acct, err := db.AccountByEmail(email)
	if err != nil {
		t.Fatal(err)
	}
	slot := accountSlot(t, dbURL, acct.ID)
	if isZeroBytes(keyFileSlot(t, accountsFile, slot)) {
		t.Fatalf("the account's slot %d is empty in the service's key file before erasure", slot)
	}

	t.Run("a wrong token is refused and changes nothing", func(t *testing.T) {
		before, err := os.ReadFile(accountsFile)
		if err != nil {
			t.Fatal(err)
		}
		body := `{"op":"destroy","file":"accounts","slot":` + strconv.FormatUint(slot, 10) + `}`
		for _, auth := range []string{"", "Bearer " + token + "-not", "Bearer " + strings.Repeat("x", len(token))} {
			req, _ := http.NewRequest("POST", keyService+"/v1/keys", strings.NewReader(body))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("destroy with auth %q: %d, want 401", auth, resp.StatusCode)
			}
		}
		// A gateway with the wrong token does not start.
		out, err := exec.Command(binary, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL,
			"--key-service-url", keyService, "--key-service-token", strings.Repeat("w", 40)).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "401") {
			t.Errorf("a gateway with a wrong key service token: %v\n%s", err, out)
		}
		if after, _ := os.ReadFile(accountsFile); !bytes.Equal(before, after) {
			t.Error("refused requests changed the key file")
		}
		if strings.Contains(keys.logs(), token) || strings.Contains(keys.logs(), "wwwwwwww") {
			t.Errorf("a token is in the key service's log:\n%s", keys.logs())
		}
		if _, err := db.Account(acct.ID); err != nil {
			t.Errorf("the account after refused destroys: %v", err)
		}
	})

	t.Run("with the key service down hits are served and account reads fail, then recover", func(t *testing.T) {
		const anon = `{"prompt":"a harbour served while the keys sleep","size":"256x256"}`
		if resp, out := generate(t, gws[0].url, anon); resp.StatusCode != 200 {
			t.Fatalf("anonymous miss: %d %v", resp.StatusCode, out)
		}
		if err := keys.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		keys.cmd.Wait()
		if resp, out := generate(t, gws[0].url, anon); resp.StatusCode != 200 {
			t.Errorf("cache hit with the key service down: %d %v, want 200", resp.StatusCode, out)
		}
		if resp, out := generate(t, gws[1].url, `{"prompt":"a quay drawn for nobody in particular","size":"256x256"}`); resp.StatusCode != 200 {
			t.Errorf("anonymous miss with the key service down: %d %v, want 200 (no personal data to seal)", resp.StatusCode, out)
		}
		code, body := u.send(t, "GET", gws[2].url+"/v1/account", "")
		if code < 500 {
			t.Errorf("account read with the key service down: %d %s, want a 5xx (not a sign-out, not an erasure)", code, body)
		}
		keys = startKeys()
		if raw := u.expect(t, "GET", gws[2].url+"/v1/account", "", 200); !strings.Contains(string(raw), email) {
			t.Errorf("the account after the key service came back: %s", raw)
		}
	})

	t.Run("an erasure on one gateway destroys the key in the service's file", func(t *testing.T) {
		u.expect(t, "DELETE", gws[2].url+"/v1/account", `{"password":"`+password+`"}`, 202)
		waitErasuresDone(t, db)
		if got := keyFileSlot(t, accountsFile, slot); !isZeroBytes(got) {
			t.Errorf("slot %d of the service's key file after erasure: %x, want zeros", slot, got)
		}
		if _, err := kc.Key(store.AccountKeys, slot, store.KeyTag{}); !errors.Is(err, store.ErrKeyDestroyed) {
			t.Errorf("the service still has a key in the erased slot: %v", err)
		}
		for _, g := range gws {
			if code, _ := newJarClient(t).send(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`); code != 401 {
				t.Errorf("login on %s after the erasure: %d, want 401", g.url, code)
			}
		}
		raw, err := os.ReadFile(accountsFile)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(email)) {
			t.Error("the email is in the key file")
		}
	})
}

// accountSlot is the key slot the database gives an account.
func accountSlot(t *testing.T, dbURL, id string) uint64 {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var slot int64
	if err := c.QueryRow(t.Context(), `SELECT slot FROM accounts WHERE id = $1`, id).Scan(&slot); err != nil {
		t.Fatal(err)
	}
	return uint64(slot)
}

func isZeroBytes(b []byte) bool { return bytes.Equal(b, make([]byte, len(b))) }

// TestKeyServiceOverTLS serves the key files over HTTPS with a private
// CA's certificate: a gateway given the CA (--key-service-ca-file) seals
// an account's data through it, one without it refuses to start (its
// token never reaches an unverified server), plain HTTP to the TLS port
// gets nothing, and SIGTERM stops the service cleanly.
func TestKeyServiceOverTLS(t *testing.T) {
	t.Parallel()
	const token = "tls-key-service-token-0123456789abcdef"
	pki := newTestPKI(t)
	keyDir := t.TempDir()
	cmd := exec.Command(binary, "keys", "serve", "--addr", "127.0.0.1:0", "--key-dir", keyDir,
		"--tls-cert-file", pki.cert, "--tls-key-file", pki.key)
	cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn", "IMAGEGATE_KEY_SERVICE_TOKEN="+token)
	keys := startCmd(t, cmd)
	if !strings.HasPrefix(keys.url, "https://") {
		t.Fatalf("keys serve with a certificate listens on %s", keys.url)
	}
	if resp, err := pki.client(t).Get(keys.url + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz over TLS: %v %v", resp, err)
	}
	if resp, err := client.Get("http://" + strings.TrimPrefix(keys.url, "https://") + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Error("the TLS port answers plain HTTP")
	}
	dbURL := testpeer.StartPostgres(t).NewDatabase(t)

	// Without the CA, the gateway cannot verify the service and stops.
	out, err := exec.Command(binary, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL,
		"--key-service-url", keys.url, "--key-service-token", token).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("a gateway that does not trust the key service's CA: %v\n%s", err, out)
	}

	gw := startEnv(t, []string{"IMAGEGATE_KEY_SERVICE_TOKEN=" + token, "IMAGEGATE_KEY_SERVICE_CA_FILE=" + pki.caFile},
		"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL, "--key-service-url", keys.url)
	waitReady(t, gw.url)
	u := newJarClient(t)
	u.expect(t, "POST", gw.url+"/v1/auth/signup", `{"email":"tls-keys@example.com","password":"a long enough passphrase","over_18":true}`, 202)
	u.expect(t, "POST", gw.url+"/v1/auth/login", `{"email":"tls-keys@example.com","password":"a long enough passphrase"}`, 200)
	if raw := u.expect(t, "GET", gw.url+"/v1/account", "", 200); !strings.Contains(string(raw), "tls-keys@example.com") {
		t.Errorf("account over a TLS key service: %s", raw)
	}
	if err := keys.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := keys.cmd.Wait(); err != nil {
		t.Errorf("keys serve did not exit cleanly on SIGTERM: %v\n%s", err, keys.logs())
	}
}
