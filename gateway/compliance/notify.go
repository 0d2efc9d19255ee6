package compliance

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/store"
)

// Template is the text of an incident notice with placeholders, written
// {{name}}:
//
//	{{email}}            the recipient's address
//	{{account_created}}  the day the recipient's account was created
//	{{date}}             the day the notification job started
//	{{site_url}}         the site's base URL
//
// Any other {{…}} is an error, so a typo never reaches users.
type Template []TemplatePart

// TemplatePart is literal text or one placeholder of a Template.
type TemplatePart struct {
	Text  string // literal text, or
	Field string // a placeholder's name
}

// TemplateFields are the placeholders a template may use.
var TemplateFields = []string{"email", "account_created", "date", "site_url"}

// ParseTemplate parses an operator's template.
func ParseTemplate(s string) (Template, error) {
	var t Template
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			if s != "" {
				t = append(t, TemplatePart{Text: s})
			}
			return t, nil
		}
		if i > 0 {
			t = append(t, TemplatePart{Text: s[:i]})
		}
		j := strings.Index(s[i+2:], "}}")
		if j < 0 {
			return nil, errors.New("template: {{ without a closing }}")
		}
		name := strings.TrimSpace(s[i+2 : i+2+j])
		known := false
		for _, f := range TemplateFields {
			known = known || f == name
		}
		if !known {
			return nil, fmt.Errorf("template: unknown placeholder {{%.40s}}: use %s", name, "{{"+strings.Join(TemplateFields, "}}, {{")+"}}")
		}
		t = append(t, TemplatePart{Field: name})
		s = s[i+2+j+2:]
	}
}

// Render fills the template's placeholders from vars.
func (t Template) Render(vars map[string]string) string {
	var b strings.Builder
	for _, p := range t {
		if p.Field != "" {
			b.WriteString(vars[p.Field])
		} else {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// Notice is the message a recipient of job gets.
func Notice(job store.NotifyJob, tpl Template, r store.NotifyRecipient) mail.Message {
	return mail.Message{
		To: r.Email, Category: mail.CategorySecurity, Subject: job.Subject,
		Text: tpl.Render(map[string]string{
			"email": r.Email, "account_created": r.Created.UTC().Format(time.DateOnly),
			"date": job.Created.UTC().Format(time.DateOnly), "site_url": job.SiteURL,
		}),
	}
}

// NotifyStore is what the notifier needs of the store: a job, and its
// recipients handed out at most once each.
type NotifyStore interface {
	NotifyJob(id string) (store.NotifyJob, error)
	UnfinishedNotifyJobs() ([]store.NotifyJob, error)
	ListNotifyRecipients(jobID string, batch int) (done bool, err error)
	NextNotifyRecipient(jobID string) (store.NotifyRecipient, error)
	FinishNotifyRecipient(jobID, accountID string, outcome store.NotifyOutcome) error
}

// Mailer sends one message (the gateway's SMTP mailer or outbox).
type Mailer interface {
	Send(ctx context.Context, msg mail.Message) error
}

// Logger is where the notifier reports progress and failures (a
// *slog.Logger). Nothing logged names a recipient.
type Logger interface {
	Info(string, ...any)
	Error(string, ...any)
}

// NotifierConfig is what a Notifier runs on.
type NotifierConfig struct {
	Store  NotifyStore
	Mailer Mailer
	Logger Logger
	// Quit closes when the gateway stops; InFlight counts the running
	// jobs, so the gateway's shutdown can wait for the mail they are
	// handing over.
	Quit     <-chan struct{}
	InFlight *sync.WaitGroup
	// Clock and Wait pace the jobs (nil: time.Now and a timer; tests pass
	// a fake clock and a wait that moves it).
	Clock func() time.Time
	Wait  func(ctx context.Context, d time.Duration) error
	// RetryAfter is the first pause after the mail system failed (0:
	// 30 s); it doubles up to 10 minutes.
	RetryAfter time.Duration
	// SendTimeout bounds one mail (0: 30 s).
	SendTimeout time.Duration
}

// Notifier mails notification jobs, each in its own goroutine, paced at
// the job's rate. The store hands out each recipient once and records it
// before the mail goes out, so a job resumed after a crash never mails
// anyone twice (a recipient whose mail was in flight at the crash is
// counted as interrupted instead). A stopping gateway lets the mail in
// flight finish and leaves the rest for the next start.
type Notifier struct {
	cfg NotifierConfig

	mu      sync.Mutex
	running map[string]bool
}

// NewNotifier returns a notifier; it starts nothing until Resume or
// Launch.
func NewNotifier(cfg NotifierConfig) *Notifier {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Wait == nil {
		cfg.Wait = sleepCtx
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 30 * time.Second
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.InFlight == nil {
		cfg.InFlight = new(sync.WaitGroup)
	}
	return &Notifier{cfg: cfg, running: map[string]bool{}}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Resume starts every job a previous process left unfinished.
func (n *Notifier) Resume() {
	jobs, err := n.cfg.Store.UnfinishedNotifyJobs()
	if err != nil {
		n.cfg.Logger.Error("notification jobs not resumed", "err", err)
		return
	}
	for _, j := range jobs {
		n.cfg.Logger.Info("resuming notification", "job", j.ID, "pending", j.Counts.Pending)
		n.Launch(j.ID)
	}
}

// Launch runs the job in the background unless it runs already.
func (n *Notifier) Launch(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running[id] {
		return
	}
	n.running[id] = true
	n.cfg.InFlight.Add(1)
	go func() {
		defer n.cfg.InFlight.Done()
		defer func() {
			n.mu.Lock()
			delete(n.running, id)
			n.mu.Unlock()
		}()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-n.cfg.Quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := n.Run(ctx, id); err != nil && ctx.Err() == nil {
			n.cfg.Logger.Error("notification stopped", "job", id, "err", err)
		}
	}()
}

// Run mails the job's recipients until none is left or ctx ends.
func (n *Notifier) Run(ctx context.Context, id string) error {
	st := n.cfg.Store
	job, err := st.NotifyJob(id)
	if err != nil {
		return err
	}
	tpl, err := ParseTemplate(job.Template)
	if err != nil {
		return err
	}
	for job.State == store.NotifyListing {
		done, err := st.ListNotifyRecipients(id, 1000)
		if err != nil {
			return err
		}
		if done {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	lim := rate.NewLimiter(rate.Limit(job.Rate), 1)
	pause := n.cfg.RetryAfter
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Pace before claiming: a stop while waiting leaves nobody
		// claimed and unsent.
		now := n.cfg.Clock()
		if d := lim.ReserveN(now, 1).DelayFrom(now); d > 0 {
			if err := n.cfg.Wait(ctx, d); err != nil {
				return err
			}
		}
		r, err := st.NextNotifyRecipient(id)
		if errors.Is(err, store.ErrJobFinished) {
			if job, err := st.NotifyJob(id); err == nil {
				n.cfg.Logger.Info("notification finished", "job", id, "sent", job.Counts.Sent, "failed", job.Counts.Failed, "interrupted", job.Counts.Interrupted)
			}
			return nil
		}
		if err != nil {
			return err
		}
		// The mail in flight is handed over even if the gateway is
		// stopping, so its outcome is known and recorded.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.SendTimeout)
		err = n.cfg.Mailer.Send(sctx, Notice(job, tpl, r))
		cancel()
		outcome := store.NotifySent
		switch {
		case err == nil:
			pause = n.cfg.RetryAfter
		case notDelivered(err):
			outcome = store.NotifyRetry
		default:
			outcome = store.NotifyFailed
		}
		if err != nil {
			// Never the recipient: mail errors name neither address nor
			// body.
			n.cfg.Logger.Error("notification mail not sent", "job", id, "retry", outcome == store.NotifyRetry, "err", err)
		}
		if err := st.FinishNotifyRecipient(id, r.AccountID, outcome); err != nil {
			return err
		}
		if outcome == store.NotifyRetry {
			// The mail system is down: wait for it rather than burn
			// through the list.
			if err := n.cfg.Wait(ctx, pause); err != nil {
				return err
			}
			pause = min(2*pause, 10*time.Minute)
		}
	}
}

// notDelivered reports whether a send failed before the message could
// have reached the mail server (it was unreachable, or refused our
// credentials), so the recipient can be mailed again later without risk
// of a duplicate.
func notDelivered(err error) bool {
	if errors.Is(err, mail.ErrAuth) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}
