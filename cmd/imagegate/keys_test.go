package main

import (
	"io"
	"strings"
	"testing"
)

// TestKeyServiceFlagsAreChecked: settings that cannot work are refused
// before anything is opened, with a message naming the flag, and leave no
// key files behind.
func TestKeyServiceFlagsAreChecked(t *testing.T) {
	t.Setenv("IMAGEGATE_KEY_SERVICE_TOKEN", "")
	t.Setenv("IMAGEGATE_DATABASE_URL", "")
	t.Setenv("IMAGEGATE_KEY_DIR", "")
	const token = "a-key-service-token-of-32-chars-or-more"
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"keys", "serve", "--addr", "127.0.0.1:0", "--key-dir", dir}, "--key-service-token"},
		{[]string{"keys", "serve", "--addr", "127.0.0.1:0", "--key-dir", dir, "--key-service-token", "short"}, "at least 32"},
		{[]string{"keys", "serve", "--addr", "127.0.0.1:0", "--key-dir", dir, "--key-service-token", token, "--tls-cert-file", "c.pem"}, "go together"},
		{[]string{"keys", "frobnicate"}, "unknown command"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--key-service-url", "http://127.0.0.1:1", "--key-service-token", token}, "needs --database-url"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--database-url", "postgres://127.0.0.1:1/x", "--key-service-url", "http://127.0.0.1:1", "--key-service-token", token, "--key-dir", dir}, "exclusive"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--database-url", "postgres://127.0.0.1:1/x", "--key-service-url", "http://127.0.0.1:1"}, "--key-service-token"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--key-service-ca-file", "ca.pem"}, "needs --key-service-url"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--database-url", "postgres://127.0.0.1:1/x", "--key-service-url", "ftp://keys", "--key-service-token", token}, "--key-service-url"},
		{[]string{"billing", "reconcile", "--data-dir", dir, "--key-service-url", "http://127.0.0.1:1", "--key-service-token", token}, "needs --database-url"},
	} {
		err := run(t.Context(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("imagegate %s: %v, want an error about %s", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	if files := keyFilesOf(t, dir); len(files) != 0 {
		t.Errorf("refused settings left key files: %v", files)
	}
}
