package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// maxTemplateBytes mirrors the gateway's limit on a notice's template.
const maxTemplateBytes = 64 << 10

// runAdminNotify mails an incident notice to affected accounts through a
// running gateway (promise S5):
//
//	imagegate admin notify --template FILE (--accounts ID,ID | --accounts-file FILE | --all) [--subject S] [--rate N] [--wait]
//	imagegate admin notify --status JOB [--wait]
//
// The gateway paces the mail and keeps the job's progress in its store,
// so it resumes after a restart and nobody is mailed twice. The template
// is plain text with the placeholders {{email}}, {{account_created}},
// {{date}} and {{site_url}}.
func runAdminNotify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin notify", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	var req struct {
		Subject  string   `json:"subject,omitempty"`
		Template string   `json:"template"`
		Accounts []string `json:"accounts,omitempty"`
		All      bool     `json:"all,omitempty"`
		Rate     float64  `json:"rate,omitempty"`
	}
	templateFile := fs.String("template", "", "file with the notice's plain text ({{email}}, {{account_created}}, {{date}}, {{site_url}} are filled in)")
	accountsFile := fs.String("accounts-file", "", "file with the affected account ids, one per line")
	fs.Var(listFlag{&req.Accounts}, "accounts", "affected account ids, comma-separated")
	fs.BoolVar(&req.All, "all", false, "notify every account")
	fs.StringVar(&req.Subject, "subject", "", `the subject (default "Security notice about your account")`)
	fs.Float64Var(&req.Rate, "rate", 10, "messages per second at most")
	status := fs.String("status", "", "show the progress of a job instead of starting one")
	wait := fs.Bool("wait", false, "follow the job until it is done")
	every := fs.Duration("poll", 2*time.Second, "with --wait, how often to ask for progress")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	id := *status
	if id == "" {
		if *templateFile == "" {
			return errors.New("admin notify: --template FILE is required (or --status JOB)")
		}
		text, err := readLimited(*templateFile, maxTemplateBytes)
		if err != nil {
			return fmt.Errorf("admin notify: template: %w", err)
		}
		req.Template = text
		if *accountsFile != "" {
			ids, err := readIDs(*accountsFile)
			if err != nil {
				return fmt.Errorf("admin notify: accounts file: %w", err)
			}
			req.Accounts = append(req.Accounts, ids...)
		}
		if req.All == (len(req.Accounts) > 0) {
			return errors.New("admin notify: name the recipients: --accounts, --accounts-file or --all")
		}
		var j notifyAnswer
		if err := a.call(ctx, http.MethodPost, "/v1/admin/notify", req, &j); err != nil {
			return fmt.Errorf("admin notify: %w", err)
		}
		id = j.ID
		fmt.Fprintf(stdout, "%s started at %g messages per second; follow it with: imagegate admin notify --status %s --wait\n", id, j.Rate, id)
		if !*wait {
			return nil
		}
	}
	for {
		var j notifyAnswer
		if err := a.call(ctx, http.MethodGet, "/v1/admin/notify/"+url.PathEscape(id), nil, &j); err != nil {
			return fmt.Errorf("admin notify: %w", err)
		}
		j.print(stdout)
		if !*wait || j.State == "done" {
			return nil
		}
		t := time.NewTimer(*every)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// notifyAnswer is a job's progress as the gateway answers it.
type notifyAnswer struct {
	ID     string  `json:"id"`
	State  string  `json:"state"`
	Rate   float64 `json:"rate"`
	Counts struct {
		Total       int            `json:"total"`
		Pending     int            `json:"pending"`
		Sent        int            `json:"sent"`
		Skipped     map[string]int `json:"skipped"`
		Failed      int            `json:"failed"`
		Interrupted int            `json:"interrupted"`
	} `json:"counts"`
}

func (j notifyAnswer) print(w io.Writer) {
	c := j.Counts
	line := fmt.Sprintf("%s  %s  %d recipients: %d sent, %d pending, %d failed, %d interrupted", j.ID, j.State, c.Total, c.Sent, c.Pending, c.Failed, c.Interrupted)
	reasons := make([]string, 0, len(c.Skipped))
	for r := range c.Skipped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		line += fmt.Sprintf(", %d skipped (%s)", c.Skipped[r], r)
	}
	fmt.Fprintln(w, line)
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", err
	}
	if int64(len(b)) > limit {
		return "", fmt.Errorf("larger than %d bytes", limit)
	}
	return string(b), nil
}

// readIDs reads one id per line, skipping blank lines and # comments.
func readIDs(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			ids = append(ids, line)
		}
	}
	return ids, sc.Err()
}
