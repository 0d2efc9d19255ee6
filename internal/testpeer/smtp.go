package testpeer

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// smtpScript is the aiosmtpd server the SMTP peer runs (see its docstring).
//
//go:embed testdata/smtpd.py
var smtpScript []byte

// systemPython is the interpreter Debian's python3-aiosmtpd installs into.
const systemPython = "/usr/bin/python3"

// smtpWait bounds how long WaitMessages waits for deliveries.
const smtpWait = 60 * time.Second

// SMTPMode says how an SMTP peer protects its connections.
type SMTPMode int

const (
	// SMTPPlain offers no TLS and accepts AUTH in cleartext.
	SMTPPlain SMTPMode = iota
	// SMTPStartTLS offers STARTTLS and refuses every command but EHLO,
	// NOOP and QUIT until the client has used it.
	SMTPStartTLS
	// SMTPImplicitTLS speaks TLS from the first byte (smtps, port 465 style).
	SMTPImplicitTLS
)

func (m SMTPMode) String() string {
	switch m {
	case SMTPStartTLS:
		return "starttls"
	case SMTPImplicitTLS:
		return "smtps"
	default:
		return "plain"
	}
}

// SMTPServer is a running aiosmtpd peer with one account. AUTH (PLAIN or
// LOGIN) is required before a message is accepted, and every accepted
// message is kept for the test to read back. Like a real MTA with unknown
// users, it refuses recipients whose local part starts with "unknown"
// (550 5.1.1, echoing the address).
type SMTPServer struct {
	proc    *Process
	dir     string
	port    int
	user    string
	pass    string
	mode    SMTPMode
	rootCAs *x509.CertPool
}

// ReceivedMessage is one message the SMTP peer accepted.
type ReceivedMessage struct {
	// MailFrom and RcptTo are the SMTP envelope.
	MailFrom string
	RcptTo   []string
	// AuthLogin is the user name the client authenticated as.
	AuthLogin string
	// TLS reports whether the message arrived over an encrypted connection.
	TLS bool
	// Raw is the message exactly as received (after dot-unstuffing).
	Raw []byte
	// Header is Raw's header, parsed with net/mail.
	Header mail.Header
	// Body is Raw's body, still in its transfer encoding.
	Body []byte
}

// SMTP starts a cleartext SMTP peer that requires AUTH as user/pass.
func SMTP(t testing.TB, user, pass string) *SMTPServer {
	t.Helper()
	return SMTPWithTLS(t, user, pass, SMTPPlain)
}

// SMTPWithTLS starts an SMTP peer that requires AUTH as user/pass and
// protects connections as mode says, with a self-signed certificate for
// 127.0.0.1 generated for this server alone (see RootCAs).
func SMTPWithTLS(t testing.TB, user, pass string, mode SMTPMode) *SMTPServer {
	t.Helper()
	if _, err := os.Stat(systemPython); err != nil {
		Missing(t, "python3", "Debian package python3")
	}
	if out, err := exec.Command(systemPython, "-c", "import aiosmtpd").CombinedOutput(); err != nil {
		Missing(t, "aiosmtpd", fmt.Sprintf("Debian package python3-aiosmtpd: %v: %s", err, bytes.TrimSpace(out)))
	}

	work := t.TempDir()
	s := &SMTPServer{dir: filepath.Join(work, "maildir"), user: user, pass: pass, mode: mode}
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(work, "smtpd.py")
	if err := os.WriteFile(script, smtpScript, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-u", script, "--maildir", s.dir, "--mode", mode.String()}
	if mode != SMTPPlain {
		certFile, keyFile, pool := serverCert(t, work)
		s.rootCAs = pool
		args = append(args, "--cert", certFile, "--key", keyFile)
	}
	env := []string{"IMAGEGATE_TEST_SMTP_USER=" + user, "IMAGEGATE_TEST_SMTP_PASSWORD=" + pass}

	// The server binds an ephemeral port itself and publishes it in .port,
	// so there is no window in which another process can take the port.
	s.proc = Start(t, systemPython, args, env, func(ctx context.Context) error {
		b, err := os.ReadFile(filepath.Join(s.dir, ".port"))
		if err != nil {
			return err
		}
		port, err := strconv.Atoi(string(b))
		if err != nil {
			return err
		}
		if err := DialReady(Addr(port))(ctx); err != nil {
			return err
		}
		s.port = port
		return nil
	})
	return s
}

// Addr is the server's host:port on loopback.
func (s *SMTPServer) Addr() string { return Addr(s.port) }

// URL is smtp://user:pass@127.0.0.1:port (smtps:// for SMTPImplicitTLS),
// with user and password percent-encoded.
func (s *SMTPServer) URL() string {
	scheme := "smtp"
	if s.mode == SMTPImplicitTLS {
		scheme = "smtps"
	}
	u := url.URL{Scheme: scheme, User: url.UserPassword(s.user, s.pass), Host: s.Addr()}
	return u.String()
}

// RootCAs holds the certificate the server presents; nil for SMTPPlain.
func (s *SMTPServer) RootCAs() *x509.CertPool { return s.rootCAs }

// Output is what the server process has logged so far.
func (s *SMTPServer) Output() string { return s.proc.Output() }

// Messages returns every message accepted so far, oldest first.
func (s *SMTPServer) Messages(t testing.TB) []ReceivedMessage {
	t.Helper()
	msgs, err := s.read()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// WaitMessages waits until the server has accepted at least n messages and
// returns all of them, oldest first. It fails t if that takes longer than
// 60 s or the server exits.
func (s *SMTPServer) WaitMessages(t testing.TB, n int) []ReceivedMessage {
	t.Helper()
	deadline := time.NewTimer(smtpWait)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs, err := s.read()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-s.proc.done:
			t.Fatalf("smtp server exited with %d of %d messages (%v):\n%s", len(msgs), n, s.proc.err, s.Output())
		case <-deadline.C:
			t.Fatalf("smtp server has %d of %d messages after %s:\n%s", len(msgs), n, smtpWait, s.Output())
		case <-tick.C:
		}
	}
}

// read loads the saved messages; dot-files are the server's work in
// progress and its port file.
func (s *SMTPServer) read() ([]ReceivedMessage, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	msgs := make([]ReceivedMessage, 0, len(names))
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, err
		}
		var rec struct {
			MailFrom  string   `json:"mail_from"`
			RcptTos   []string `json:"rcpt_tos"`
			AuthLogin string   `json:"auth_login"`
			TLS       bool     `json:"tls"`
			Data      []byte   `json:"data"`
		}
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("smtp server record %s: %w", name, err)
		}
		m := ReceivedMessage{MailFrom: rec.MailFrom, RcptTo: rec.RcptTos, AuthLogin: rec.AuthLogin, TLS: rec.TLS, Raw: rec.Data}
		parsed, err := mail.ReadMessage(bytes.NewReader(rec.Data))
		if err != nil {
			return nil, fmt.Errorf("smtp server message %s does not parse: %w\n%s", name, err, rec.Data)
		}
		m.Header = parsed.Header
		var body bytes.Buffer
		if _, err := body.ReadFrom(parsed.Body); err != nil {
			return nil, err
		}
		m.Body = body.Bytes()
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// serverCert writes a certificate for 127.0.0.1 and localhost, issued by
// a fresh CA, into dir and returns the PEM files and a pool trusting it.
func serverCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := NewCA(t, "imagegate test SMTP CA")
	leaf := ca.Issue(t, time.Now().Add(24*time.Hour), "127.0.0.1", "localhost")
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for file, data := range map[string][]byte{certFile: leaf.CertPEM, keyFile: leaf.KeyPEM} {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile, ca.Pool()
}
