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
	"time"
)

// runPurge asks a running gateway to purge outputs from the CDN and from
// every gateway's caches (POST /v1/admin/purge), and prints what happened
// to each item and node. It exits non-zero unless everything succeeded.
func runPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("purge", flag.ContinueOnError)
	var req struct {
		Objects    []string `json:"objects,omitempty"`
		URLs       []string `json:"urls,omitempty"`
		Tags       []string `json:"tags,omitempty"`
		Prefixes   []string `json:"prefixes,omitempty"`
		Hosts      []string `json:"hosts,omitempty"`
		Everything bool     `json:"everything,omitempty"`
		DryRun     bool     `json:"dry_run,omitempty"`
	}
	a := adminFlags(fs, 10*time.Minute)
	fs.Var(listFlag{&req.Objects}, "object", "output hash(es) to remove everywhere (object store, every gateway, CDN); comma-separated")
	fs.Var(listFlag{&req.URLs}, "url", "URL(s) to purge from the CDN; comma-separated")
	fs.Var(listFlag{&req.Tags}, "tag", "cache tag(s) to purge (ig-o:<hash>, ig-m:<model>@<version>, ig-u:<owner>, imagegate-output); comma-separated")
	fs.Var(listFlag{&req.Prefixes}, "prefix", "URL prefix(es) host/path to purge; comma-separated")
	fs.Var(listFlag{&req.Hosts}, "host", "host name(s) to purge; comma-separated")
	fs.BoolVar(&req.Everything, "everything", false, "purge every cached output on the CDN and every gateway")
	fs.BoolVar(&req.DryRun, "dry-run", false, "show what would be purged and send nothing")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if len(req.Objects)+len(req.URLs)+len(req.Tags)+len(req.Prefixes)+len(req.Hosts) == 0 && !req.Everything {
		return errors.New("name what to purge: --object, --url, --tag, --prefix, --host or --everything")
	}
	status, raw, err := a.do(ctx, http.MethodPost, "/v1/admin/purge", req)
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	var res purgeAnswer
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("purge: gateway answered %d: %s", status, bytes.TrimSpace(raw))
	}
	res.print(stdout)
	if status != http.StatusOK {
		return errors.New("purge incomplete: see the failures above")
	}
	return nil
}

// purgeAnswer is the gateway's answer, as much as the CLI prints.
type purgeAnswer struct {
	DryRun         bool     `json:"dry_run"`
	ObjectsDeleted []string `json:"objects_deleted"`
	CDN            *struct {
		Items []struct {
			Kind, Item, Outcome, Reason string
		}
	} `json:"cdn"`
	CDNSkipped string `json:"cdn_skipped"`
	CDNError   string `json:"cdn_error"`
	Nodes      []struct {
		Node    string `json:"node"`
		OK      bool   `json:"ok"`
		Entries int    `json:"entries"`
		Error   string `json:"error"`
	} `json:"nodes"`
}

func (a purgeAnswer) print(w io.Writer) {
	if a.DryRun {
		fmt.Fprintln(w, "dry run: nothing was purged")
	}
	for _, name := range a.ObjectsDeleted {
		fmt.Fprintf(w, "object store  deleted  %s\n", name)
	}
	for _, n := range a.Nodes {
		switch {
		case a.DryRun:
			fmt.Fprintf(w, "gateway       would invalidate  %s\n", n.Node)
		case n.OK:
			fmt.Fprintf(w, "gateway       ok  %s (%d entries)\n", n.Node, n.Entries)
		default:
			fmt.Fprintf(w, "gateway       FAILED  %s: %s\n", n.Node, n.Error)
		}
	}
	if a.CDNSkipped != "" {
		fmt.Fprintf(w, "cdn           skipped: %s\n", a.CDNSkipped)
	}
	if a.CDN != nil {
		for _, it := range a.CDN.Items {
			line := fmt.Sprintf("cdn           %s  %s %s", it.Outcome, it.Kind, it.Item)
			if it.Reason != "" {
				line += ": " + it.Reason
			}
			fmt.Fprintln(w, line)
		}
	}
	if a.CDNError != "" {
		fmt.Fprintf(w, "cdn           FAILED: %s\n", a.CDNError)
	}
}
