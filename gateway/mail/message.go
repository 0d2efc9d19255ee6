package mail

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"
)

// Limits a Message must respect.
const (
	// MaxSubjectLen bounds a subject, in characters.
	MaxSubjectLen = 200
	// MaxBodyBytes bounds the text body and the HTML body, each.
	MaxBodyBytes = 1 << 20
	// MaxAddressLen bounds an address (RFC 5321's 256-byte path minus
	// the angle brackets).
	MaxAddressLen = 254
	// maxUnsubscribeLen bounds the unsubscribe URL.
	maxUnsubscribeLen = 2048
)

var (
	// ErrInvalidMessage matches every error from Message.Validate, and so
	// every Send refused before a connection was made.
	ErrInvalidMessage = errors.New("mail: invalid message")
	// ErrInvalidAddress matches errors caused by the recipient's address
	// (from CheckAddress, Message.Validate and Send): the address should be
	// corrected by whoever typed it, not retried.
	ErrInvalidAddress = errors.New("mail: invalid address")
)

// Category says why a message is sent, which decides whether its recipient
// may opt out of it.
type Category string

const (
	// CategoryAccount is mail the recipient asked for by acting on their
	// account: a password-reset link, an email-change verification, an
	// account-deletion confirmation. It is essential.
	CategoryAccount Category = "account"
	// CategorySecurity is mail the operator owes the recipient about their
	// account's security, such as an incident notification (promise S5).
	// It is essential.
	CategorySecurity Category = "security"
	// CategoryNews is optional mail (product news, tips). It is
	// non-essential: it must carry an unsubscribe link, and the caller must
	// not send it to a recipient who opted out (promise R4).
	CategoryNews Category = "news"
)

// Essential reports whether mail of this category is sent regardless of
// the recipient's opt-outs.
func (c Category) Essential() bool { return c == CategoryAccount || c == CategorySecurity }

func (c Category) known() bool { return c.Essential() || c == CategoryNews }

// Message is one email to one recipient. Send validates it (see Validate)
// before any connection is made or any file written.
type Message struct {
	// To is the recipient: one bare address such as "ada@example.com"
	// (no display name), accepted by CheckAddress.
	To string
	// Subject is one line of at most MaxSubjectLen characters; non-ASCII
	// text is RFC 2047-encoded on the wire.
	Subject string
	// Text is the plain-text body; every message has one.
	Text string
	// HTML, when set, is sent as an alternative to Text.
	HTML string
	// Category says why the message is sent; it is required.
	Category Category
	// Unsubscribe is the https URL that receives RFC 8058 one-click
	// unsubscribe POSTs (List-Unsubscribe and List-Unsubscribe-Post). It
	// is required for non-essential categories and refused for essential
	// ones, which cannot be unsubscribed from.
	Unsubscribe string
}

// problem is a validation failure. Its text states the reason without
// quoting the offending value (which may be personal data), and it matches
// ErrInvalidMessage, plus ErrInvalidAddress when the address is at fault.
type problem struct {
	reason  string
	address bool
}

func (p *problem) Error() string {
	if p.address {
		return "mail: invalid address: " + p.reason
	}
	return "mail: invalid message: " + p.reason
}

func (p *problem) Is(target error) bool {
	return target == ErrInvalidMessage || (p.address && target == ErrInvalidAddress)
}

// Validate reports every problem with m at once. Each error matches
// ErrInvalidMessage; a bad recipient also matches ErrInvalidAddress.
func (m Message) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, &problem{reason: fmt.Sprintf(format, args...)}) }

	if reason := addressProblem(m.To); reason != "" {
		errs = append(errs, &problem{reason: "recipient: " + reason, address: true})
	}
	switch {
	case strings.TrimSpace(m.Subject) == "":
		bad("subject is empty")
	case !utf8.ValidString(m.Subject):
		bad("subject is not valid UTF-8")
	case hasControl(m.Subject):
		bad("subject contains a line break or another control character")
	case utf8.RuneCountInString(m.Subject) > MaxSubjectLen:
		bad("subject is longer than %d characters", MaxSubjectLen)
	}
	for _, body := range []struct{ name, s string }{{"text body", m.Text}, {"HTML body", m.HTML}} {
		switch {
		case !utf8.ValidString(body.s):
			bad("%s is not valid UTF-8", body.name)
		case len(body.s) > MaxBodyBytes:
			bad("%s is larger than %d bytes", body.name, MaxBodyBytes)
		case strings.ContainsRune(body.s, 0):
			bad("%s contains a NUL byte", body.name)
		}
	}
	if strings.TrimSpace(m.Text) == "" {
		bad("text body is empty")
	}
	switch {
	case !m.Category.known():
		bad("category must be %q, %q or %q", CategoryAccount, CategorySecurity, CategoryNews)
	case m.Category.Essential() && m.Unsubscribe != "":
		bad("%s mail is essential and cannot carry an unsubscribe link", m.Category)
	case !m.Category.Essential() && m.Unsubscribe == "":
		bad("%s mail is non-essential and needs an unsubscribe link", m.Category)
	}
	if m.Unsubscribe != "" {
		if reason := checkUnsubscribe(m.Unsubscribe); reason != "" {
			bad("unsubscribe link %s", reason)
		}
	}
	return errors.Join(errs...)
}

// CheckAddress reports whether addr is an address this package will send
// to: a bare RFC 5321 mailbox "local@domain" in ASCII, where local is a
// dot-atom of at most 64 bytes and domain a host name of at least two
// labels; at most MaxAddressLen bytes in all. Quoted local parts, comments,
// display names, address literals and internationalized addresses are
// refused. The error matches ErrInvalidAddress and never quotes addr.
func CheckAddress(addr string) error {
	if reason := addressProblem(addr); reason != "" {
		return &problem{reason: reason, address: true}
	}
	return nil
}

func addressProblem(addr string) string {
	if addr == "" {
		return "empty"
	}
	if len(addr) > MaxAddressLen {
		return fmt.Sprintf("longer than %d bytes", MaxAddressLen)
	}
	at := strings.IndexByte(addr, '@')
	if at < 0 {
		return "no @"
	}
	local, domain := addr[:at], addr[at+1:]
	if local == "" {
		return "empty local part"
	}
	if len(local) > 64 {
		return "local part is longer than 64 bytes"
	}
	for _, atom := range strings.Split(local, ".") {
		if atom == "" {
			return "local part has an empty dot-separated part"
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return "local part contains a character outside RFC 5322 atext"
			}
		}
	}
	if reason := hostProblem(domain); reason != "" {
		return "domain " + reason
	}
	// The checks above admit a subset of what net/mail accepts; confirm it,
	// so that what is validated here is exactly what go-mail will write.
	parsed, err := netmail.ParseAddress(addr)
	if err != nil || parsed.Name != "" || parsed.Address != addr {
		return "not a plain RFC 5322 address"
	}
	return ""
}

// hostProblem checks a DNS host name of at least two labels.
func hostProblem(domain string) string {
	if domain == "" {
		return "is empty"
	}
	if len(domain) > 253 {
		return "is longer than 253 bytes"
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return "needs at least two labels"
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "has a label that is empty or longer than 63 bytes"
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "has a label that starts or ends with a hyphen"
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' {
				return "contains a character other than letters, digits, hyphens and dots"
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "has a numeric top-level label"
	}
	return ""
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isAtext reports whether c is RFC 5322 atext.
func isAtext(c byte) bool { return isAlnum(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 }

// hasControl reports whether s holds a character that has no place in a
// one-line header value: C0 and C1 controls (CR, LF, NUL, TAB, NEL, ...),
// DEL, and the Unicode line and paragraph separators.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
	})
}

func checkUnsubscribe(raw string) string {
	if len(raw) > maxUnsubscribeLen {
		return fmt.Sprintf("is longer than %d bytes", maxUnsubscribeLen)
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] <= ' ' || raw[i] >= 0x7f || raw[i] == '<' || raw[i] == '>' || raw[i] == ',' {
			return "must be printable ASCII without spaces, commas or angle brackets"
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "must be an absolute https URL without user info or fragment"
	}
	return ""
}

// compose turns a validated message into go-mail's form, with a fresh
// Message-ID under the sender's domain. It returns the random part of
// that ID, which the outbox reuses in its file names.
func compose(from *netmail.Address, m Message, now time.Time) (*gomail.Msg, string, error) {
	if err := m.Validate(); err != nil {
		return nil, "", err
	}
	var id [16]byte
	rand.Read(id[:])
	token := hex.EncodeToString(id[:])

	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(from)
	if err := msg.To(m.To); err != nil {
		// Unreachable after Validate; kept so a go-mail change cannot
		// silently drop the recipient.
		return nil, "", &problem{reason: "recipient: not accepted by the message writer", address: true}
	}
	msg.Subject(m.Subject)
	msg.SetDateWithValue(now)
	msg.SetMessageIDWithValue(token + "@" + from.Address[strings.LastIndexByte(from.Address, '@')+1:])
	// RFC 3834: automatic mail, so vacation responders stay quiet.
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	if m.Unsubscribe != "" {
		if err := msg.SetListUnsubscribeOneClick(m.Unsubscribe); err != nil {
			return nil, "", &problem{reason: "unsubscribe link is not an https URL"}
		}
	}
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, token, nil
}
