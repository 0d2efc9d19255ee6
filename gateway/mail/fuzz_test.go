package mail_test

import (
	"bytes"
	"errors"
	"mime"
	netmail "net/mail"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imagegate/imagegate/gateway/mail"
)

// FuzzCheckAddress: an accepted address is plain printable ASCII that
// net/mail reads back as exactly itself, with nothing that could start a
// new header line; a refused one is reported as ErrInvalidAddress.
func FuzzCheckAddress(f *testing.F) {
	for _, tc := range addressCases {
		f.Add(tc.addr)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		err := mail.CheckAddress(addr)
		if err != nil {
			if !errors.Is(err, mail.ErrInvalidAddress) {
				t.Fatalf("error %v does not match ErrInvalidAddress", err)
			}
			return
		}
		if len(addr) > mail.MaxAddressLen || strings.Count(addr, "@") != 1 {
			t.Fatalf("accepted %q: too long or not exactly one @", addr)
		}
		for i := 0; i < len(addr); i++ {
			if addr[i] <= ' ' || addr[i] >= 0x7f {
				t.Fatalf("accepted %q with byte %#x", addr, addr[i])
			}
		}
		parsed, err := netmail.ParseAddress(addr)
		if err != nil || parsed.Name != "" || parsed.Address != addr {
			t.Fatalf("accepted %q, which net/mail reads as %v, %v", addr, parsed, err)
		}
	})
}

// FuzzMessage: whatever Validate accepts renders to a message that parses
// with exactly the headers the package writes, one recipient equal to To,
// and the subject and text body intact. This is the header-injection
// guarantee.
func FuzzMessage(f *testing.F) {
	for _, tc := range addressCases {
		f.Add(tc.addr, "Reset your password", "Hello\n", "")
	}
	for _, s := range []string{
		"Réinitialisez votre mot de passe — imagegate ✓", "Hi\r\nBcc: eve@example.com", "Hi\nthere", "Hi\x00",
		"Hi\u0085there", "Hi\u2028there", "Hi \xff", strings.Repeat("ü", mail.MaxSubjectLen), "  spaced   out  ",
		strings.Repeat("word ", 40), "=?utf-8?q?hi?=",
	} {
		f.Add("ada@example.com", s, "Text\r\nwith CRLF and a lone \r and\ttab\n.\n", "")
	}
	for _, u := range []string{
		"https://imagegate.test/u?t=1", "http://imagegate.test/u", "https://imagegate.test/u\r\nBcc: eve@example.com",
		"https://imagegate.test/u>,<mailto:eve@example.com", "https://user@imagegate.test/", "https://imagegate.test/%zz",
	} {
		f.Add("ada@example.com", "News", "News\n", u)
	}
	f.Fuzz(func(t *testing.T, to, subject, text, unsubscribe string) {
		m := mail.Message{To: to, Subject: subject, Text: text, Category: mail.CategoryAccount}
		if unsubscribe != "" {
			m.Category, m.Unsubscribe = mail.CategoryNews, unsubscribe
		}
		if err := m.Validate(); err != nil {
			if !errors.Is(err, mail.ErrInvalidMessage) {
				t.Fatalf("error %v does not match ErrInvalidMessage", err)
			}
			if _, rerr := mail.Render(m); rerr == nil {
				t.Fatal("Render accepted a message Validate refused")
			}
			return
		}
		raw, err := mail.Render(m)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		parsed, err := netmail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("rendered message does not parse: %v\n%s", err, raw)
		}
		allowed := map[string]bool{
			"Auto-Submitted": true, "Date": true, "Mime-Version": true, "Message-Id": true, "Subject": true,
			"From": true, "To": true, "Content-Type": true, "Content-Transfer-Encoding": true,
			"List-Unsubscribe": m.Unsubscribe != "", "List-Unsubscribe-Post": m.Unsubscribe != "",
		}
		for k, v := range parsed.Header {
			if !allowed[k] || len(v) != 1 {
				t.Fatalf("unexpected header %s: %q\n%s", k, v, raw)
			}
		}
		rcpts, err := parsed.Header.AddressList("To")
		if err != nil || len(rcpts) != 1 || rcpts[0].Address != to {
			t.Fatalf("To header %q reads as %v, %v; want %q", parsed.Header.Get("To"), rcpts, err, to)
		}
		gotSubject, err := new(mime.WordDecoder).DecodeHeader(parsed.Header.Get("Subject"))
		if err != nil {
			t.Fatalf("subject %q: %v", parsed.Header.Get("Subject"), err)
		}
		if want := collapseSpace(subject); collapseSpace(gotSubject) != want && !strings.Contains(subject, "=?") {
			t.Fatalf("subject %q reads back as %q", subject, gotSubject)
		}
		if m.Unsubscribe != "" {
			u, _ := url.Parse(m.Unsubscribe)
			if got := parsed.Header.Get("List-Unsubscribe"); got != "<"+u.String()+">" {
				t.Fatalf("List-Unsubscribe %q for %q", got, m.Unsubscribe)
			}
		}
		var body bytes.Buffer
		body.ReadFrom(parsed.Body)
		gotText, _ := decodeBodies(t, parsed.Header, body.Bytes())
		if !utf8.ValidString(gotText) || normalizeBody(gotText) != normalizeBody(text) {
			t.Fatalf("text body %q reads back as %q", text, gotText)
		}
	})
}

// collapseSpace folds runs of whitespace: header folding may turn one kind
// of blank into another, which changes no meaning.
func collapseSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// normalizeBody maps every line ending to \n: SMTP carries CRLF.
func normalizeBody(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}
