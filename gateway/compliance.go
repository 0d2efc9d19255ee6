package gateway

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/compliance"
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
}

// statsStore exports the model-improvement statistics.
type statsStore interface {
	ExportStats(k int) (store.StatsExport, error)
}

type complianceStore interface {
	dsarStore
	notifyJobStore
	compliance.NotifyStore
	statsStore
}

// Security-log kinds of the operator actions here (promise S3).
const (
	eventAdminDSARAdd   = "admin_dsar_add"
	eventAdminDSARClose = "admin_dsar_close"
	eventAdminNotify    = "admin_notify"
	eventAdminStats     = "admin_stats_export"
)

// Limits of the operator's input.
const (
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

	n := compliance.NewNotifier(g.notifierConfig())
	n.Resume()
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

// addDSAR records a rights request received by email (POST
// /v1/admin/dsar) and answers it with its deadline.
func (g *Gateway) addDSAR(c *fiber.Ctx) error {
	var req compliance.DSARRequest
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	n, err := compliance.ParseDSAR(req, g.now())
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

// listDSARs lists open rights requests, overdue first, then by deadline
// (GET /v1/admin/dsar; ?closed=true adds the closed ones). It first
// applies the retention of closed requests.
func (g *Gateway) listDSARs(c *fiber.Ctx) error {
	if _, _, err := g.store.ExpireDSARs(compliance.DSARKeepPersonal, compliance.DSARKeepRecord); err != nil {
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
	if reason := compliance.NoteProblem(req.Note); reason != "" {
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
func (g *Gateway) startNotify(c *fiber.Ctx, n notifier) error {
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
	tpl, err := compliance.ParseTemplate(req.Template)
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
		msg := compliance.Notice(sample, tpl, store.NotifyRecipient{Email: "recipient@example.com", Created: g.now()})
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
	n.Launch(job.ID)
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

// notifier mails incident notification jobs in the background (a
// *compliance.Notifier).
type notifier interface {
	Launch(jobID string)
	Resume()
}

// notifierConfig is what the gateway's notifier runs on. Its jobs count
// as mail in flight, so Shutdown waits for the mail they are handing
// over; they stop when g.done closes, which Shutdown's g.stop brings
// about (the background goroutine ends and closes it).
func (g *Gateway) notifierConfig() compliance.NotifierConfig {
	return compliance.NotifierConfig{
		Store: g.store, Mailer: g.mail.m, Logger: g.logger, Quit: g.done, InFlight: &g.mail.wg,
		SendTimeout: mailTimeout,
	}
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
