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
	"strconv"
	"time"

	"github.com/imagegate/imagegate/edge"
)

const statsUsage = `imagegate stats — model-improvement statistics

Usage:
  imagegate stats export [--out FILE] [--k 10]

Writes aggregated, anonymized generation statistics as JSON (schema
imagegate.stats.v1): per month, model version, size and style, the
number of accounts and generations, cache-hit and edit rates, latency
percentiles and steps/guidance distributions. Every group comes from at
least k accounts (k >= 10); accounts that opted out of model
improvement, suspended, erased or being erased contribute nothing; no
prompt, image, account id or time finer than a month is included.
`

// minStatsK mirrors store.MinStatsK, so a too small k is refused before
// anything is asked of the gateway.
const minStatsK = 10

// runStats dispatches the stats subcommands (promise C5).
func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		fmt.Fprint(stderr, statsUsage)
		if len(args) == 0 {
			return errors.New("stats: name a command: export")
		}
		return fmt.Errorf("stats: unknown command %q", args[0])
	}
	fs := flag.NewFlagSet("stats export", flag.ContinueOnError)
	a := adminFlags(fs, 10*time.Minute)
	out := fs.String("out", "", "write the JSON to this file (default: standard output)")
	k := fs.Int("k", minStatsK, fmt.Sprintf("minimum number of distinct accounts behind every group (at least %d)", minStatsK))
	if err := parseFlags(fs, args[1:], stderr); err != nil {
		return err
	}
	if *k < minStatsK {
		return fmt.Errorf("stats export: --k must be at least %d: smaller groups could single people out", minStatsK)
	}
	_, raw, err := a.do(ctx, http.MethodGet, "/v1/admin/stats?k="+strconv.Itoa(*k), nil)
	if err != nil {
		return fmt.Errorf("stats export: %w", err)
	}
	var summary struct {
		Schema string            `json:"schema"`
		K      int               `json:"k"`
		Groups []json.RawMessage `json:"groups"`
	}
	if err := json.Unmarshal(raw, &summary); err != nil || summary.Schema == "" {
		return fmt.Errorf("stats export: unexpected answer: %.200s", raw)
	}
	if summary.K < *k {
		return fmt.Errorf("stats export: the gateway used k=%d, asked for %d", summary.K, *k)
	}
	var doc bytes.Buffer
	if err := json.Indent(&doc, raw, "", "  "); err != nil {
		return err
	}
	doc.WriteByte('\n')
	if *out == "" {
		_, err := stdout.Write(doc.Bytes())
		return err
	}
	// Written atomically: a reader never sees half an export.
	if err := edge.WriteFile(*out, doc.Bytes(), 0o600); err != nil {
		return fmt.Errorf("stats export: %w", err)
	}
	fmt.Fprintf(stderr, "wrote %d groups (k=%d) to %s\n", len(summary.Groups), summary.K, *out)
	return nil
}
