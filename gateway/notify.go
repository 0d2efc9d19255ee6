package gateway

import (
	"context"
	"fmt"
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

// wait blocks until every queued message is handed over or ctx ends.
func (p *postman) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// siteURL is the base of links in emails: the configured public URL, or
// the request's own origin.
func (g *Gateway) siteURL(c *fiber.Ctx) string {
	if g.cfg.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	return c.Protocol() + "://" + string(c.Request().Host())
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

// securityEvent appends to the security log (promise S1): the event, the
// account, the client's address and user agent. Failures are logged, not
// returned: the user's action already happened.
func (g *Gateway) securityEvent(c *fiber.Ctx, kind, accountID, detail string) {
	ua := c.Get(fiber.HeaderUserAgent)
	if len(ua) > 256 {
		ua = ua[:256]
	}
	err := g.store.LogSecurityEvent(store.SecurityEvent{
		Kind: kind, AccountID: accountID, IP: g.ips.addr(c).String(), UserAgent: strings.Clone(ua), Detail: detail,
	})
	if err != nil {
		g.logger.Error("security log write failed", "kind", kind, "err", err)
	}
}
