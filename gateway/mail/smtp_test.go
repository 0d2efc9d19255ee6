package mail_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/internal/testpeer"
)

const (
	smtpUser = "gateway@imagegate.test"
	// smtpPass needs percent-encoding in a URL, so the tests also prove the
	// URL's user info is decoded.
	smtpPass = "s3cret p@ss:w/rd?#%ü"
	from     = "imagegate <no-reply@imagegate.test>"
)

func resetMessage(to string) mail.Message {
	return mail.Message{
		To:       to,
		Subject:  "Réinitialisez votre mot de passe — imagegate ✓",
		Text:     "Open this link within 30 minutes:\nhttps://imagegate.test/reset?token=SECRET-TOKEN-123\n",
		HTML:     `<p>Open <a href="https://imagegate.test/reset?token=SECRET-TOKEN-123">this link</a> within 30 minutes.</p>`,
		Category: mail.CategoryAccount,
	}
}

func newSMTP(t *testing.T, cfg mail.Config, secrets ...string) *mail.SMTP {
	t.Helper()
	if cfg.From == "" {
		cfg.From = from
	}
	s, err := mail.NewSMTP(cfg, testLogger(t, append(secrets, smtpPass, url.UserPassword(smtpUser, smtpPass).String())...))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSMTPDelivers sends through a real aiosmtpd with AUTH and checks what
// arrived: envelope, headers, encoded UTF-8 subject, both bodies.
func TestSMTPDelivers(t *testing.T) {
	t.Parallel()
	srv := testpeer.SMTP(t, smtpUser, smtpPass)
	to := "ada.lovelace+reset@example.com"
	s := newSMTP(t, mail.Config{SMTPURL: srv.URL()}, to, "SECRET-TOKEN-123")

	news := mail.Message{
		To: "grace@example.org", Subject: "What's new", Text: "News.", Category: mail.CategoryNews,
		Unsubscribe: "https://imagegate.test/unsubscribe?u=abc",
	}
	for _, m := range []mail.Message{resetMessage(to), news} {
		if err := s.Send(t.Context(), m); err != nil {
			t.Fatalf("send: %v\nserver log:\n%s", err, srv.Output())
		}
	}

	got := srv.WaitMessages(t, 2)
	reset := got[0]
	if diff := cmp.Diff([]string{to}, reset.RcptTo); diff != "" {
		t.Errorf("envelope recipients (-want +got):\n%s", diff)
	}
	if reset.MailFrom != "no-reply@imagegate.test" || reset.AuthLogin != smtpUser {
		t.Errorf("MAIL FROM %q as %q, want no-reply@imagegate.test as %q", reset.MailFrom, reset.AuthLogin, smtpUser)
	}
	want := resetMessage(to)
	if got := decodedSubject(t, reset.Header); got != want.Subject {
		t.Errorf("subject %q, want %q", got, want.Subject)
	}
	if raw := reset.Header.Get("Subject"); !isASCII(raw) {
		t.Errorf("raw subject %q is not RFC 2047-encoded ASCII", raw)
	}
	for header, want := range map[string]string{
		"To":             "<" + to + ">",
		"From":           `"imagegate" <no-reply@imagegate.test>`,
		"Auto-Submitted": "auto-generated",
		"MIME-Version":   "1.0",
	} {
		if got := reset.Header.Get(header); got != want {
			t.Errorf("%s: %q, want %q", header, got, want)
		}
	}
	if id := reset.Header.Get("Message-Id"); !strings.HasSuffix(id, "@imagegate.test>") {
		t.Errorf("Message-ID %q is not under the sender's domain", id)
	}
	if _, err := reset.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if reset.Header.Get("List-Unsubscribe") != "" {
		t.Errorf("essential mail carries List-Unsubscribe %q", reset.Header.Get("List-Unsubscribe"))
	}
	text, html := decodeBodies(t, reset.Header, reset.Body)
	if diff := cmp.Diff(want.Text, text); diff != "" {
		t.Errorf("text body (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want.HTML, html); diff != "" {
		t.Errorf("HTML body (-want +got):\n%s", diff)
	}

	n := got[1]
	if n.Header.Get("List-Unsubscribe") != "<https://imagegate.test/unsubscribe?u=abc>" ||
		n.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Errorf("news unsubscribe headers: %q, %q", n.Header.Get("List-Unsubscribe"), n.Header.Get("List-Unsubscribe-Post"))
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// TestSMTPTLS delivers over STARTTLS (required, and opportunistic by
// default) and over implicit TLS, each to a server with a fresh
// self-signed certificate.
func TestSMTPTLS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		mode  testpeer.SMTPMode
		query string
	}{
		{"starttls required", testpeer.SMTPStartTLS, "?starttls=required"},
		{"starttls opportunistic", testpeer.SMTPStartTLS, ""},
		{"smtps", testpeer.SMTPImplicitTLS, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testpeer.SMTPWithTLS(t, smtpUser, smtpPass, tc.mode)
			s := newSMTP(t, mail.Config{SMTPURL: srv.URL() + tc.query, RootCAs: srv.RootCAs()})
			if err := s.Send(t.Context(), resetMessage("ada@example.com")); err != nil {
				t.Fatalf("send: %v\nserver log:\n%s", err, srv.Output())
			}
			got := srv.WaitMessages(t, 1)[0]
			if !got.TLS || got.AuthLogin != smtpUser {
				t.Errorf("delivered with TLS=%v as %q, want TLS as %q", got.TLS, got.AuthLogin, smtpUser)
			}
		})
	}
}

// TestSMTPRefusals covers failures after the URL is accepted: each must be
// a clear error that names neither password nor recipient, and no message
// may arrive.
func TestSMTPRefusals(t *testing.T) {
	t.Parallel()
	plain := testpeer.SMTP(t, smtpUser, smtpPass)
	tlsSrv := testpeer.SMTPWithTLS(t, smtpUser, smtpPass, testpeer.SMTPStartTLS)
	wrong := "Wr0ng-Pa55word!"
	withPass := func(raw, pass string) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(smtpUser, pass)
		return u.String()
	}
	for _, tc := range []struct {
		name    string
		srv     *testpeer.SMTPServer
		cfg     mail.Config
		to      string
		is      error
		mention string
	}{{
		name:    "wrong password",
		srv:     plain,
		cfg:     mail.Config{SMTPURL: withPass(plain.URL(), wrong)},
		is:      mail.ErrAuth,
		mention: "535",
	}, {
		name:    "starttls required but not offered",
		srv:     plain,
		cfg:     mail.Config{SMTPURL: plain.URL() + "?starttls=required"},
		mention: "STARTTLS",
	}, {
		name:    "untrusted certificate",
		srv:     tlsSrv,
		cfg:     mail.Config{SMTPURL: tlsSrv.URL()},
		mention: "certificate",
	}, {
		name:    "unknown recipient",
		srv:     plain,
		cfg:     mail.Config{SMTPURL: plain.URL()},
		to:      "unknown.user@example.com",
		is:      mail.ErrRejected,
		mention: "550",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			to := tc.to
			if to == "" {
				to = "ada@example.com"
			}
			before := len(tc.srv.Messages(t))
			s := newSMTP(t, tc.cfg, wrong, to)
			err := s.Send(t.Context(), resetMessage(to))
			if err == nil {
				t.Fatal("send succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q does not match %v", err, tc.is)
			}
			for _, secret := range []string{smtpPass, wrong, url.QueryEscape(smtpPass), to, "SECRET-TOKEN"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains %q", err, secret)
				}
			}
			if !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), tc.srv.Addr()) {
				t.Errorf("error %q should name the server %s and mention %q", err, tc.srv.Addr(), tc.mention)
			}
			if got := len(tc.srv.Messages(t)); got != before {
				t.Errorf("server received %d messages, want %d", got, before)
			}
		})
	}
}

// TestSMTPServerDown: a refused connection is a prompt, clear error.
func TestSMTPServerDown(t *testing.T) {
	t.Parallel()
	port := testpeer.RefusedPort(t) // bound, never listening
	u := url.URL{Scheme: "smtp", User: url.UserPassword(smtpUser, smtpPass), Host: testpeer.Addr(port)}
	s := newSMTP(t, mail.Config{SMTPURL: u.String()})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err := s.Send(ctx, resetMessage("ada@example.com"))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("error %v, want connection refused", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Send returned only after the deadline: %v", err)
	}
	if !strings.Contains(err.Error(), "connect") || !strings.Contains(err.Error(), testpeer.Addr(port)) || strings.Contains(err.Error(), smtpPass) {
		t.Errorf("error %q should say it could not connect to %s, without the password", err, testpeer.Addr(port))
	}
}

// TestSMTPHonoursContext: a server that accepts the connection and then
// says nothing cannot hold Send past the caller's deadline, even with a
// long configured timeout.
func TestSMTPHonoursContext(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // silent until the test ends
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	u := url.URL{Scheme: "smtp", User: url.UserPassword(smtpUser, smtpPass), Host: ln.Addr().String()}
	s := newSMTP(t, mail.Config{SMTPURL: u.String(), Timeout: 10 * time.Minute})

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err = s.Send(ctx, resetMessage("ada@example.com"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the context's deadline", err)
	}
}

// TestSMTPRefusesInvalidBeforeConnecting: header injection and other
// invalid messages never open a connection.
func TestSMTPRefusesInvalidBeforeConnecting(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	u := url.URL{Scheme: "smtp", User: url.UserPassword(smtpUser, smtpPass), Host: ln.Addr().String()}
	s := newSMTP(t, mail.Config{SMTPURL: u.String()})

	for name, m := range map[string]mail.Message{
		"CRLF in recipient": resetMessage("ada@example.com\r\nBcc: eve@example.com"),
		"LF in subject": func() mail.Message {
			m := resetMessage("ada@example.com")
			m.Subject = "Hi\nBcc: eve@example.com"
			return m
		}(),
		"two recipients": resetMessage("ada@example.com, eve@example.com"),
		"display name":   resetMessage("Ada <ada@example.com>"),
	} {
		err := s.Send(t.Context(), m)
		if !errors.Is(err, mail.ErrInvalidMessage) {
			t.Errorf("%s: error %v, want ErrInvalidMessage", name, err)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections were opened for invalid messages", n)
	}
}

// TestSMTPKeepsPasswordOffCleartext: to a server that is not on loopback
// and offers no TLS, the password is never sent. The server is reached
// through a forwarder on 127.0.0.2 that records every byte the client
// writes.
func TestSMTPKeepsPasswordOffCleartext(t *testing.T) {
	t.Parallel()
	srv := testpeer.SMTP(t, smtpUser, smtpPass)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		testpeer.Unavailable(t, "no second loopback address: %v", err)
	}
	sent := &testpeer.Buffer{}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		up, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			return
		}
		defer up.Close()
		go io.Copy(c, up)
		io.Copy(io.MultiWriter(up, sent), c)
	}()

	u := url.URL{Scheme: "smtp", User: url.UserPassword(smtpUser, smtpPass), Host: ln.Addr().String()}
	s := newSMTP(t, mail.Config{SMTPURL: u.String()})
	err = s.Send(t.Context(), resetMessage("ada@example.com"))
	if !errors.Is(err, mail.ErrAuth) || !strings.Contains(err.Error(), "unencrypted") {
		t.Fatalf("error %v, want ErrAuth refusing cleartext", err)
	}
	ln.Close()
	<-done
	if wire := sent.String(); strings.Contains(strings.ToUpper(wire), "AUTH") || !strings.Contains(wire, "EHLO") {
		t.Errorf("client sent AUTH in cleartext (or nothing at all):\n%s", wire)
	}
}

// TestSMTPConcurrent: one SMTP value serves concurrent senders, each on
// its own connection, and every message arrives once.
func TestSMTPConcurrent(t *testing.T) {
	t.Parallel()
	srv := testpeer.SMTP(t, smtpUser, smtpPass)
	s := newSMTP(t, mail.Config{SMTPURL: srv.URL()})
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			m := resetMessage("ada@example.com")
			m.Text = fmt.Sprintf("message %d\n", i)
			errs <- s.Send(t.Context(), m)
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var texts []string
	for _, m := range srv.WaitMessages(t, n) {
		text, _ := decodeBodies(t, m.Header, m.Body)
		texts = append(texts, text)
	}
	slices.Sort(texts)
	if len(texts) != n || len(slices.Compact(texts)) != n {
		t.Errorf("received %q, want %d distinct messages", texts, n)
	}
}
