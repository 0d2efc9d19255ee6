package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

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
	host := string(c.Request().Host())
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	if ip, err := netip.ParseAddr(strings.Trim(name, "[]")); (err == nil && ip.IsLoopback()) || strings.EqualFold(name, "localhost") {
		return "http://" + host, nil
	}
	return "", errNoPublicURL
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

func passwordChangedMail(to string) mail.Message {
	return mail.Message{To: to, Category: mail.CategorySecurity, Subject: "Your password was changed",
		Text: "The password of your account was just changed, and every other session was signed out.\n\n" +
			"If this was not you, reset your password at once and contact us.\n"}
}

// client is who a security event comes from, copied out of the request.
type client struct{ ip, userAgent string }

func (g *Gateway) clientOf(c *fiber.Ctx) client {
	ua := c.Get(fiber.HeaderUserAgent)
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return client{ip: g.ips.Addr(c).String(), userAgent: strings.Clone(ua)}
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
