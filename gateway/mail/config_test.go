package mail_test

import (
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/mail"
)

type parsedURL struct {
	Host       string
	Port       int
	User, Pass string
}

// urlCases seed FuzzSMTPURL as well. The password "hunter2-Secret" must
// never appear in an error.
var urlCases = []struct {
	raw  string
	want parsedURL // zero Host means an error is expected
}{
	{"smtp://user:hunter2-Secret@mail.example.com", parsedURL{"mail.example.com", 587, "user", "hunter2-Secret"}},
	{"smtp://mail.example.com:25", parsedURL{"mail.example.com", 25, "", ""}},
	{"smtps://user:hunter2-Secret@mail.example.com", parsedURL{"mail.example.com", 465, "user", "hunter2-Secret"}},
	{"SMTPS://user:hunter2-Secret@mail.example.com:2465/", parsedURL{"mail.example.com", 2465, "user", "hunter2-Secret"}},
	{"smtp://user:hunter2-Secret@mail.example.com:587?starttls=required", parsedURL{"mail.example.com", 587, "user", "hunter2-Secret"}},
	{"smtp://user:hunter2-Secret@mail.example.com?starttls=opportunistic", parsedURL{"mail.example.com", 587, "user", "hunter2-Secret"}},
	{"smtp://ada%40example.com:p%40ss%3Aw%2Frd%3F%23%25@[::1]:2525", parsedURL{"::1", 2525, "ada@example.com", "p@ss:w/rd?#%"}},
	{"smtp://user:hunter2-Secret@127.0.0.1:0", parsedURL{}},
	{"smtp://user:hunter2-Secret@127.0.0.1:65536", parsedURL{}},
	{"http://user:hunter2-Secret@mail.example.com", parsedURL{}},
	{"mail.example.com:587", parsedURL{}},
	{"smtp://user:hunter2-Secret@", parsedURL{}},
	{"smtp:user:hunter2-Secret@mail.example.com", parsedURL{}},
	{"smtp://user@mail.example.com", parsedURL{}},
	{"smtp://:hunter2-Secret@mail.example.com", parsedURL{}},
	{"smtp://user:hunter2-Secret@mail.example.com/path", parsedURL{}},
	{"smtp://user:hunter2-Secret@mail.example.com?starttls=sometimes", parsedURL{}},
	{"smtp://user:hunter2-Secret@mail.example.com?starttls=required&starttls=required", parsedURL{}},
	{"smtps://user:hunter2-Secret@mail.example.com?starttls=required", parsedURL{}},
	{"smtp://user:hunter2-Secret@mail.example.com?tls=yes", parsedURL{}},
	// Unencoded reserved characters: url.Parse's own error would quote
	// pieces of the password.
	{"smtp://user:hunter2-Secret#x@mail.example.com", parsedURL{}},
	{"smtp://user:123?hunter2-Secret=1@mail.example.com", parsedURL{}},
	{"smtp://user:123/hunter2-Secret@mail.example.com", parsedURL{}},
	{"smtp://user:hunter2-Secret@mail.example.com:port", parsedURL{}},
	{"smtp://user:hunter2 Secret@mail.example.com", parsedURL{}},
	{"smtp://user:hunter2-Secret%zz@mail.example.com", parsedURL{}},
	{"smtp://user:hunter2-Secret@mail.example.com\n", parsedURL{}},
}

func TestParseSMTPURL(t *testing.T) {
	t.Parallel()
	for _, tc := range urlCases {
		t.Run(tc.raw, func(t *testing.T) {
			t.Parallel()
			host, port, user, pass, err := mail.ParseSMTPURL(tc.raw)
			if tc.want.Host == "" {
				if err == nil {
					t.Fatalf("accepted, want an error")
				}
				for _, secret := range []string{"hunter2", "Secret", tc.raw} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q contains %q", err, secret)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, parsedURL{host, port, user, pass}); diff != "" {
				t.Errorf("parsed (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzSMTPURL: any user and password survive percent-encoding into a URL
// and back, and no error quotes the password.
func FuzzSMTPURL(f *testing.F) {
	for _, tc := range urlCases {
		f.Add(tc.raw, "user", "hunter2-Secret")
	}
	f.Fuzz(func(t *testing.T, raw, user, pass string) {
		if _, _, _, _, err := mail.ParseSMTPURL(raw); err != nil {
			// With the password taken as everything between the first ':'
			// after "//" and the last '@', a long enough one must not show.
			if i, j := strings.Index(raw, "//"), strings.LastIndex(raw, "@"); i >= 0 && j > i {
				if k := strings.Index(raw[i+2:j], ":"); k >= 0 {
					secret := raw[i+2+k+1 : j]
					if len(secret) >= 12 && strings.Contains(err.Error(), secret) {
						t.Fatalf("error %q quotes the password %q", err, secret)
					}
				}
			}
		}

		if user == "" || pass == "" {
			return
		}
		u := url.URL{Scheme: "smtps", User: url.UserPassword(user, pass), Host: "mail.example.com:465"}
		_, _, gotUser, gotPass, err := mail.ParseSMTPURL(u.String())
		if err != nil || gotUser != user || gotPass != pass {
			t.Fatalf("%q: got %q, %q, %v; want %q, %q", u.String(), gotUser, gotPass, err, user, pass)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	const secretURL = "smtp://user:hunter2-Secret@mail.example.com"
	for _, tc := range []struct {
		name    string
		cfg     mail.Config
		mention []string // empty: valid
	}{
		{"outbox defaults", mail.Config{OutboxDir: "out"}, nil},
		{"smtp", mail.Config{SMTPURL: secretURL, From: "no-reply@imagegate.test"}, nil},
		{"display-name sender", mail.Config{SMTPURL: secretURL, From: `"Image Gate" <no-reply@imagegate.test>`}, nil},
		{"nothing", mail.Config{}, []string{"outbox directory"}},
		{"smtp without From", mail.Config{SMTPURL: secretURL}, []string{"From address is required"}},
		{"From with CRLF", mail.Config{OutboxDir: "out", From: "a@imagegate.test\r\nBcc: eve@example.com"}, []string{"control character"}},
		{"From not an address", mail.Config{OutboxDir: "out", From: "imagegate"}, []string{"From"}},
		{"From without a dot", mail.Config{OutboxDir: "out", From: "root@localhost"}, []string{"two labels"}},
		{"everything wrong at once", mail.Config{SMTPURL: "smtp://user:hunter2-Secret@mail.example.com:0", From: "x", Timeout: 1}, []string{"port", "From", "timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if len(tc.mention) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted, want an error")
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// TestNewPicksTransport: an SMTP URL selects SMTP, none the outbox, and
// the startup log names the server but not the credentials.
func TestNewPicksTransport(t *testing.T) {
	t.Parallel()
	logger := testLogger(t, "hunter2", "user:")
	m, err := mail.New(mail.Config{SMTPURL: "smtps://user:hunter2-Secret@mail.example.com", From: "a@imagegate.test"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if m.SMTP == nil || m.Outbox != nil {
		t.Errorf("with an SMTP URL: %+v, want SMTP only", m)
	}
	dir := filepath.Join(t.TempDir(), "outbox")
	m, err = mail.New(mail.Config{OutboxDir: dir}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if m.Outbox == nil || m.SMTP != nil || m.Outbox.Dir() != dir {
		t.Errorf("without an SMTP URL: %+v, want the outbox in %s", m, dir)
	}
	if err := m.Send(t.Context(), resetMessage("ada@example.com")); err != nil {
		t.Fatal(err)
	}
	if _, err := mail.New(mail.Config{SMTPURL: "smtp://user:hunter2-Secret@:1"}, logger); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad config: error %v, want one without the password", err)
	}
	if _, err := mail.NewSMTP(mail.Config{OutboxDir: dir}, logger); err == nil {
		t.Error("NewSMTP without a URL succeeded")
	}
	if _, err := mail.NewOutbox(mail.Config{SMTPURL: "smtp://mail.example.com", From: "a@imagegate.test"}, logger); err == nil {
		t.Error("NewOutbox without a directory succeeded")
	}
}
