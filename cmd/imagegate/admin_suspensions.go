package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"
	"time"
)

// runAdminSuspensions lists suspended accounts with when and why each was
// suspended (GET /v1/admin/suspensions), for review before a lift.
func runAdminSuspensions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin suspensions", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var out struct {
		Suspensions []struct {
			Account string     `json:"account"`
			Since   *time.Time `json:"since"`
			Reason  string     `json:"reason"`
		} `json:"suspensions"`
	}
	if err := a.call(ctx, http.MethodGet, "/v1/admin/suspensions", nil, &out); err != nil {
		return fmt.Errorf("admin suspensions: %w", err)
	}
	if len(out.Suspensions) == 0 {
		_, err := fmt.Fprintln(stdout, "no suspended accounts")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tSINCE\tREASON")
	for _, s := range out.Suspensions {
		since := "-" // the security log no longer holds the event
		if s.Since != nil {
			since = s.Since.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Account, since, strconv.Quote(s.Reason))
	}
	return tw.Flush()
}

// runAdminLiftSuspension makes a suspended account active again (POST
// /v1/admin/suspensions/lift); the gateway records it in the security log.
func runAdminLiftSuspension(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin lift-suspension", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	account := fs.String("account", "", "id of the suspended account (see `imagegate admin suspensions`)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if *account == "" {
		return errors.New("--account is required")
	}
	var out struct{ Account string }
	if err := a.call(ctx, http.MethodPost, "/v1/admin/suspensions/lift", map[string]string{"account": *account}, &out); err != nil {
		return fmt.Errorf("admin lift-suspension: %w", err)
	}
	_, err := fmt.Fprintf(stdout, "lifted the suspension of %s: its owner can sign in again\n", out.Account)
	return err
}
