package gateway

import (
	"context"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/moderation"
	"github.com/imagegate/imagegate/store"
)

// Moderation's configuration is package moderation's; these names keep the
// [moderation] section of --config and the Config field as they were.
type (
	ModerationConfig = moderation.Config
	ModerationRule   = moderation.Rule
	ClassifierConfig = moderation.ClassifierConfig
)

// moderator judges prompts before anything is reserved and outputs before
// anything is stored (a *moderation.Moderator, promise C6).
type moderator interface {
	CheckPrompt(ctx context.Context, who moderation.Subject, req moderation.Request) error
	// JudgeOutput checks an output and returns the policy version it
	// passed under (0: judged only in part, fail open).
	JudgeOutput(ctx context.Context, who moderation.Subject, req moderation.Request, image []byte, contentType string) (uint64, error)
	// Version numbers the policy; cached outputs judged under another
	// are judged again before they are served.
	Version() uint64
}

// moderationSubject is who a request's payer is, as moderation sees it.
func moderationSubject(py payer) moderation.Subject {
	return moderation.Subject{AccountID: py.accountID, Addr: py.addr}
}

// moderationRequest is what moderation judges of p, and what a report of
// p keeps.
func moderationRequest(p params) moderation.Request {
	return moderation.Request{
		Prompt: p.Prompt, NegativePrompt: p.NegativePrompt, Reference: p.Reference,
		Params: func() map[string]string { return reportParams(p) },
	}
}

// reportParams are the request parameters a report keeps.
func reportParams(p params) map[string]string {
	out := map[string]string{
		"model":         p.Model.Name,
		"model_version": p.Model.Version,
		"size":          strconv.Itoa(p.Width) + "x" + strconv.Itoa(p.Height),
		"n":             strconv.Itoa(p.N),
		"steps":         strconv.Itoa(p.Steps),
		"guidance":      strconv.FormatFloat(float64(p.Guidance), 'g', -1, 32),
		"style":         p.Style,
		"private":       strconv.FormatBool(p.Private),
	}
	if p.Seed != nil {
		out["seed"] = strconv.FormatUint(uint64(*p.Seed), 10)
	}
	if p.Reference != nil {
		out["edit"] = "true"
		out["strength"] = strconv.FormatFloat(float64(p.Strength), 'g', -1, 32)
		out["reference_sha256"] = p.ReferenceSHA256
	}
	return out
}

// eventAdminReports is the security-log kind of an operator reading
// moderation reports.
const eventAdminReports = "admin_reports"

// reportJSON is a report as operators see it.
type reportJSON struct {
	ID        string    `json:"id"`
	Created   time.Time `json:"created"`
	HoldUntil time.Time `json:"hold_until"`
	DaysLeft  int       `json:"days_left"`
	Category  string    `json:"category"`
	Source    string    `json:"source"`
	// Account is the account id, or "anonymous" with ClientIP.
	Account        string            `json:"account"`
	ClientIP       string            `json:"client_ip,omitempty"`
	Prompt         string            `json:"prompt"`
	NegativePrompt string            `json:"negative_prompt,omitempty"`
	Params         map[string]string `json:"params,omitempty"`
	ContentType    string            `json:"content_type,omitempty"`
	ImageSHA256    string            `json:"image_sha256,omitempty"`
	ImageBytes     int               `json:"image_bytes,omitempty"`
	// ImageURL is the admin route serving the material (admin token).
	ImageURL string `json:"image_url,omitempty"`
}

func (g *Gateway) reportJSON(r store.Report) reportJSON {
	left := r.HoldUntil.Sub(g.now())
	out := reportJSON{
		ID: r.ID, Created: r.Created, HoldUntil: r.HoldUntil, DaysLeft: max(0, int(math.Ceil(left.Hours()/24))),
		Category: r.Category, Source: r.Source, Account: r.AccountID, ClientIP: r.ClientIP,
		Prompt: r.Prompt, NegativePrompt: r.NegativePrompt, Params: r.Params,
		ContentType: r.ContentType, ImageSHA256: r.ImageSHA256, ImageBytes: r.ImageSize,
	}
	if out.Account == "" {
		out.Account = "anonymous"
	}
	if r.ImageSize > 0 {
		out.ImageURL = "/v1/admin/reports/" + r.ID + "/image"
	}
	return out
}

var reportID = regexp.MustCompile(`^rpt_[0-9a-z]{1,64}$`)

// moderationRoutes registers the operator routes (under the admin token):
// the reports of apparent CSAM, newest first, with the days left on their
// hold, and the material a report holds. Every read is audit-logged.
func (g *Gateway) moderationRoutes(admin fiber.Router) {
	admin.Get("/reports", func(c *fiber.Ctx) error {
		reports, err := g.store.Reports()
		if err != nil {
			return err
		}
		out := struct {
			Reports []reportJSON `json:"reports"`
		}{Reports: make([]reportJSON, len(reports))}
		for i, r := range reports {
			out.Reports[i] = g.reportJSON(r)
		}
		g.securityEvent(c, eventAdminReports, "", "list n="+strconv.Itoa(len(reports)))
		c.Set(fiber.HeaderCacheControl, "no-store")
		return c.JSON(out)
	})
	admin.Get("/reports/:id/image", func(c *fiber.Ctx) error {
		r, err := g.adminReport(c)
		if err != nil {
			return err
		}
		if len(r.Image) == 0 {
			return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "this report holds no image"}
		}
		g.securityEvent(c, eventAdminReports, "", "image report="+r.ID)
		c.Set(fiber.HeaderCacheControl, "no-store")
		c.Set(fiber.HeaderContentType, r.ContentType)
		c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+r.ID+`"`)
		return c.Send(r.Image)
	})
}

// adminReport loads the report the route names.
func (g *Gateway) adminReport(c *fiber.Ctx) (store.Report, error) {
	id := c.Params("id")
	notFound := &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such report (its hold may have ended)"}
	if !reportID.MatchString(id) {
		return store.Report{}, notFound
	}
	r, err := g.store.Report(strings.Clone(id))
	if errors.Is(err, store.ErrNotFound) {
		return store.Report{}, notFound
	}
	return r, err
}
