package mail_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/gateway/mail"
)

// addressCases seed FuzzCheckAddress as well.
var addressCases = []struct {
	addr string
	ok   bool
}{
	{"ada@example.com", true},
	{"Ada.Lovelace+reset@mail.example.co.uk", true},
	{"o'brien@example.ie", true},
	{"x@xn--bcher-kva.example", true},
	{"!#$%&'*+-/=?^_`{|}~@example.com", true},
	{"a@b.co", true},
	{strings.Repeat("l", 64) + "@example.com", true},
	{"a@" + strings.Repeat(strings.Repeat("d", 63)+".", 3) + strings.Repeat("d", 60), true}, // 254 bytes
	{"", false},
	{"ada", false},
	{"@example.com", false},
	{"ada@", false},
	{"ada@localhost", false},
	{".ada@example.com", false},
	{"ada.@example.com", false},
	{"a..b@example.com", false},
	{"ada@-example.com", false},
	{"ada@example-.com", false},
	{"ada@exa_mple.com", false},
	{"ada@example.com.", false},
	{"ada@example..com", false},
	{"ada@192.168.0.1", false},
	{"ada@[127.0.0.1]", false},
	{`"ada"@example.com`, false},
	{`"a b"@example.com`, false},
	{"Ada <ada@example.com>", false},
	{"<ada@example.com>", false},
	{"ada@example.com (Ada)", false},
	{"ada@example.com\r\nBcc: eve@example.com", false},
	{"ada@example.com\nBcc: eve@example.com", false},
	{"ada@example.com\x00", false},
	{"ada@exämple.com", false},
	{"ädä@example.com", false},
	{"ada @example.com", false},
	{" ada@example.com", false},
	{"ada@example.com,eve@example.com", false},
	{"ada@example.com, eve@example.com", false},
	{"a@b@example.com", false},
	{strings.Repeat("l", 65) + "@example.com", false},
	{"a@" + strings.Repeat("d", 64) + ".com", false},
	{"a@" + strings.Repeat(strings.Repeat("d", 63)+".", 3) + strings.Repeat("d", 61), false}, // 255 bytes
}

func TestCheckAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range addressCases {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			err := mail.CheckAddress(tc.addr)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckAddress(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, mail.ErrInvalidAddress) {
				t.Errorf("error %v does not match ErrInvalidAddress", err)
			}
			if len(tc.addr) > 4 && strings.Contains(err.Error(), tc.addr) {
				t.Errorf("error %q quotes the address", err)
			}
		})
	}
}

func TestMessageValidate(t *testing.T) {
	t.Parallel()
	valid := func() mail.Message {
		return mail.Message{To: "ada@example.com", Subject: "Reset your password", Text: "Hello", Category: mail.CategoryAccount}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*mail.Message)
		address bool   // the error must match ErrInvalidAddress
		reason  string // "" means valid
	}{
		{"valid account mail", func(*mail.Message) {}, false, ""},
		{"valid security mail with HTML", func(m *mail.Message) { m.Category = mail.CategorySecurity; m.HTML = "<p>Hi</p>" }, false, ""},
		{"valid news", func(m *mail.Message) {
			m.Category, m.Unsubscribe = mail.CategoryNews, "https://imagegate.test/u?t=1"
		}, false, ""},
		{"UTF-8 subject", func(m *mail.Message) { m.Subject = "Passwort zurücksetzen 🔑" }, false, ""},
		{"subject at the limit", func(m *mail.Message) { m.Subject = strings.Repeat("ü", mail.MaxSubjectLen) }, false, ""},
		{"bad recipient", func(m *mail.Message) { m.To = "ada" }, true, "recipient"},
		{"recipient with CRLF", func(m *mail.Message) { m.To = "ada@example.com\r\nBcc: eve@example.com" }, true, "recipient"},
		{"two recipients", func(m *mail.Message) { m.To = "ada@example.com,eve@example.com" }, true, "recipient"},
		{"empty subject", func(m *mail.Message) { m.Subject = " " }, false, "subject is empty"},
		{"subject with CRLF", func(m *mail.Message) { m.Subject = "Hi\r\nBcc: eve@example.com" }, false, "line break"},
		{"subject with LF", func(m *mail.Message) { m.Subject = "Hi\nthere" }, false, "line break"},
		{"subject with NUL", func(m *mail.Message) { m.Subject = "Hi\x00" }, false, "control"},
		{"subject with NEL", func(m *mail.Message) { m.Subject = "Hi\u0085there" }, false, "control"},
		{"subject with line separator", func(m *mail.Message) { m.Subject = "Hi\u2028there" }, false, "line break"},
		{"subject with invalid UTF-8", func(m *mail.Message) { m.Subject = "Hi \xff" }, false, "UTF-8"},
		{"subject too long", func(m *mail.Message) { m.Subject = strings.Repeat("a", mail.MaxSubjectLen+1) }, false, "longer"},
		{"no text", func(m *mail.Message) { m.Text = "\n" }, false, "text body is empty"},
		{"text too large", func(m *mail.Message) { m.Text = strings.Repeat("a", mail.MaxBodyBytes+1) }, false, "larger"},
		{"HTML with invalid UTF-8", func(m *mail.Message) { m.HTML = "\xc3" }, false, "HTML body is not valid UTF-8"},
		{"no category", func(m *mail.Message) { m.Category = "" }, false, "category"},
		{"unknown category", func(m *mail.Message) { m.Category = "marketing" }, false, "category"},
		{"news without unsubscribe", func(m *mail.Message) { m.Category = mail.CategoryNews }, false, "needs an unsubscribe link"},
		{"essential with unsubscribe", func(m *mail.Message) { m.Unsubscribe = "https://imagegate.test/u" }, false, "cannot carry"},
		{"unsubscribe over http", func(m *mail.Message) {
			m.Category, m.Unsubscribe = mail.CategoryNews, "http://imagegate.test/u"
		}, false, "https"},
		{"unsubscribe with CRLF", func(m *mail.Message) {
			m.Category, m.Unsubscribe = mail.CategoryNews, "https://imagegate.test/u\r\nBcc: eve@example.com"
		}, false, "printable"},
		{"unsubscribe with a second URI", func(m *mail.Message) {
			m.Category, m.Unsubscribe = mail.CategoryNews, "https://imagegate.test/u>,<mailto:eve@example.com"
		}, false, "angle brackets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := valid()
			tc.edit(&m)
			err := m.Validate()
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, mail.ErrInvalidMessage) || errors.Is(err, mail.ErrInvalidAddress) != tc.address {
				t.Errorf("error %v: want ErrInvalidMessage, ErrInvalidAddress=%v", err, tc.address)
			}
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %v should mention %q", err, tc.reason)
			}
			if err != nil && strings.Contains(err.Error(), "ada@example.com") {
				t.Errorf("error %q quotes the recipient", err)
			}
		})
	}
}

// TestMessageValidateReportsAll: every problem is reported at once.
func TestMessageValidateReportsAll(t *testing.T) {
	t.Parallel()
	err := mail.Message{To: "x", Subject: "a\nb", Category: "?"}.Validate()
	for _, want := range []string{"recipient", "subject", "text body", "category"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestCategoryEssential(t *testing.T) {
	t.Parallel()
	for c, want := range map[mail.Category]bool{
		mail.CategoryAccount: true, mail.CategorySecurity: true, mail.CategoryNews: false, "": false, "other": false,
	} {
		if got := c.Essential(); got != want {
			t.Errorf("%q.Essential() = %v, want %v", c, got, want)
		}
	}
}
