package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	netmail "net/mail"
	"net/textproto"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
	gosmtp "github.com/wneessen/go-mail/smtp"
)

var (
	// ErrAuth means the SMTP server refused the configured credentials, or
	// they could not be offered safely: an operator must fix the
	// configuration; retrying will not help.
	ErrAuth = errors.New("mail: smtp authentication failed")
	// ErrRejected means the SMTP server permanently refused the message or
	// its recipient (a 5xx reply after authentication). Retrying the same
	// message will not help.
	ErrRejected = errors.New("mail: rejected by the smtp server")
)

// SMTP delivers mail through an SMTP server, one connection per message.
// It is safe for concurrent use.
type SMTP struct {
	server  smtpServer
	from    *netmail.Address
	timeout time.Duration
	tls     *tls.Config
	now     func() time.Time
	logger  *slog.Logger
}

// NewSMTP returns the SMTP transport for cfg, which must have an SMTPURL.
// It does not connect: a wrong password or an unreachable server shows on
// the first Send.
func NewSMTP(cfg Config, logger *slog.Logger) (*SMTP, error) {
	if cfg.SMTPURL == "" {
		return nil, errors.New("mail: no SMTP URL")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	server, _ := parseSMTPURL(cfg.SMTPURL) // checked by Validate
	from, _ := parseFrom(cfg.From)
	s := &SMTP{
		server:  server,
		from:    from,
		timeout: cfg.Timeout,
		tls:     &tls.Config{ServerName: server.host, MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs},
		now:     cfg.Now,
		logger:  logger,
	}
	logger.Info("mail goes through SMTP", "server", server.addr(), "tls", server.tls.String(), "auth", server.auth)
	return s, nil
}

// Send validates m, then submits it within ctx and the configured timeout.
// Validation failures match ErrInvalidMessage and happen before any
// connection. Delivery errors match ErrAuth or ErrRejected where those
// apply, and the context's error when it ended the attempt; their text
// names the server but never the password or the recipient.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg, _, err := compose(s.from, m, s.now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.deliver(ctx, msg); err != nil {
		return s.describe(ctx, err, m.To)
	}
	s.logger.Debug("mail sent", "transport", "smtp", "category", m.Category)
	return nil
}

// phaseError records where in the SMTP conversation a delivery failed.
type phaseError struct {
	phase string // "connect", "auth" or "send"
	err   error
}

func (e *phaseError) Error() string { return e.err.Error() }
func (e *phaseError) Unwrap() error { return e.err }

// deliver runs one SMTP conversation. go-mail bounds each step with its
// own timeout but watches ctx only while dialing, so the connection is
// closed as soon as ctx ends: no step outlives the caller's deadline.
func (s *SMTP) deliver(ctx context.Context, msg *gomail.Msg) error {
	var stop func() bool
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	dial := func(dctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := (&net.Dialer{}).DialContext(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		// Closing the TCP connection, never a TLS layer above it, ends a
		// blocked read or write at once.
		stop = context.AfterFunc(ctx, func() { raw.Close() })
		if s.server.tls != implicitTLS {
			return raw, nil
		}
		conn := tls.Client(raw, s.tls)
		if err := conn.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, err
		}
		// A *tls.Conn, so go-mail's smtp client knows it is encrypted.
		return conn, nil
	}
	policy := gomail.TLSOpportunistic
	switch s.server.tls {
	case startTLSRequired:
		policy = gomail.TLSMandatory
	case implicitTLS:
		policy = gomail.NoTLS // the dialer already did TLS
	}
	client, err := gomail.NewClient(s.server.host,
		gomail.WithPort(s.server.port),
		gomail.WithTimeout(s.timeout),
		gomail.WithDialContextFunc(dial),
		gomail.WithTLSConfig(s.tls),
		gomail.WithTLSPolicy(policy),
		gomail.WithoutNoop(), // a fresh connection needs no liveness check
		gomail.WithoutRset(), // one message per connection
	)
	if err != nil {
		return &phaseError{"connect", err}
	}
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return &phaseError{"connect", err}
	}
	defer func() {
		// The message is accepted by now or the send failed; a failed QUIT
		// changes neither.
		if err := client.CloseWithSMTPClient(conn); err != nil {
			s.logger.Debug("mail: smtp quit failed", "server", s.server.addr(), "err", s.scrub(err.Error(), ""))
		}
	}()
	if s.server.auth {
		if err := s.authenticate(conn); err != nil {
			return &phaseError{"auth", err}
		}
	}
	if err := client.SendWithSMTPClient(conn, msg); err != nil {
		return &phaseError{"send", err}
	}
	return nil
}

// authenticate picks the strongest mechanism the server offers. PLAIN and
// LOGIN reveal the password, so they need TLS unless the server is on
// loopback; go-mail's own check enforces the same rule again.
func (s *SMTP) authenticate(conn *gosmtp.Client) error {
	ok, offered := conn.Extension("AUTH")
	if !ok {
		return errors.New("the server offers no AUTH (check the URL's port and TLS)")
	}
	mechs := strings.Fields(strings.ToUpper(offered))
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	_, tlsErr := conn.GetTLSConnectionState()
	encrypted := tlsErr == nil
	loopback := s.server.host == "localhost" || s.server.host == "127.0.0.1" || s.server.host == "::1"
	var a gosmtp.Auth
	switch {
	case has("SCRAM-SHA-256"):
		a = gosmtp.ScramSHA256Auth(s.server.user, s.server.pass)
	case has("SCRAM-SHA-1"):
		a = gosmtp.ScramSHA1Auth(s.server.user, s.server.pass)
	case !has("PLAIN") && !has("LOGIN"):
		return errors.New("the server offers no supported mechanism (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, LOGIN)")
	case !encrypted && !loopback:
		return fmt.Errorf("refusing to send the password unencrypted to %s (use smtps:// or ?starttls=required)", s.server.host)
	case has("PLAIN"):
		a = gosmtp.PlainAuth("", s.server.user, s.server.pass, s.server.host, false)
	default:
		a = gosmtp.LoginAuth(s.server.user, s.server.pass, s.server.host, false)
	}
	return conn.Auth(a)
}

// describe turns a delivery failure into the error Send returns.
func (s *SMTP) describe(ctx context.Context, err error, rcpt string) error {
	var pe *phaseError
	phase := "send"
	if errors.As(err, &pe) {
		phase = pe.phase
	}
	e := &deliveryError{err: err}
	if ctxErr := ctx.Err(); ctxErr != nil {
		// The closed connection is a consequence; the deadline is the cause.
		e.text = fmt.Sprintf("mail: smtp %s via %s: %v (%s)", phase, s.server.addr(), ctxErr, s.scrub(err.Error(), rcpt))
		e.kinds = append(e.kinds, ctxErr)
		return e
	}
	e.text = fmt.Sprintf("mail: smtp %s via %s: %s", phase, s.server.addr(), s.scrub(err.Error(), rcpt))
	var se *gomail.SendError
	var te *textproto.Error
	switch {
	case phase == "auth" && !transient(err):
		e.kinds = append(e.kinds, ErrAuth)
	case errors.As(err, &se) && !se.IsTemp() && se.ErrorCode() >= 500:
		e.kinds = append(e.kinds, ErrRejected)
	case phase == "send" && errors.As(err, &te) && te.Code >= 500:
		e.kinds = append(e.kinds, ErrRejected)
	}
	return e
}

// transient reports whether err is a temporary reply (4xx, such as 454
// during AUTH) or a network failure, rather than a refusal.
func transient(err error) bool {
	if te := (*textproto.Error)(nil); errors.As(err, &te) {
		return te.Code < 500
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// scrub removes the password and the recipient from text taken from
// go-mail or the server, which may echo either.
func (s *SMTP) scrub(text, rcpt string) string {
	if s.server.pass != "" {
		text = strings.ReplaceAll(text, s.server.pass, "[password]")
	}
	if rcpt != "" {
		text = replaceFold(text, rcpt, "[recipient]")
	}
	return text
}

// replaceFold replaces every ASCII-case-insensitive match of needle in
// text; servers may change the case of an address they echo.
func replaceFold(text, needle, with string) string {
	var b strings.Builder
	for i := 0; i < len(text); {
		if i+len(needle) <= len(text) && strings.EqualFold(text[i:i+len(needle)], needle) {
			b.WriteString(with)
			i += len(needle)
			continue
		}
		b.WriteByte(text[i])
		i++
	}
	return b.String()
}

// deliveryError is a scrubbed description of a failed delivery. errors.Is
// and errors.As still reach the sentinels (kinds) and the original error,
// whose own text is never shown.
type deliveryError struct {
	text  string
	kinds []error
	err   error
}

func (e *deliveryError) Error() string   { return e.text }
func (e *deliveryError) Unwrap() []error { return append(e.kinds[:len(e.kinds):len(e.kinds)], e.err) }
