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
	"text/tabwriter"
	"time"
)

const dsarUsage = `imagegate admin dsar — rights requests received by email, with their 30-day deadline

Usage:
  imagegate admin dsar add --email ADDRESS --kind access|deletion|correction|objection|other [--received YYYY-MM-DD] [--note TEXT]
  imagegate admin dsar list [--closed] [--json]     open requests, overdue first, then by deadline
  imagegate admin dsar close --id ID [--note TEXT]

The requester's email and the notes are kept sealed, and destroyed 90
days after a request is closed; the dates stay as the record.
`

// runAdminDSAR tracks rights requests received by email (promise R5)
// through a running gateway's /v1/admin/dsar.
func runAdminDSAR(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "admin dsar", dsarUsage, map[string]command{
		"add": runDSARAdd, "list": runDSARList, "close": runDSARClose,
	}, args, stdout, stderr)
}

// dsarAnswer is a rights request as the gateway answers it.
type dsarAnswer struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Email     string `json:"email"`
	Received  string `json:"received"`
	Deadline  string `json:"deadline"`
	DaysLeft  int    `json:"days_left"`
	Status    string `json:"status"`
	Closed    string `json:"closed"`
	Note      string `json:"note"`
	CloseNote string `json:"close_note"`
	Erased    bool   `json:"erased"`
}

func runDSARAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin dsar add", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	var req struct {
		Email    string `json:"email"`
		Kind     string `json:"kind"`
		Received string `json:"received,omitempty"`
		Note     string `json:"note,omitempty"`
	}
	fs.StringVar(&req.Email, "email", "", "the requester's email address")
	fs.StringVar(&req.Kind, "kind", "", "access, deletion, correction, objection or other")
	fs.StringVar(&req.Received, "received", "", "the day the request arrived, YYYY-MM-DD (default today)")
	fs.StringVar(&req.Note, "note", "", "a note for whoever answers it")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if req.Email == "" || req.Kind == "" {
		return errors.New("admin dsar add: --email and --kind are required")
	}
	var r dsarAnswer
	if err := a.call(ctx, http.MethodPost, "/v1/admin/dsar", req, &r); err != nil {
		return fmt.Errorf("admin dsar add: %w", err)
	}
	fmt.Fprintf(stdout, "%s recorded: %s request, answer by %s (%s)\n", r.ID, r.Kind, r.Deadline, daysLeft(r.DaysLeft))
	return nil
}

func runDSARList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin dsar list", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	closed := fs.Bool("closed", false, "list closed requests too")
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer instead of a table")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	path := "/v1/admin/dsar"
	if *closed {
		path += "?" + url.Values{"closed": {"true"}}.Encode()
	}
	var out struct {
		Requests []dsarAnswer `json:"requests"`
	}
	raw, err := a.callRaw(ctx, http.MethodGet, path, nil, &out)
	if err != nil {
		return fmt.Errorf("admin dsar list: %w", err)
	}
	if *asJSON {
		return printAnswer(stdout, raw)
	}
	if len(out.Requests) == 0 {
		_, err := fmt.Fprintln(stdout, "no open rights requests")
		return err
	}
	// Email and notes are quoted (Go syntax): they came from outside and
	// must not rewrite the operator's terminal.
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tDEADLINE\tDAYS LEFT\tRECEIVED\tKIND\tEMAIL\tNOTE")
	for _, r := range out.Requests {
		email, note := strconv.Quote(r.Email), r.Note
		if r.Erased {
			email = "(erased)"
		}
		if r.CloseNote != "" {
			note += " / closed: " + r.CloseNote
		}
		left := strconv.Itoa(r.DaysLeft)
		if r.Status == "closed" {
			left = "closed " + r.Closed
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, r.Deadline, left, r.Received, r.Kind, email, strconv.Quote(note))
	}
	return tw.Flush()
}

func runDSARClose(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin dsar close", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	id := fs.String("id", "", "the request's id (dsar-N)")
	var req struct {
		Note string `json:"note,omitempty"`
	}
	fs.StringVar(&req.Note, "note", "", "how it was answered")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("admin dsar close: --id is required")
	}
	var r dsarAnswer
	if err := a.call(ctx, http.MethodPost, "/v1/admin/dsar/"+url.PathEscape(*id)+"/close", req, &r); err != nil {
		return fmt.Errorf("admin dsar close: %w", err)
	}
	fmt.Fprintf(stdout, "%s closed on %s (deadline %s, %s)\n", r.ID, r.Closed, r.Deadline, daysLeft(r.DaysLeft))
	return nil
}

func daysLeft(n int) string {
	switch {
	case n < 0:
		return fmt.Sprintf("overdue by %d days", -n)
	case n == 1:
		return "1 day left"
	}
	return fmt.Sprintf("%d days left", n)
}
