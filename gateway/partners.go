package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/gateway/partner"
	"github.com/imagegate/imagegate/store"
)

// Partner credentials on generation requests (documented in README.md):
// a browser sends the publishable key in Imagegate-Key (the widget's frame
// adds its embed token in Imagegate-Embed); a partner's server sends its
// secret key as Authorization: Bearer psk_….
const (
	headerPartnerKey = "Imagegate-Key"
	headerEmbedToken = "Imagegate-Embed"
	// partnerRoute is the one route partner keys work on.
	partnerRoute = "/v1/images/generations"
)

// Security-log kinds of partner management (promise S3: audit-logged).
const (
	eventAdminPartnerCreated = "admin_partner_created"
	eventAdminPartnerUpdated = "admin_partner_updated"
)

// partnerStore is the data layer's partner records, as the admin API and
// the engine use them.
type partnerStore interface {
	partner.Store
	CreatePartner(store.NewPartner) (store.Partner, string, error)
	Partner(id string) (store.Partner, error)
	Partners() ([]store.Partner, error)
	UpdatePartner(id string, ch store.PartnerChange) (store.Partner, error)
	PartnerUsageDays(id string, from, to time.Time) ([]store.PartnerUsage, error)
	PartnerMonthUsage(id string, month time.Time) (int, error)
}

// newPartners builds the partner engine; without a configured embed key
// frames get tokens from a key of this process only.
func newPartners(cfg partner.Config, st partner.Store, now func() time.Time) (*partner.Engine, error) {
	if len(cfg.EmbedKey) == 0 {
		cfg.EmbedKey = make([]byte, 32)
		rand.Read(cfg.EmbedKey)
	}
	return partner.New(cfg, st, now)
}

type partnerLocal struct{}

// partnerOf returns the partner a request acts for (see partnerAuth), or
// nil.
func partnerOf(c *fiber.Ctx) *store.Partner {
	p, _ := c.Locals(partnerLocal{}).(*store.Partner)
	return p
}

// partnerAuth resolves a partner credential on a generation request: the
// publishable key with the request's Origin, or the secret key. A request
// made for a partner is anonymous otherwise — cookies are not consulted,
// so a visitor's account on this site is never linked to a partner's
// page — and its response sets no cookie (promise K1 in a third-party
// frame: the widget needs none). A refused key answers 403; over the
// partner's rate limit, 429.
func (g *Gateway) partnerAuth(c *fiber.Ctx) error {
	pk := c.Get(headerPartnerKey)
	scheme, secret, _ := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
	secret = strings.TrimSpace(secret)
	isSecret := strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(secret, store.PartnerSecretPrefix)
	if pk == "" && !isSecret {
		return c.Next()
	}
	ctx := context.Background()
	var p store.Partner
	var err error
	origin := c.Get(fiber.HeaderOrigin)
	if isSecret {
		p, err = g.partners.Secret(ctx, secret)
	} else {
		p, err = g.partners.Publishable(ctx, partner.Request{
			Key: pk, Origin: origin, SelfOrigin: g.selfOrigin(c), EmbedToken: c.Get(headerEmbedToken),
		})
		if err == nil && origin != g.selfOrigin(c) {
			// A partner's own page calling the API: CORS without
			// credentials, for exactly this origin.
			c.Set(fiber.HeaderAccessControlAllowOrigin, origin)
			c.Vary(fiber.HeaderOrigin)
		}
	}
	if err != nil {
		return partnerError(err)
	}
	if err := g.partners.Allow(p); err != nil {
		return partnerError(err)
	}
	c.Locals(partnerLocal{}, &p)
	err = c.Next()
	c.Response().Header.DelAllCookies()
	return err
}

// partnerPreflight answers CORS preflights for partner pages calling the
// generation API with their publishable key. The preflight carries no key,
// so it admits any well-formed origin; the request itself is checked
// against the key's origins and never carries credentials.
func (g *Gateway) partnerPreflight(c *fiber.Ctx) error {
	origin := c.Get(fiber.HeaderOrigin)
	if o, err := store.ParseOrigin(origin); err != nil || o != origin {
		return c.SendStatus(fiber.StatusNoContent)
	}
	c.Set(fiber.HeaderAccessControlAllowOrigin, origin)
	c.Set(fiber.HeaderAccessControlAllowMethods, "POST")
	c.Set(fiber.HeaderAccessControlAllowHeaders, "Content-Type, "+headerPartnerKey)
	c.Set(fiber.HeaderAccessControlMaxAge, "600")
	c.Vary(fiber.HeaderOrigin)
	return c.SendStatus(fiber.StatusNoContent)
}

// selfOrigin is this site's origin as browsers name it.
func (g *Gateway) selfOrigin(c *fiber.Ctx) string {
	if g.cfg.PublicURL != "" {
		if o, err := originOf(g.cfg.PublicURL); err == nil {
			return o
		}
	}
	return c.Protocol() + "://" + strings.ToLower(string(c.Request().Host()))
}

// originOf is the canonical origin of an absolute URL.
func originOf(u string) (string, error) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "", fmt.Errorf("gateway: %q is not an absolute URL", u)
	}
	host, _, _ := strings.Cut(rest, "/")
	return store.ParseOrigin(scheme + "://" + host)
}

// partnerError gives the engine's refusals their public form.
func partnerError(err error) error {
	var rl *partner.RateLimitError
	switch {
	case errors.As(err, &rl):
		return &apiError{Status: fiber.StatusTooManyRequests, Type: "rate_limit_error", Code: "partner_rate_limited",
			Msg: "the partner's request rate is exceeded; retry shortly", RetryAfter: max(1, int(rl.RetryAfter.Round(time.Second)/time.Second))}
	case errors.Is(err, partner.ErrUnknownKey):
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "invalid_partner_key", Msg: "unknown partner key"}
	case errors.Is(err, partner.ErrDisabled):
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "partner_disabled", Msg: "this partner is disabled"}
	case errors.Is(err, partner.ErrOrigin):
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "origin_not_allowed",
			Msg: "this publishable key does not work from this origin; use it from the partner's own pages, or the secret key from a server"}
	case errors.Is(err, partner.ErrBadEmbedToken):
		return &apiError{Status: fiber.StatusForbidden, Type: "permission_error", Code: "invalid_embed_token", Msg: "the widget's session expired; reload the page"}
	}
	return err
}

// respondForPartner serves a generation made for a partner: the images
// are counted to the partner's month first (429 over its quota), given
// back if the generation fails, and announced to the partner's webhook.
func (g *Gateway) respondForPartner(c *fiber.Ctx, pt store.Partner, p params) error {
	ctx := context.Background()
	if err := g.partners.Reserve(ctx, pt, p.N); err != nil {
		if errors.Is(err, partner.ErrQuota) {
			return &apiError{Status: fiber.StatusTooManyRequests, Type: "rate_limit_error", Code: "partner_quota_exceeded",
				Msg: "the partner's monthly image quota is used up", RetryAfter: secondsToNextMonth(g.now())}
		}
		return err
	}
	if err := g.respond(c, p); err != nil {
		if rerr := g.partners.Release(ctx, pt, p.N); rerr != nil {
			g.logger.Error("partner images not given back", "partner", pt.ID, "err", rerr)
		}
		return err
	}
	if pt.WebhookURL != "" {
		var resp imagesResponse
		if err := json.Unmarshal(c.Response().Body(), &resp); err == nil {
			var done partner.Completion
			for _, d := range resp.Data {
				if d.URL != "" {
					done.Images = append(done.Images, partner.Image{URL: d.URL, Seed: d.Seed})
				}
			}
			g.notifier.Notify(pt, done)
		}
	}
	return nil
}

// registerWebhookMetrics exports the partner callbacks' outcomes.
func registerWebhookMetrics(reg prometheus.Registerer, n *partner.Notifier) error {
	for result, c := range map[string]*atomic.Int64{"delivered": &n.Delivered, "failed": &n.Failed, "dropped": &n.Dropped} {
		err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "imagegate_partner_webhooks_total", Help: "Partner completion callbacks: delivered, failed after every retry, or dropped (queue full).",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(c.Load()) }))
		if err != nil {
			return err
		}
	}
	return nil
}

func secondsToNextMonth(now time.Time) int {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	return max(1, int(next.Sub(now)/time.Second))
}

// partnerJSON is a partner as the admin API shows it: never the secret
// key (only its hint); the webhook secret, which the operator must hand
// to the partner, is shown.
type partnerJSON struct {
	store.Partner
	MonthImages int                  `json:"month_images"`
	Usage       []store.PartnerUsage `json:"usage"`
	Snippet     string               `json:"snippet"`
}

// partnerUsageDays is how far back the admin API lists usage per day.
const partnerUsageDays = 30

func (g *Gateway) partnerView(c *fiber.Ctx, p store.Partner) (partnerJSON, error) {
	now := g.now()
	month, err := g.store.PartnerMonthUsage(p.ID, now)
	if err != nil {
		return partnerJSON{}, err
	}
	usage, err := g.store.PartnerUsageDays(p.ID, now.AddDate(0, 0, -partnerUsageDays+1), now)
	if err != nil {
		return partnerJSON{}, err
	}
	if usage == nil {
		usage = []store.PartnerUsage{}
	}
	return partnerJSON{Partner: p, MonthImages: month, Usage: usage, Snippet: embedSnippet(g.siteOrigin(c), p.PublishableKey)}, nil
}

// siteOrigin is the base URL the embed snippet loads embed.js from.
func (g *Gateway) siteOrigin(c *fiber.Ctx) string {
	if g.cfg.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	return g.selfOrigin(c)
}

// embedSnippet is the HTML a partner pastes into its page.
func embedSnippet(site, publishableKey string) string {
	return `<div id="imagegate"></div>` + "\n" +
		`<script src="` + site + `/embed.js" data-key="` + publishableKey + `" data-target="imagegate" async></script>`
}

type partnerCreateJSON struct {
	Name         string   `json:"name"`
	Origins      []string `json:"origins"`
	MonthlyQuota int      `json:"monthly_quota"`
	RateLimit    int      `json:"rate_limit"`
	Plan         string   `json:"plan"`
	WebhookURL   string   `json:"webhook_url"`
}

type partnerPatchJSON struct {
	Name         *string  `json:"name"`
	Origins      []string `json:"origins"`
	MonthlyQuota *int     `json:"monthly_quota"`
	RateLimit    *int     `json:"rate_limit"`
	Plan         *string  `json:"plan"`
	Disabled     *bool    `json:"disabled"`
	WebhookURL   *string  `json:"webhook_url"`
}

func (g *Gateway) partnerRoutes(admin fiber.Router) {
	admin.Get("/partners", g.adminPartners)
	admin.Post("/partners", g.adminCreatePartner)
	admin.Get("/partners/:id", g.adminPartner)
	admin.Patch("/partners/:id", g.adminUpdatePartner)
	admin.Post("/partners/:id/disable", g.adminDisablePartner)
}

func (g *Gateway) adminPartners(c *fiber.Ctx) error {
	ps, err := g.store.Partners()
	if err != nil {
		return err
	}
	out := make([]partnerJSON, 0, len(ps))
	for _, p := range ps {
		v, err := g.partnerView(c, p)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return c.JSON(fiber.Map{"partners": out})
}

func (g *Gateway) adminPartner(c *fiber.Ctx) error {
	p, err := g.store.Partner(c.Params("id"))
	if err != nil {
		return partnerStoreError(err)
	}
	v, err := g.partnerView(c, p)
	if err != nil {
		return err
	}
	return c.JSON(v)
}

func (g *Gateway) checkPlanName(name string) error {
	if _, ok := g.cfg.Plans.Plans[name]; !ok {
		return badRequest("invalid_partner", fmt.Sprintf("plan: %q is not a configured plan", name))
	}
	return nil
}

func (g *Gateway) adminCreatePartner(c *fiber.Ctx) error {
	var req partnerCreateJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Plan == "" {
		req.Plan = g.cfg.Plans.Default
	}
	if err := g.checkPlanName(req.Plan); err != nil {
		return err
	}
	p, secret, err := g.store.CreatePartner(store.NewPartner{
		Name: req.Name, Origins: req.Origins, MonthlyQuota: req.MonthlyQuota,
		RateLimit: req.RateLimit, Plan: req.Plan, WebhookURL: req.WebhookURL,
	})
	if err != nil {
		return partnerStoreError(err)
	}
	g.securityEvent(c, eventAdminPartnerCreated, "", "partner="+p.ID)
	v, err := g.partnerView(c, p)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{"partner": v, "secret_key": secret})
}

func (g *Gateway) adminUpdatePartner(c *fiber.Ctx) error {
	var req partnerPatchJSON
	if err := decodeJSON(c.Body(), &req); err != nil {
		return err
	}
	if req.Plan != nil {
		if err := g.checkPlanName(*req.Plan); err != nil {
			return err
		}
	}
	return g.changePartner(c, store.PartnerChange{
		Name: req.Name, Origins: req.Origins, MonthlyQuota: req.MonthlyQuota, RateLimit: req.RateLimit,
		Plan: req.Plan, Disabled: req.Disabled, WebhookURL: req.WebhookURL,
	})
}

func (g *Gateway) adminDisablePartner(c *fiber.Ctx) error {
	yes := true
	return g.changePartner(c, store.PartnerChange{Disabled: &yes})
}

func (g *Gateway) changePartner(c *fiber.Ctx, ch store.PartnerChange) error {
	id := c.Params("id")
	p, err := g.store.UpdatePartner(id, ch)
	if err != nil {
		return partnerStoreError(err)
	}
	g.securityEvent(c, eventAdminPartnerUpdated, "", "partner="+p.ID+" disabled="+strconv.FormatBool(p.Disabled))
	v, err := g.partnerView(c, p)
	if err != nil {
		return err
	}
	return c.JSON(v)
}

func partnerStoreError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such partner"}
	case errors.Is(err, store.ErrInvalidPartner):
		return badRequest("invalid_partner", strings.TrimPrefix(err.Error(), store.ErrInvalidPartner.Error()+": "))
	}
	return err
}
