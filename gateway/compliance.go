package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/store"
)

// Operator routes for the privacy promises that need an operator: rights
// requests received by email (R5), incident notifications (S5) and the
// model-improvement statistics (C5).

// dsarStore tracks rights requests received by email.
type dsarStore interface {
	AddDSAR(store.NewDSAR) (store.DSAR, error)
	DSARs(closed bool) ([]store.DSAR, error)
	CloseDSAR(id, note string) (store.DSAR, error)
	ExpireDSARs(keepPersonal, keepRecord time.Duration) (erased, deleted int, err error)
}

// notifyJobStore keeps incident notification jobs.
type notifyJobStore interface {
	CreateNotifyJob(store.NewNotifyJob) (store.NotifyJob, error)
	NotifyJob(id string) (store.NotifyJob, error)
	UnfinishedNotifyJobs() ([]store.NotifyJob, error)
}

// notifyRecipientStore hands out a job's recipients, each at most once.
type notifyRecipientStore interface {
	ListNotifyRecipients(jobID string, batch int) (done bool, err error)
	NextNotifyRecipient(jobID string) (store.NotifyRecipient, error)
	FinishNotifyRecipient(jobID, accountID string, outcome store.NotifyOutcome) error
}

// statsStore exports the model-improvement statistics.
type statsStore interface {
	ExportStats(k int) (store.StatsExport, error)
}

type complianceStore interface {
	dsarStore
	notifyJobStore
	notifyRecipientStore
	statsStore
}

// Security-log kinds of the operator actions here (promise S3).
const (
	eventAdminDSARAdd   = "admin_dsar_add"
	eventAdminDSARClose = "admin_dsar_close"
	eventAdminNotify    = "admin_notify"
	eventAdminStats     = "admin_stats_export"
)

// Retention of closed rights requests: the requester's email and the
// notes stay readable for follow-up questions for dsarKeepPersonal after
// closing, then their key is destroyed; the bare record (kind and dates)
// stays as evidence of compliance for dsarKeepRecord.
const (
	dsarKeepPersonal = store.DefaultDSARPersonal
	dsarKeepRecord   = store.DefaultDSARRecord
)

// Limits of the operator's input.
const (
	maxDSARNote       = 2000     // characters
	maxNotifyTemplate = 64 << 10 // bytes
	maxNotifyAccounts = 100_000
	maxNotifyRate     = 1000 // messages per second
	defaultNotifyRate = 10
	// defaultNotifySubject is the subject when the operator gives none.
	defaultNotifySubject = "Security notice about your account"
)

// complianceRoutes registers the operator routes for rights requests,
// incident notifications and model-improvement statistics, and resumes
// the notification jobs a previous process left unfinished. It runs
// inside New, before the gateway serves anything, so a resumed job and a
// new request can never start the same job twice.
func (g *Gateway) complianceRoutes(admin fiber.Router) {
	admin.Post("/dsar", g.addDSAR)
	admin.Get("/dsar", g.listDSARs)
	admin.Post("/dsar/:id/close", g.closeDSAR)

	n := g.newNotifier()
	n.resume()
	admin.Post("/notify", func(c *fiber.Ctx) error { return g.startNotify(c, n) })
	admin.Get("/notify/:id", g.notifyProgress)

	admin.Get("/stats", g.exportStats)
}

// --- Rights requests (promise R5) ---

// dsarJSON is a rights request as the admin API shows it. Dates are UTC
// days (YYYY-MM-DD).
type dsarJSON struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Email    string `json:"email,omitempty"`
	Received string `json:"received"`
	Deadline string `json:"deadline"`
	// DaysLeft counts days to the deadline: 0 on the day, negative once
	// overdue.
	DaysLeft int `json:"days_left"`
	// Status is "overdue", "open" or "closed".
	Status    string `json:"status"`
	Closed    string `json:"closed,omitempty"`
	Note      string `json:"note,omitempty"`
	CloseNote string `json:"close_note,omitempty"`
	// Erased: the email and notes were destroyed after the retention.
	Erased bool `json:"erased,omitempty"`
}

func toDSARJSON(r store.DSAR, now time.Time) dsarJSON {
	j := dsarJSON{
		ID: r.ID, Kind: string(r.Kind), Email: r.Email, Received: r.Received.Format(time.DateOnly),
		Deadline: r.Deadline.Format(time.DateOnly), DaysLeft: r.DaysLeft(now), Status: "open",
		Note: r.Note, CloseNote: r.CloseNote, Erased: r.Erased,
	}
	switch {
	case !r.IsOpen():
		j.Status, j.Closed = "closed", r.Closed.UTC().Format(time.DateOnly)
	case r.Overdue(now):
		j.Status = "overdue"
	}
	return j
}

type addDSARRequest struct {
	Email string `json:"email"`
	Kind  string `json:"kind"`
	// Received is the day the request arrived, YYYY-MM-DD; empty: today.
	Received string `json:"received"`
	Note     string `json:"note"`
}

// addDSAR records a rights request received by email (POST
// /v1/admin/dsar) and answers it with its deadline.
func (g *Gateway) addDSAR(c *fiber.Ctx) error {
	var req addDSARRequest
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	n, err := parseDSAR(req, g.now())
	if err != nil {
		return err
	}
	r, err := g.store.AddDSAR(n)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAdminDSARAdd, "", "id="+r.ID+" kind="+string(r.Kind))
	return c.Status(fiber.StatusCreated).JSON(toDSARJSON(r, g.now()))
}

// parseDSAR checks an operator's request, reporting every problem at once.
func parseDSAR(req addDSARRequest, now time.Time) (store.NewDSAR, error) {
	var problems []string
	n := store.NewDSAR{Email: strings.TrimSpace(req.Email), Kind: store.DSARKind(req.Kind), Note: req.Note}
	if err := mail.CheckAddress(store.NormalizeEmail(n.Email)); err != nil {
		problems = append(problems, "email: "+strings.TrimPrefix(err.Error(), "mail: invalid address: "))
	}
	if !n.Kind.Valid() {
		var kinds []string
		for _, k := range store.DSARKinds {
			kinds = append(kinds, string(k))
		}
		problems = append(problems, "kind: must be one of "+strings.Join(kinds, ", "))
	}
	if req.Received != "" {
		d, err := time.Parse(time.DateOnly, req.Received)
		switch {
		case err != nil:
			problems = append(problems, "received: must be a date YYYY-MM-DD")
		case d.After(now.UTC()):
			problems = append(problems, "received: must not be in the future")
		default:
			n.Received = d
		}
	}
	if reason := noteProblem(req.Note); reason != "" {
		problems = append(problems, "note: "+reason)
	}
	if len(problems) > 0 {
		return store.NewDSAR{}, badRequest("invalid_dsar", strings.Join(problems, "; "))
	}
	return n, nil
}

func noteProblem(s string) string {
	switch {
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return "must be UTF-8 text"
	case utf8.RuneCountInString(s) > maxDSARNote:
		return fmt.Sprintf("at most %d characters", maxDSARNote)
	}
	return ""
}

// listDSARs lists open rights requests, overdue first, then by deadline
// (GET /v1/admin/dsar; ?closed=true adds the closed ones). It first
// applies the retention of closed requests.
func (g *Gateway) listDSARs(c *fiber.Ctx) error {
	if _, _, err := g.store.ExpireDSARs(dsarKeepPersonal, dsarKeepRecord); err != nil {
		g.logger.Error("rights-request retention failed", "err", err)
	}
	rs, err := g.store.DSARs(c.QueryBool("closed"))
	if err != nil {
		return err
	}
	now := g.now()
	out := struct {
		Today    string     `json:"today"`
		Requests []dsarJSON `json:"requests"`
	}{Today: now.UTC().Format(time.DateOnly), Requests: []dsarJSON{}}
	for _, r := range rs {
		out.Requests = append(out.Requests, toDSARJSON(r, now))
	}
	return c.JSON(out)
}

// closeDSAR marks a rights request answered (POST
// /v1/admin/dsar/:id/close, body {"note"} optional).
func (g *Gateway) closeDSAR(c *fiber.Ctx) error {
	var req struct {
		Note string `json:"note"`
	}
	if len(c.Body()) > 0 {
		if err := decodeJSON(c.Body(), &req); err != nil {
			return err
		}
	}
	if reason := noteProblem(req.Note); reason != "" {
		return badRequest("invalid_dsar", "note: "+reason)
	}
	id := strings.Clone(c.Params("id"))
	r, err := g.store.CloseDSAR(id, req.Note)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such rights request"}
	case errors.Is(err, store.ErrConflict):
		return &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "already_closed", Msg: "the rights request is closed already"}
	case err != nil:
		return err
	}
	g.securityEvent(c, eventAdminDSARClose, "", "id="+r.ID)
	return c.JSON(toDSARJSON(r, g.now()))
}

// --- Incident notifications (promise S5) ---

// notifyTemplate is the text of an incident notice with placeholders,
// written {{name}}:
//
//	{{email}}            the recipient's address
//	{{account_created}}  the day the recipient's account was created
//	{{date}}             the day the notification job started
//	{{site_url}}         the site's base URL
//
// Any other {{…}} is an error, so a typo never reaches users.
type notifyTemplate []templatePart

type templatePart struct {
	text  string // literal text, or
	field string // a placeholder's name
}

// notifyFields are the placeholders a template may use.
var notifyFields = []string{"email", "account_created", "date", "site_url"}

// parseNotifyTemplate parses an operator's template.
func parseNotifyTemplate(s string) (notifyTemplate, error) {
	var t notifyTemplate
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			if s != "" {
				t = append(t, templatePart{text: s})
			}
			return t, nil
		}
		if i > 0 {
			t = append(t, templatePart{text: s[:i]})
		}
		j := strings.Index(s[i+2:], "}}")
		if j < 0 {
			return nil, errors.New("template: {{ without a closing }}")
		}
		name := strings.TrimSpace(s[i+2 : i+2+j])
		known := false
		for _, f := range notifyFields {
			known = known || f == name
		}
		if !known {
			return nil, fmt.Errorf("template: unknown placeholder {{%.40s}}: use %s", name, "{{"+strings.Join(notifyFields, "}}, {{")+"}}")
		}
		t = append(t, templatePart{field: name})
		s = s[i+2+j+2:]
	}
}

// render fills the template's placeholders from vars.
func (t notifyTemplate) render(vars map[string]string) string {
	var b strings.Builder
	for _, p := range t {
		if p.field != "" {
			b.WriteString(vars[p.field])
		} else {
			b.WriteString(p.text)
		}
	}
	return b.String()
}

// notifyMail is the message a recipient of job gets.
func notifyMail(job store.NotifyJob, tpl notifyTemplate, r store.NotifyRecipient) mail.Message {
	return mail.Message{
		To: r.Email, Category: mail.CategorySecurity, Subject: job.Subject,
		Text: tpl.render(map[string]string{
			"email": r.Email, "account_created": r.Created.UTC().Format(time.DateOnly),
			"date": job.Created.UTC().Format(time.DateOnly), "site_url": job.SiteURL,
		}),
	}
}

type startNotifyRequest struct {
	Subject  string   `json:"subject"`
	Template string   `json:"template"`
	Accounts []string `json:"accounts"`
	All      bool     `json:"all"`
	// Rate is the most messages per second (default 10).
	Rate float64 `json:"rate"`
}

// notifyJSON is a job's progress as the admin API shows it.
type notifyJSON struct {
	ID       string             `json:"id"`
	State    string             `json:"state"`
	Subject  string             `json:"subject"`
	All      bool               `json:"all"`
	Rate     float64            `json:"rate"`
	Created  time.Time          `json:"created"`
	Finished *time.Time         `json:"finished,omitempty"`
	Counts   store.NotifyCounts `json:"counts"`
}

func toNotifyJSON(j store.NotifyJob) notifyJSON {
	out := notifyJSON{ID: j.ID, State: string(j.State), Subject: j.Subject, All: j.All, Rate: j.Rate, Created: j.Created, Counts: j.Counts}
	if !j.Finished.IsZero() {
		out.Finished = &j.Finished
	}
	return out
}

// startNotify starts mailing an incident notice (POST /v1/admin/notify)
// and answers 202 with the job, whose progress GET
// /v1/admin/notify/:id shows.
func (g *Gateway) startNotify(c *fiber.Ctx, n *notifier) error {
	var req startNotifyRequest
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	site, err := g.siteURL(c)
	if err != nil {
		return err
	}
	if req.Subject == "" {
		req.Subject = defaultNotifySubject
	}
	if req.Rate == 0 {
		req.Rate = defaultNotifyRate
	}
	var problems []string
	if req.All == (len(req.Accounts) > 0) {
		problems = append(problems, "name the recipients: accounts or all (not both)")
	}
	if len(req.Accounts) > maxNotifyAccounts {
		problems = append(problems, fmt.Sprintf("accounts: at most %d per job", maxNotifyAccounts))
	}
	for _, id := range req.Accounts {
		if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
			problems = append(problems, "accounts: every item must be an account id")
			break
		}
	}
	if !(req.Rate > 0 && req.Rate <= maxNotifyRate) {
		problems = append(problems, fmt.Sprintf("rate: must be above 0 and at most %d messages per second", maxNotifyRate))
	}
	tpl, err := parseNotifyTemplate(req.Template)
	switch {
	case strings.TrimSpace(req.Template) == "":
		problems = append(problems, "template: is empty")
	case len(req.Template) > maxNotifyTemplate:
		problems = append(problems, fmt.Sprintf("template: larger than %d bytes", maxNotifyTemplate))
	case err != nil:
		problems = append(problems, err.Error())
	default:
		// Render for a sample recipient: what the mailer would refuse is
		// refused now, not once per recipient.
		sample := store.NotifyJob{Subject: req.Subject, SiteURL: site, Created: g.now()}
		msg := notifyMail(sample, tpl, store.NotifyRecipient{Email: "recipient@example.com", Created: g.now()})
		if err := msg.Validate(); err != nil {
			problems = append(problems, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}
	if len(problems) > 0 {
		return badRequest("invalid_notification", strings.Join(problems, "; "))
	}
	accounts := make([]string, len(req.Accounts))
	for i, id := range req.Accounts {
		accounts[i] = strings.Clone(id)
	}
	job, err := g.store.CreateNotifyJob(store.NewNotifyJob{
		Subject: strings.Clone(req.Subject), Template: strings.Clone(req.Template), SiteURL: site,
		Rate: req.Rate, Accounts: accounts, All: req.All,
	})
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAdminNotify, "", fmt.Sprintf("job=%s all=%t accounts=%d rate=%g", job.ID, job.All, len(accounts), job.Rate))
	n.launch(job.ID)
	return c.Status(fiber.StatusAccepted).JSON(toNotifyJSON(job))
}

// notifyProgress shows a job (GET /v1/admin/notify/:id).
func (g *Gateway) notifyProgress(c *fiber.Ctx) error {
	job, err := g.store.NotifyJob(strings.Clone(c.Params("id")))
	if errors.Is(err, store.ErrNotFound) {
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such notification job"}
	}
	if err != nil {
		return err
	}
	return c.JSON(toNotifyJSON(job))
}

// notifier mails notification jobs, each in its own goroutine, paced at
// the job's rate. The store hands out each recipient once and records it
// before the mail goes out, so a job resumed after a crash never mails
// anyone twice (a recipient whose mail was in flight at the crash is
// counted as interrupted instead). A stopping gateway lets the mail in
// flight finish and leaves the rest for the next start.
type notifier struct {
	st interface {
		notifyJobStore
		notifyRecipientStore
	}
	m      mailer
	logger interface {
		Info(string, ...any)
		Error(string, ...any)
	}
	// quit closes when the gateway stops; wg is waited for by Shutdown.
	quit <-chan struct{}
	wg   *sync.WaitGroup
	// clock and wait pace the jobs (time.Now and a timer; tests pass a
	// fake clock and a wait that moves it).
	clock func() time.Time
	wait  func(ctx context.Context, d time.Duration) error
	// retryAfter is the first pause after the mail system failed; it
	// doubles up to 10 minutes.
	retryAfter time.Duration

	mu      sync.Mutex
	running map[string]bool
}

// newNotifier builds the gateway's notifier. Its goroutines count as mail
// in flight, so Shutdown waits for the mail they are handing over; they
// stop when g.done closes, which Shutdown's g.stop brings about (the
// background goroutine ends and closes it).
func (g *Gateway) newNotifier() *notifier {
	return &notifier{
		st: g.store, m: g.mail.m, logger: g.logger, quit: g.done, wg: &g.mail.wg,
		clock: time.Now, wait: sleepCtx, retryAfter: 30 * time.Second, running: map[string]bool{},
	}
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

// resume starts every job a previous process left unfinished.
func (n *notifier) resume() {
	jobs, err := n.st.UnfinishedNotifyJobs()
	if err != nil {
		n.logger.Error("notification jobs not resumed", "err", err)
		return
	}
	for _, j := range jobs {
		n.logger.Info("resuming notification", "job", j.ID, "pending", j.Counts.Pending)
		n.launch(j.ID)
	}
}

// launch runs the job in the background unless it runs already.
func (n *notifier) launch(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running[id] {
		return
	}
	n.running[id] = true
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			n.mu.Lock()
			delete(n.running, id)
			n.mu.Unlock()
		}()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-n.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := n.run(ctx, id); err != nil && ctx.Err() == nil {
			n.logger.Error("notification stopped", "job", id, "err", err)
		}
	}()
}

// run mails the job's recipients until none is left or ctx ends.
func (n *notifier) run(ctx context.Context, id string) error {
	job, err := n.st.NotifyJob(id)
	if err != nil {
		return err
	}
	tpl, err := parseNotifyTemplate(job.Template)
	if err != nil {
		return err
	}
	for job.State == store.NotifyListing {
		done, err := n.st.ListNotifyRecipients(id, 1000)
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
	pause := n.retryAfter
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Pace before claiming: a stop while waiting leaves nobody
		// claimed and unsent.
		now := n.clock()
		if d := lim.ReserveN(now, 1).DelayFrom(now); d > 0 {
			if err := n.wait(ctx, d); err != nil {
				return err
			}
		}
		r, err := n.st.NextNotifyRecipient(id)
		if errors.Is(err, store.ErrJobFinished) {
			if job, err := n.st.NotifyJob(id); err == nil {
				n.logger.Info("notification finished", "job", id, "sent", job.Counts.Sent, "failed", job.Counts.Failed, "interrupted", job.Counts.Interrupted)
			}
			return nil
		}
		if err != nil {
			return err
		}
		// The mail in flight is handed over even if the gateway is
		// stopping, so its outcome is known and recorded.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mailTimeout)
		err = n.m.Send(sctx, notifyMail(job, tpl, r))
		cancel()
		outcome := store.NotifySent
		switch {
		case err == nil:
			pause = n.retryAfter
		case notDelivered(err):
			outcome = store.NotifyRetry
		default:
			outcome = store.NotifyFailed
		}
		if err != nil {
			// Never the recipient: mail errors name neither address nor
			// body.
			n.logger.Error("notification mail not sent", "job", id, "retry", outcome == store.NotifyRetry, "err", err)
		}
		if err := n.st.FinishNotifyRecipient(id, r.AccountID, outcome); err != nil {
			return err
		}
		if outcome == store.NotifyRetry {
			// The mail system is down: wait for it rather than burn
			// through the list.
			if err := n.wait(ctx, pause); err != nil {
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

// --- Model-improvement statistics (promise C5) ---

// exportStats answers the aggregated, anonymized generation statistics
// (GET /v1/admin/stats?k=10); see store.StatsExport for the schema. k
// below store.MinStatsK is refused.
func (g *Gateway) exportStats(c *fiber.Ctx) error {
	k := store.MinStatsK
	if s := c.Query("k"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < store.MinStatsK {
			return badRequest("invalid_k", fmt.Sprintf("k: must be a whole number of at least %d", store.MinStatsK))
		}
		k = v
	}
	out, err := g.store.ExportStats(k)
	if err != nil {
		return err
	}
	g.securityEvent(c, eventAdminStats, "", fmt.Sprintf("k=%d groups=%d", k, len(out.Groups)))
	return c.JSON(out)
}
