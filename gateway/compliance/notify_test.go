package compliance

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/internal/testpeer"
)

var templateCases = []struct {
	in      string
	want    string // rendered with templateVars
	wantErr string
}{
	{in: "plain text", want: "plain text"},
	{in: "", want: ""},
	{in: "Hi {{email}}!", want: "Hi a@example.com!"},
	{in: "{{ date }} {{site_url}} {{account_created}}", want: "2026-11-23 https://x.example 2025-01-02"},
	{in: "braces } and }} alone", want: "braces } and }} alone"},
	{in: "{{email}}{{email}}", want: "a@example.coma@example.com"},
	{in: "{{password}}", wantErr: "unknown placeholder {{password}}"},
	{in: "{{}}", wantErr: "unknown placeholder"},
	{in: "open {{email", wantErr: "without a closing"},
	{in: "{{{email}}}", wantErr: "unknown placeholder"},
}

var templateVars = map[string]string{"email": "a@example.com", "date": "2026-11-23", "site_url": "https://x.example", "account_created": "2025-01-02"}

func TestParseTemplate(t *testing.T) {
	t.Parallel()
	for _, tc := range templateCases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			tpl, err := ParseTemplate(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tpl.Render(templateVars); got != tc.want {
				t.Errorf("render = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzParseTemplate: whatever the operator's text, parsing either
// refuses it or yields literal text free of "{{" and known placeholders
// only, and rendering each placeholder as itself parses back the same.
func FuzzParseTemplate(f *testing.F) {
	for _, tc := range templateCases {
		f.Add(tc.in)
	}
	self := map[string]string{}
	for _, name := range TemplateFields {
		self[name] = "{{" + name + "}}"
	}
	f.Fuzz(func(t *testing.T, in string) {
		tpl, err := ParseTemplate(in)
		if err != nil {
			return
		}
		for _, p := range tpl {
			if strings.Contains(p.Text, "{{") || (p.Field != "" && !slices.Contains(TemplateFields, p.Field)) {
				t.Fatalf("part %+v of %q", p, in)
			}
		}
		again, err := ParseTemplate(tpl.Render(self))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", tpl.Render(self), err)
		}
		if again.Render(templateVars) != tpl.Render(templateVars) {
			t.Errorf("round trip of %q changed the rendering", in)
		}
	})
}

// downSMTP is a real SMTP mailer pointed at a port that refuses connections.
func downSMTP(t *testing.T) *mail.SMTP {
	t.Helper()
	addr := testpeer.Addr(testpeer.RefusedPort(t))
	s, err := mail.NewSMTP(mail.Config{SMTPURL: "smtp://" + addr, From: "ops@example.com", Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNotDeliveredClassifiesRealFailures(t *testing.T) {
	t.Parallel()
	err := downSMTP(t).Send(t.Context(), mail.Message{To: "x@example.org", Subject: "s", Text: "t", Category: mail.CategorySecurity})
	if err == nil || !notDelivered(err) {
		t.Errorf("a refused connection: %v, notDelivered false", err)
	}
	outbox, err := mail.NewOutbox(mail.Config{OutboxDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = outbox.Send(t.Context(), mail.Message{To: "not an address", Subject: "s", Text: "t", Category: mail.CategorySecurity})
	if err == nil || notDelivered(err) {
		t.Errorf("an invalid address: %v, notDelivered true: it would be retried forever", err)
	}
}
