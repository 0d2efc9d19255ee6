package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const adminUsage = `imagegate admin — operator commands, sent to a running gateway

Usage:
  imagegate admin delete-account (--account ID | --email ADDRESS) [--reason admin|minor]
  imagegate admin erasures            list erasures not yet finished
  imagegate admin reports [--json]    list reports of apparent CSAM under legal hold, newest first
  imagegate admin suspensions         list suspended accounts, with when and why
  imagegate admin lift-suspension --account ID   make a suspended account active again (security-logged)
  imagegate admin dsar add --email ADDRESS --kind access|deletion|correction|objection|other [--received DATE] [--note …]
  imagegate admin dsar list [--closed] [--json]      rights requests by email, overdue first
  imagegate admin dsar close --id ID [--note …]
  imagegate admin notify --template FILE (--accounts ID,…|--accounts-file FILE|--all) [--subject …] [--rate N] [--wait]
  imagegate admin notify --status JOB

Every command takes --gateway URL (default http://localhost:8080) and
--admin-token (or IMAGEGATE_ADMIN_TOKEN).
`

// runAdmin dispatches the admin subcommands.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "admin", adminUsage, map[string]command{
		"delete-account":  runAdminDeleteAccount,
		"erasures":        runAdminErasures,
		"reports":         runAdminReports,
		"suspensions":     runAdminSuspensions,
		"lift-suspension": runAdminLiftSuspension,
		"dsar":            runAdminDSAR,
		"notify":          runAdminNotify,
	}, args, stdout, stderr)
}

// adminClient calls a gateway's /v1/admin API.
type adminClient struct {
	gateway string
	token   string
	timeout time.Duration
}

// adminFlags registers the flags every admin command shares; timeout is
// the command's default deadline.
func adminFlags(fs *flag.FlagSet, timeout time.Duration) *adminClient {
	a := &adminClient{}
	fs.StringVar(&a.gateway, "gateway", "http://localhost:8080", "a gateway of the deployment")
	fs.StringVar(&a.token, "admin-token", "", "the gateways' --admin-token")
	fs.DurationVar(&a.timeout, "timeout", timeout, "give up after this long")
	return a
}

// do sends a request with a JSON body (nil: none) and returns the answer's
// status and body. Answers other than 2xx and 502 are errors carrying the
// gateway's message.
func (a *adminClient) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	if a.token == "" {
		return 0, nil, errors.New("--admin-token (or IMAGEGATE_ADMIN_TOKEN) is required")
	}
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(a.gateway, "/")+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusBadGateway {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			return resp.StatusCode, raw, fmt.Errorf("gateway answered %d: %s", resp.StatusCode, e.Error.Message)
		}
		return resp.StatusCode, raw, fmt.Errorf("gateway answered %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
	}
	return resp.StatusCode, raw, nil
}

// call sends a request like do and decodes a successful answer into out.
func (a *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	_, err := a.callRaw(ctx, method, path, body, out)
	return err
}

// callRaw is call that also returns the answer as it came, for commands
// whose --json prints it (printAnswer).
func (a *adminClient) callRaw(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	_, raw, err := a.do(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("unexpected answer: %w", err)
	}
	return raw, nil
}

// printAnswer writes a gateway's answer to w unchanged but for the space
// around it, ending in one newline: what --json prints.
func printAnswer(w io.Writer, raw []byte) error {
	_, err := w.Write(append(bytes.TrimSpace(raw), '\n'))
	return err
}

func runAdminDeleteAccount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin delete-account", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	var req struct {
		Account string `json:"account,omitempty"`
		Email   string `json:"email,omitempty"`
		Reason  string `json:"reason,omitempty"`
	}
	fs.StringVar(&req.Account, "account", "", "account id to erase")
	fs.StringVar(&req.Email, "email", "", "or the account's email address")
	fs.StringVar(&req.Reason, "reason", "admin", "admin (e.g. a rights request) or minor (an account of someone under 18)")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if (req.Account == "") == (req.Email == "") {
		return errors.New("name exactly one of --account and --email")
	}
	var out struct{ Account string }
	if err := a.call(ctx, http.MethodPost, "/v1/admin/accounts/delete", req, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "erasing %s: it finishes in the background (and after a restart); see `imagegate admin erasures`\n", out.Account)
	return nil
}

func runAdminErasures(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin erasures", flag.ContinueOnError)
	a := adminFlags(fs, time.Minute)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	var out struct {
		Data []struct {
			Account, Reason string
			Started         time.Time
		}
	}
	if err := a.call(ctx, http.MethodGet, "/v1/admin/accounts/erasures", nil, &out); err != nil {
		return err
	}
	if len(out.Data) == 0 {
		fmt.Fprintln(stdout, "no erasure in progress")
	}
	for _, j := range out.Data {
		fmt.Fprintf(stdout, "%s  %-6s  started %s\n", j.Account, j.Reason, j.Started.Format(time.RFC3339))
	}
	return nil
}
