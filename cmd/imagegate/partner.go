package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imagegate/imagegate/store"
)

const partnerUsage = `imagegate partner — sites that embed the generator, sent to a running gateway

Usage:
  imagegate partner add --name NAME --origin https://shop.example [--origin …] --quota N --rate N [--plan free] [--webhook URL]
  imagegate partner list [--json]                 partners with this month's images and the embed snippet
  imagegate partner update --id ID [--name …] [--origin … (replaces the list)] [--quota N] [--rate N] [--plan …] [--webhook URL|""] [--enable]
  imagegate partner disable --id ID                its keys stop working at once

--quota is images per calendar month, --rate generation requests per minute.
Every command takes --gateway URL (default http://localhost:8080) and
--admin-token (or IMAGEGATE_ADMIN_TOKEN).
`

// runPartner manages partners through a running gateway's
// /v1/admin/partners, like the admin commands.
func runPartner(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "partner", partnerUsage, map[string]command{
		"add": runPartnerAdd, "list": runPartnerList, "update": runPartnerUpdate, "disable": runPartnerDisable,
	}, args, stdout, stderr)
}

// partnerAnswer is a partner as the gateway answers it.
type partnerAnswer struct {
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	Origins        []string `json:"origins"`
	MonthlyQuota   int      `json:"monthly_quota"`
	RateLimit      int      `json:"rate_limit"`
	Plan           string   `json:"plan"`
	Disabled       bool     `json:"disabled"`
	PublishableKey string   `json:"publishable_key"`
	SecretHint     string   `json:"secret_hint"`
	WebhookURL     string   `json:"webhook_url"`
	WebhookSecret  string   `json:"webhook_secret"`
	MonthImages    int      `json:"month_images"`
	Usage          []struct {
		Day    string `json:"day"`
		Images int    `json:"images"`
	} `json:"usage"`
	Snippet string `json:"snippet"`
}

// origins collects repeated --origin flags, each checked as it is given.
type origins []string

func (o *origins) String() string { return strings.Join(*o, ",") }

func (o *origins) Set(s string) error {
	for part := range strings.SplitSeq(s, ",") {
		canon, err := store.ParseOrigin(strings.TrimSpace(part))
		if err != nil {
			return err
		}
		*o = append(*o, canon)
	}
	return nil
}

func runPartnerAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("partner add", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	var req struct {
		Name         string   `json:"name"`
		Origins      []string `json:"origins"`
		MonthlyQuota int      `json:"monthly_quota"`
		RateLimit    int      `json:"rate_limit"`
		Plan         string   `json:"plan,omitempty"`
		WebhookURL   string   `json:"webhook_url,omitempty"`
	}
	var allowed origins
	fs.StringVar(&req.Name, "name", "", "the partner's name, shown to operators and in the widget")
	fs.Var(&allowed, "origin", "an origin allowed to embed the widget, scheme://host[:port] (repeat, or comma-separate)")
	fs.IntVar(&req.MonthlyQuota, "quota", 0, "images per calendar month")
	fs.IntVar(&req.RateLimit, "rate", 60, "generation requests per minute, all the partner's visitors together")
	fs.StringVar(&req.Plan, "plan", "", "plan whose limits apply (default: the default plan)")
	fs.StringVar(&req.WebhookURL, "webhook", "", "URL that receives signed completion callbacks")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	req.Origins = allowed
	if req.Name == "" || len(req.Origins) == 0 || req.MonthlyQuota <= 0 {
		return errors.New("partner add: --name, at least one --origin and --quota are required")
	}
	var out struct {
		Partner   partnerAnswer `json:"partner"`
		SecretKey string        `json:"secret_key"`
	}
	if err := a.call(ctx, http.MethodPost, "/v1/admin/partners", req, &out); err != nil {
		return fmt.Errorf("partner add: %w", err)
	}
	p := out.Partner
	fmt.Fprintf(stdout, "partner %s added (%s)\n", p.ID, p.Name)
	fmt.Fprintf(stdout, "publishable key: %s  (safe in page source; works only from %s)\n", p.PublishableKey, strings.Join(p.Origins, ", "))
	fmt.Fprintf(stdout, "secret key:      %s  (for the partner's servers; shown once, not stored)\n", out.SecretKey)
	if p.WebhookSecret != "" {
		fmt.Fprintf(stdout, "webhook secret:  %s\n", p.WebhookSecret)
	}
	fmt.Fprintf(stdout, "embed snippet:\n%s\n", p.Snippet)
	return nil
}

func runPartnerList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("partner list", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer instead of a table")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var out struct {
		Partners []partnerAnswer `json:"partners"`
	}
	raw, err := a.callRaw(ctx, http.MethodGet, "/v1/admin/partners", nil, &out)
	if err != nil {
		return fmt.Errorf("partner list: %w", err)
	}
	if *asJSON {
		return printAnswer(stdout, raw)
	}
	if len(out.Partners) == 0 {
		_, err := fmt.Fprintln(stdout, "no partners")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tNAME\tIMAGES THIS MONTH\tRATE/MIN\tPLAN\tPUBLISHABLE KEY\tORIGINS")
	for _, p := range out.Partners {
		status := "active"
		if p.Disabled {
			status = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\n", p.ID, status, strconv.Quote(p.Name),
			p.MonthImages, p.MonthlyQuota, p.RateLimit, p.Plan, p.PublishableKey, strings.Join(p.Origins, " "))
	}
	return tw.Flush()
}

func runPartnerUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("partner update", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	id := fs.String("id", "", "the partner's id")
	var allowed origins
	fs.Var(&allowed, "origin", "replace the allowed origins (repeat, or comma-separate)")
	fs.String("name", "", "new name")
	fs.Int("quota", 0, "new monthly image quota")
	fs.Int("rate", 0, "new requests per minute")
	fs.String("plan", "", "new plan")
	fs.String("webhook", "", `new webhook URL ("" removes it)`)
	enable := fs.Bool("enable", false, "enable a disabled partner")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("partner update: --id is required")
	}
	// Only the flags given are sent: the rest stay as they are.
	req := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name", "plan":
			req[f.Name] = f.Value.String()
		case "webhook":
			req["webhook_url"] = f.Value.String()
		case "quota":
			req["monthly_quota"], _ = strconv.Atoi(f.Value.String())
		case "rate":
			req["rate_limit"], _ = strconv.Atoi(f.Value.String())
		case "origin":
			req["origins"] = []string(allowed)
		}
	})
	if *enable {
		req["disabled"] = false
	}
	if len(req) == 0 {
		return errors.New("partner update: nothing to change")
	}
	var p partnerAnswer
	if err := a.call(ctx, http.MethodPatch, "/v1/admin/partners/"+url.PathEscape(*id), req, &p); err != nil {
		return fmt.Errorf("partner update: %w", err)
	}
	fmt.Fprintf(stdout, "partner %s updated: origins %s, quota %d/month, %d requests/min, plan %s, %s\n",
		p.ID, strings.Join(p.Origins, " "), p.MonthlyQuota, p.RateLimit, p.Plan, map[bool]string{true: "disabled", false: "active"}[p.Disabled])
	return nil
}

func runPartnerDisable(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("partner disable", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	id := fs.String("id", "", "the partner's id")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("partner disable: --id is required")
	}
	var p partnerAnswer
	if err := a.call(ctx, http.MethodPost, "/v1/admin/partners/"+url.PathEscape(*id)+"/disable", nil, &p); err != nil {
		return fmt.Errorf("partner disable: %w", err)
	}
	fmt.Fprintf(stdout, "partner %s disabled: its keys are refused from now on\n", p.ID)
	return nil
}
