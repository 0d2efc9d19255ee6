package mail

import (
	"crypto/x509"
	"errors"
	"fmt"
	netmail "net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultFrom is the sender of outbox mail when Config.From is empty. The
// .invalid top-level domain (RFC 2606) can never receive a reply.
const DefaultFrom = "imagegate <no-reply@imagegate.invalid>"

// Config selects and configures the transport. The zero value of every
// field means "use the default"; call Validate after setting fields.
type Config struct {
	// SMTPURL, when set, delivers mail through an SMTP server:
	//
	//	smtp://user:pass@host[:port][?starttls=required]
	//	smtps://user:pass@host[:port]
	//
	// smtp:// defaults to port 587 and upgrades with STARTTLS whenever the
	// server offers it; ?starttls=required refuses servers that do not.
	// smtps:// is TLS from the first byte and defaults to port 465. User
	// and password are percent-encoded and optional (no AUTH without
	// them). A password is sent in the clear only to a loopback server;
	// anywhere else it needs TLS or a SCRAM mechanism.
	//
	// Empty means write mail to OutboxDir instead.
	SMTPURL string
	// From is the sender, a bare address or "Name <address>". Required
	// with SMTPURL; the outbox defaults to DefaultFrom.
	From string
	// OutboxDir is where the outbox writes when SMTPURL is empty
	// (conventionally <data-dir>/outbox). It is created 0700.
	OutboxDir string
	// Timeout bounds one SMTP send from dialing to QUIT (30 s); the send
	// context can only shorten it.
	Timeout time.Duration
	// RootCAs verifies the SMTP server's certificate; nil means the
	// system's roots.
	RootCAs *x509.CertPool
	// Now is the clock for Date headers and outbox file names; nil means
	// time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.From == "" && c.SMTPURL == "" {
		c.From = DefaultFrom
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate fills defaults and reports every problem at once. Its errors
// never contain the SMTP URL or any part of its password.
func (c *Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.SMTPURL != "" {
		if _, err := parseSMTPURL(c.SMTPURL); err != nil {
			errs = append(errs, err)
		}
		if c.From == "" {
			errs = append(errs, errors.New("mail: a From address is required to send through SMTP"))
		}
	} else if c.OutboxDir == "" {
		errs = append(errs, errors.New("mail: an outbox directory is required when no SMTP URL is set"))
	}
	if c.From != "" {
		if _, err := parseFrom(c.From); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Timeout < time.Second {
		errs = append(errs, errors.New("mail: timeout must be at least 1s"))
	}
	return errors.Join(errs...)
}

// parseFrom parses the configured sender.
func parseFrom(from string) (*netmail.Address, error) {
	if hasControl(from) {
		return nil, fmt.Errorf("mail: From %q contains a line break or another control character", from)
	}
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("mail: From %q: %w", from, err)
	}
	if reason := addressProblem(a.Address); reason != "" {
		return nil, fmt.Errorf("mail: From %q: address %s", from, reason)
	}
	return a, nil
}

// tlsMode is how an SMTP connection is protected.
type tlsMode int

const (
	startTLSOpportunistic tlsMode = iota // STARTTLS when offered
	startTLSRequired                     // STARTTLS or fail
	implicitTLS                          // TLS from the first byte (smtps)
)

func (m tlsMode) String() string {
	return [...]string{"starttls-opportunistic", "starttls-required", "implicit"}[m]
}

// smtpServer is a parsed SMTP URL.
type smtpServer struct {
	host       string
	port       int
	user, pass string
	auth       bool
	tls        tlsMode
}

// addr is host:port, safe to log.
func (s smtpServer) addr() string { return joinHostPort(s.host, s.port) }

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// parseSMTPURL parses Config.SMTPURL. No error it returns quotes the URL
// or url.Parse's message, which can echo part of a mistyped password.
func parseSMTPURL(raw string) (smtpServer, error) {
	var s smtpServer
	u, err := url.Parse(raw)
	if err != nil {
		return s, errors.New("mail: the SMTP URL does not parse (percent-encode reserved characters such as @ : / ? # in the user name and password)")
	}
	switch u.Scheme {
	case "smtp":
		s.port = 587
	case "smtps":
		s.port, s.tls = 465, implicitTLS
	default:
		return s, errors.New("mail: the SMTP URL must start with smtp:// or smtps://")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return s, errors.New("mail: the SMTP URL has no host (the form is smtp://user:pass@host:port)")
	}
	s.host = u.Hostname()
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return s, errors.New("mail: the SMTP URL's port must be between 1 and 65535")
		}
		s.port = n
	}
	if (u.Path != "" && u.Path != "/") || u.Fragment != "" || u.RawFragment != "" {
		return s, errors.New("mail: the SMTP URL must have no path or fragment (percent-encode / and # in the password)")
	}
	if u.User != nil {
		pass, ok := u.User.Password()
		if u.User.Username() == "" || !ok || pass == "" {
			return s, errors.New("mail: the SMTP URL needs both a user name and a password, or neither")
		}
		s.user, s.pass, s.auth = u.User.Username(), pass, true
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return s, errors.New("mail: the SMTP URL's query does not parse")
	}
	for key, vals := range q {
		if key != "starttls" {
			// Neither key nor value is quoted: with an unencoded ? in the
			// password, they are pieces of the password.
			return s, errors.New("mail: the SMTP URL has a parameter other than starttls (percent-encode ? in the password)")
		}
		if s.tls == implicitTLS {
			return s, errors.New("mail: starttls does not apply to smtps:// (TLS from the first byte)")
		}
		if len(vals) != 1 {
			return s, errors.New("mail: the SMTP URL sets starttls more than once")
		}
		switch vals[0] {
		case "opportunistic":
			s.tls = startTLSOpportunistic
		case "required":
			s.tls = startTLSRequired
		default:
			return s, errors.New("mail: the SMTP URL's starttls must be opportunistic or required")
		}
	}
	return s, nil
}
