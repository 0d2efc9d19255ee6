package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"
	"time"
)

// runAdminReports lists the reports of apparent CSAM a gateway holds
// (GET /v1/admin/reports), newest first, with the days left on each
// legal hold. With --json it prints the gateway's answer unchanged, for
// filing a report; otherwise a table for operators.
func runAdminReports(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin reports", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	asJSON := fs.Bool("json", false, "print the gateway's JSON answer (prompts, parameters, image links) instead of a table")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var answer reportsAnswer
	raw, err := a.callRaw(ctx, http.MethodGet, "/v1/admin/reports", nil, &answer)
	if err != nil {
		return fmt.Errorf("admin reports: %w", err)
	}
	if *asJSON {
		return printAnswer(stdout, raw)
	}
	return answer.print(stdout)
}

// reportsAnswer is the gateway's answer, as much as the table shows.
type reportsAnswer struct {
	Reports []struct {
		ID          string    `json:"id"`
		Created     time.Time `json:"created"`
		DaysLeft    int       `json:"days_left"`
		Category    string    `json:"category"`
		Source      string    `json:"source"`
		Account     string    `json:"account"`
		ClientIP    string    `json:"client_ip"`
		Prompt      string    `json:"prompt"`
		ImageSHA256 string    `json:"image_sha256"`
	} `json:"reports"`
}

// print writes one line per report. Prompts are quoted (Go syntax), so
// control characters in them cannot rewrite the operator's terminal.
func (a reportsAnswer) print(w io.Writer) error {
	if len(a.Reports) == 0 {
		_, err := fmt.Fprintln(w, "no reports under legal hold")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tDAYS LEFT\tCATEGORY\tSOURCE\tACCOUNT\tIMAGE\tPROMPT")
	for _, r := range a.Reports {
		who := r.Account
		if r.ClientIP != "" {
			who += " (" + r.ClientIP + ")"
		}
		img := "-"
		if r.ImageSHA256 != "" {
			img = "sha256:" + r.ImageSHA256[:min(12, len(r.ImageSHA256))]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Created.UTC().Format(time.RFC3339), r.DaysLeft,
			r.Category, r.Source, who, img, strconv.Quote(r.Prompt))
	}
	return tw.Flush()
}
