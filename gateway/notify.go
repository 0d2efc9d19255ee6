package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/store"
)

// mailer sends one message; *mail.Mailer implements it.
type mailer interface {
	Send(ctx context.Context, m mail.Message) error
}

// mailTimeout bounds one delivery attempt.
const mailTimeout = 30 * time.Second

// postman sends mail off the request path, so a response never waits for
// (or reveals through its timing) an SMTP conversation. Shutdown waits
// for messages in flight.
type postman struct {
	m      mailer
	logger interface{ Error(string, ...any) }
	slots  chan struct{}
	wg     sync.WaitGroup
}

func newPostman(m mailer, logger interface{ Error(string, ...any) }) *postman {
	return &postman{m: m, logger: logger, slots: make(chan struct{}, 8)}
}

// send delivers msg in the background. Failures are logged by kind, never
// with the recipient or body.
func (p *postman) send(kind string, msg mail.Message) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.slots <- struct{}{}
		defer func() { <-p.slots }()
		ctx, cancel := context.WithTimeout(context.Background(), mailTimeout)
		defer cancel()
		if err := p.m.Send(ctx, msg); err != nil {
			p.logger.Error("mail not sent", "kind", kind, "err", err)
		}
	}()
}

// run does f off the request path, counted by wait like a message.
func (p *postman) run(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.slots <- struct{}{}
		defer func() { <-p.slots }()
		f()
	}()
}

// wait blocks until every queued message is handed over or ctx ends.
func (p *postman) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// errNoPublicURL refuses to mail a link when the site's address is not
// configured: building it from the request's Host would let anyone send an
// account's owner a reset link pointing at their own host.
var errNoPublicURL = &apiError{Status: fiber.StatusServiceUnavailable, Type: "server_error", Code: "public_url_required",
	Msg: "this site cannot send account links: its operator must set --public-url", RetryAfter: 3600}

// siteURL is the base of links in emails: the configured public URL. Only
// on a loopback host (development on one machine) is the request's own
// address trusted instead, and then only over plain http.
func (g *Gateway) siteURL(c *fiber.Ctx) (string, error) {
	if g.cfg.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.PublicURL, "/"), nil
	}
	if site, ok := loopbackSite(string(c.Request().Host())); ok {
		return site, nil
	}
	return "", errNoPublicURL
}

// loopbackSite returns http://host when host (a request's Host header) is
// a loopback name or address with an optional numeric port, checked here
// rather than trusted to the HTTP server's parsing: a Host such as
// "localhost:x.evil.example" would otherwise put a stranger's host in an
// emailed link.
func loopbackSite(host string) (string, bool) {
	name, port := host, ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		name, port = host[:i], host[i+1:]
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
			return "", false
		}
	}
	switch {
	case strings.EqualFold(name, "localhost"):
	case strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]"):
		ip, err := netip.ParseAddr(name[1 : len(name)-1])
		if err != nil || !ip.Is6() || ip.Zone() != "" || !ip.IsLoopback() {
			return "", false
		}
	default:
		ip, err := netip.ParseAddr(name)
		if err != nil || !ip.Is4() || !ip.IsLoopback() {
			return "", false
		}
	}
	return "http://" + host, true
}

// Account emails. Each is essential (CategoryAccount or CategorySecurity):
// the recipient asked for it or must know.

func resetMail(to, link string, ttl time.Duration) mail.Message {
	return mail.Message{To: to, Category: mail.CategoryAccount, Subject: "Reset your password",
		Text: fmt.Sprintf("Someone (hopefully you) asked to reset the password of your account.\n\n"+
			"Choose a new password here (the link works once, for %s):\n\n%s\n\n"+
			"If you did not ask for this, ignore this email: your password stays as it is.\n", ttl, link)}
}

func verifyMail(to, link string, change bool) mail.Message {
	intro := "Welcome! Confirm that this address is yours:"
	if change {
		intro = "Confirm that you want to use this address for your account:"
	}
	return mail.Message{To: to, Category: mail.CategoryAccount, Subject: "Confirm your email address",
		Text: intro + "\n\n" + link + "\n\nIf this was not you, ignore this email.\n"}
}

func existingAccountMail(to, resetLink string) mail.Message {
	return mail.Message{To: to, Category: mail.CategoryAccount, Subject: "Someone tried to sign up with your address",
		Text: "Someone tried to create an account with this email address, but you already have one.\n\n" +
			"If it was you, sign in instead, or reset your password:\n\n" + resetLink + "\n\n" +
			"If it was not you, you can ignore this email.\n"}
}

// passwordChangedMail tells the owner their password changed (reset: by
// an emailed link) and what happened to their API keys.
func passwordChangedMail(to string, ch store.PasswordChange, reset bool) mail.Message {
	how, sessions := "was just changed", "every other session was signed out"
	if reset {
		how, sessions = "was just reset with an emailed link", "every session was signed out"
	}
	return mail.Message{To: to, Category: mail.CategorySecurity, Subject: "Your password was changed",
		Text: "The password of your account " + how + ", and " + sessions + ".\n\n" + keysSentence(ch) + "\n\n" +
			"If this was not you, reset your password at once, revoke your API keys and contact us.\n"}
}

// keysSentence says what a password change did to the API keys.
func keysSentence(ch store.PasswordChange) string {
	keys := func(n int) string {
		if n == 1 {
			return "Your API key was"
		}
		return fmt.Sprintf("Your %d API keys were", n)
	}
	switch {
	case ch.KeysRevoked > 0:
		return keys(ch.KeysRevoked) + " revoked: programs that sign requests with a revoked key stop working until you give them a new one."
	case ch.KeysFlagged > 0:
		return keys(ch.KeysFlagged) + " kept working, as you chose, and flagged in your key list: delete any you do not recognise."
	}
	return "Your account has no API keys."
}

// keysDetail records a password change's effect on API keys in the
// security log.
func keysDetail(ch store.PasswordChange) string {
	return fmt.Sprintf("api_keys_revoked=%d api_keys_flagged=%d", ch.KeysRevoked, ch.KeysFlagged)
}

// client is who a security event comes from, copied out of the request.
type client struct{ ip, userAgent string }

func (g *Gateway) clientOf(c *fiber.Ctx) client {
	return client{ip: g.ips.Addr(c).String(), userAgent: cutUserAgent(c.Get(fiber.HeaderUserAgent))}
}

// securityLogUA bounds the user agent kept in the security log, in bytes.
const securityLogUA = 256

// cutUserAgent is the user agent as the security log keeps it: valid
// UTF-8 (invalid bytes become U+FFFD), at most securityLogUA bytes, cut on
// a character boundary so the row never ends in half a character. The
// result is a copy, safe to keep after the request.
func cutUserAgent(ua string) string {
	if len(ua) > 4*securityLogUA {
		ua = ua[:4*securityLogUA]
	}
	ua = strings.ToValidUTF8(ua, "\uFFFD")
	if len(ua) > securityLogUA {
		n := securityLogUA
		for n > 0 && !utf8.RuneStart(ua[n]) {
			n--
		}
		ua = ua[:n]
	}
	return strings.Clone(ua)
}

// securityEvent appends to the security log (promise S1): the event, the
// account, the client's address and user agent. Failures are logged, not
// returned: the user's action already happened.
func (g *Gateway) securityEvent(c *fiber.Ctx, kind, accountID, detail string) {
	g.securityEventFrom(g.clientOf(c), kind, accountID, detail)
}

// securityEventFrom is securityEvent for work done after the request.
func (g *Gateway) securityEventFrom(cl client, kind, accountID, detail string) {
	err := g.store.LogSecurityEvent(store.SecurityEvent{
		Kind: kind, AccountID: accountID, IP: cl.ip, UserAgent: cl.userAgent, Detail: detail,
	})
	if err != nil {
		g.logger.Error("security log write failed", "kind", kind, "err", err)
	}
}
