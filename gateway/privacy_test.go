package gateway

import (
	"encoding/json"
	"go/parser"
	gotoken "go/token"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

// TestInferenceRequestCarriesNoIdentity checks promise X1: what crosses to
// the GPU tier is generation parameters and transient inputs, and the tier's
// code cannot reach who asked because it does not import the packages that
// know.
func TestInferenceRequestCarriesNoIdentity(t *testing.T) {
	t.Parallel()
	fields := (&inferencev1.GenerateRequest{}).ProtoReflect().Descriptor().Fields()
	var got []string
	for i := range fields.Len() {
		got = append(got, string(fields.Get(i).Name()))
	}
	slices.Sort(got)
	want := []string{"guidance", "height", "model", "negative_prompt", "output_format", "prompt", "reference_image", "scheduling", "seed", "steps", "strength", "style", "width"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GenerateRequest fields changed (-want +got); a new field must not identify the requester:\n%s", diff)
	}

	forbidden := []string{"/gateway", "/store", "/cache"}
	err := filepath.Walk("../inference", func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(gotoken.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if strings.HasPrefix(path, "github.com/imagegate/imagegate"+bad) {
					t.Errorf("%s imports %s: the inference tier must not learn who asked", p, path)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Nor through anything they import: every package the tier's code
	// links, as the go command resolves it.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the tier's imports: %v", err)
	}
	list := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./inference/...")
	list.Dir = ".."
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps ./inference/...: %v", err)
	}
	const module = "github.com/imagegate/imagegate"
	deps := map[string][]string{} // package: its imports
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	for _, need := range []string{module + "/inference", module + "/inference/retro", module + "/internal/gen/imagegate/inference/v1"} {
		if _, ok := deps[need]; !ok {
			t.Fatalf("go list -deps ./inference/... lacks %s: the listing is broken", need)
		}
	}
	for pkg := range deps {
		for _, bad := range forbidden {
			if pkg == module+bad || strings.HasPrefix(pkg, module+bad+"/") {
				var via []string
				for from, imps := range deps {
					if slices.Contains(imps, pkg) {
						via = append(via, from)
					}
				}
				slices.Sort(via)
				t.Errorf("the inference tier links %s (imported by %v): it must not learn who asked", pkg, via)
			}
		}
	}
}

// privacyConfig sets every value the privacy page renders to something no
// default has, so a page that printed a constant instead of the
// configuration would fail.
func privacyConfig() Config {
	day := 24 * time.Hour
	return Config{
		Plans: PlansConfig{Default: "free", Plans: map[string]Plan{
			planAnonymous: {MaxSize: 512, RetentionDays: 3},
			"free":        {MonthlyCredits: 5, MaxSize: 512, RetentionDays: 11},
			"studio":      {MonthlyCredits: 9, MaxSize: 1024, RetentionDays: 123},
		}},
		Retention:   RetentionSchedule{SecurityLog: 17 * day, Outbox: 5 * time.Hour, WebhookEvents: 9 * day, LegalHold: 400 * day, Backups: 13 * day},
		SessionIdle: 3 * day, SessionAbsolute: 19 * day, ResetTTL: 23 * time.Minute, VerifyTTL: 29 * time.Hour,
		AsyncJobs:            AsyncJobsConfig{Keep: 31 * time.Hour},
		CookiePolicyRevision: 7, CookiePolicyUpdated: "2031-02-03",
	}
}

// privacyWantRetention is the schedule privacyConfig must produce.
func privacyWantRetention() []retentionJSON {
	const day = 86400
	return []retentionJSON{
		{Data: "outputs:anonymous", Period: "3 days after last access", Seconds: 3 * day},
		{Data: "outputs:free", Period: "11 days after last access", Seconds: 11 * day},
		{Data: "outputs:studio", Period: "123 days after last access", Seconds: 123 * day},
		{Data: "reference_images", Period: "never stored"},
		{Data: "security_log", Period: "17 days", Seconds: 17 * day},
		{Data: "sessions_idle", Period: "3 days", Seconds: 3 * day},
		{Data: "sessions_absolute", Period: "19 days", Seconds: 19 * day},
		{Data: "password_reset_links", Period: "23 minutes", Seconds: 23 * 60},
		{Data: "verification_links", Period: "29 hours", Seconds: 29 * 3600},
		{Data: "jobs", Period: "31 hours", Seconds: 31 * 3600},
		{Data: "outbox", Period: "5 hours", Seconds: 5 * 3600},
		{Data: "webhook_events", Period: "9 days", Seconds: 9 * day},
		{Data: "legal_hold", Period: "400 days", Seconds: 400 * day},
		{Data: "backups", Period: "13 days", Seconds: 13 * day},
		{Data: "transactions", Period: "as long as accounting law requires"},
		{Data: "analytics", Period: "no time limit"},
		{Data: "analytics_cookie", Period: "30 minutes", Seconds: 30 * 60},
	}
}

// TestPrivacyPageFromConfig checks the retention half of issue 6 and
// promise R6: GET /v1/privacy and GET /privacy list exactly the configured
// periods, the cookie policy's revision and date with a link to it, and
// the page runs no script (its CSP forbids everything).
func TestPrivacyPageFromConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: privacyConfig()})

	resp, body := e.get(e.url + "/v1/privacy")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/privacy: %d %s", resp.StatusCode, body)
	}
	var got privacyJSON
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(privacyWantRetention(), got.Retention, cmpopts.IgnoreFields(retentionJSON{}, "Description")); diff != "" {
		t.Errorf("retention schedule (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(cookiePolicyRef{Revision: 7, Updated: "2031-02-03", URL: "/cookies"}, got.CookiePolicy); diff != "" {
		t.Errorf("cookie policy (-want +got):\n%s", diff)
	}
	if got.Updated != "2031-02-03" || !got.GPC || got.Changes == "" {
		t.Errorf("updated %q, gpc %v, changes %q", got.Updated, got.GPC, got.Changes)
	}
	var settings []string
	for _, o := range got.OptOuts {
		settings = append(settings, o.Setting)
	}
	if diff := cmp.Diff([]string{"product_email", "analytics", "model_improvement"}, settings); diff != "" {
		t.Errorf("opt-outs (-want +got):\n%s", diff)
	}

	resp, body = e.get(e.url + "/privacy")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /privacy: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The page is one of the website's: its only script is our own,
	// allowed by this response's nonce, and nothing comes from elsewhere.
	csp := resp.Header.Get("Content-Security-Policy")
	nonce := regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9_-]{22})' 'strict-dynamic'`).FindStringSubmatch(csp)
	if nonce == nil || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "style-src 'self';") {
		t.Errorf("CSP %q: want default-src 'none', a nonce-only script-src and style-src 'self'", csp)
	}
	page := string(body)
	lower := strings.ToLower(page)
	if nonce != nil && (strings.Count(lower, "<script") != 1 || !strings.Contains(page, `<script src="/assets/app.js?v=`) || !strings.Contains(page, `nonce="`+nonce[1]+`"`)) {
		t.Errorf("want exactly one script, /assets/app.js with the response's nonce")
	}
	for _, bad := range []string{"javascript:", "<style", "style=", "<img", "<iframe", "http://", "https://"} {
		if strings.Contains(lower, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	if h := regexp.MustCompile(`<[^>]*\son[a-z]+\s*=`).FindString(lower); h != "" {
		t.Errorf("the page has an event handler: %s", h)
	}
	for _, r := range privacyWantRetention() {
		if !strings.Contains(page, ">"+r.Period+"<") {
			t.Errorf("the page does not show %s = %q", r.Data, r.Period)
		}
	}
	for _, s := range []string{"Last updated 2031-02-03", "revision 7", `href="/cookies"`, "on the studio plan", "Sec-GPC: 1", "asked for consent again"} {
		if !strings.Contains(page, s) {
			t.Errorf("the page does not contain %q", s)
		}
	}
}

// TestPrivacyPolicyDefaults checks the rows that change shape with the
// configuration: no backups, and the defaults' periods.
func TestPrivacyPolicyDefaults(t *testing.T) {
	t.Parallel()
	g := &Gateway{}
	if err := g.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, r := range g.privacyPolicy().Retention {
		rows[r.Data] = r.Period
	}
	for data, want := range map[string]string{
		"backups": "no backups are taken", "security_log": "30 days", "outputs:free": "30 days after last access",
		"outputs:pro": "365 days after last access", "sessions_idle": "7 days", "password_reset_links": "30 minutes",
		"verification_links": "2 days", "legal_hold": "365 days",
	} {
		if rows[data] != want {
			t.Errorf("%s = %q, want %q", data, rows[data], want)
		}
	}
}

func TestFormatPeriod(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "1 day", 48 * time.Hour: "2 days", time.Hour: "1 hour", 25 * time.Hour: "25 hours",
		time.Minute: "1 minute", 90 * time.Minute: "90 minutes", 90 * time.Second: "1m30s", 0: "0s",
	} {
		if got := formatPeriod(d); got != want {
			t.Errorf("formatPeriod(%v) = %q, want %q", d, got, want)
		}
	}
}
