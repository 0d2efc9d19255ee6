package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/gateway/compliance"
	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// adminDo sends an operator request with the test admin token.
func (e *env) adminDo(method, path, body string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, raw := e.do(req)
	return resp.StatusCode, raw
}

func decodeAs[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return v
}

// storeFilesContain reports whether a file of the store (bbolt and key
// files) holds needle.
func storeFilesContain(t *testing.T, e *env, needle string) bool {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(e.dir, "imagegate.db*"))
	if len(matches) == 0 {
		t.Fatal("no store files")
	}
	for _, p := range matches {
		if strings.Contains(string(readFile(t, p)), needle) {
			return true
		}
	}
	return false
}

func TestAdminDSAR(t *testing.T) {
	t.Parallel()
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC))
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}, now: clock.Now})
	const marker = "dsar-requester-5d2e@example.com"

	req, _ := http.NewRequest("POST", e.url+"/v1/admin/dsar", strings.NewReader(`{"email":"x@example.com","kind":"access"}`))
	if resp, _ := e.do(req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d", resp.StatusCode)
	}
	status, raw := e.adminDo("POST", "/v1/admin/dsar", `{"email":"not an address","kind":"everything","received":"2026-11-24","note":"x"}`)
	if status != http.StatusBadRequest {
		t.Fatalf("invalid request: %d %s", status, raw)
	}
	for _, field := range []string{"email:", "kind:", "received:"} {
		if !strings.Contains(string(raw), field) {
			t.Errorf("the refusal does not name %s: %s", field, raw)
		}
	}

	add := func(body string) dsarJSON {
		t.Helper()
		status, raw := e.adminDo("POST", "/v1/admin/dsar", body)
		if status != http.StatusCreated {
			t.Fatalf("add %s: %d %s", body, status, raw)
		}
		return decodeAs[dsarJSON](t, raw)
	}
	today := add(fmt.Sprintf(`{"email":%q,"kind":"deletion","note":"by reply to the welcome mail"}`, marker))
	late := add(`{"email":"late@example.com","kind":"access","received":"2026-10-01"}`)
	soon := add(`{"email":"soon@example.com","kind":"correction","received":"2026-11-10"}`)
	if today.Deadline != "2026-12-23" || today.DaysLeft != 30 || today.Status != "open" {
		t.Errorf("today's request: %+v", today)
	}

	type row struct {
		ID, Status string
		DaysLeft   int
	}
	list := func(query string) []row {
		t.Helper()
		status, raw := e.adminDo("GET", "/v1/admin/dsar"+query, "")
		if status != http.StatusOK {
			t.Fatalf("list: %d %s", status, raw)
		}
		var out []row
		for _, r := range decodeAs[struct{ Requests []dsarJSON }](t, raw).Requests {
			out = append(out, row{r.ID, r.Status, r.DaysLeft})
		}
		return out
	}
	want := []row{{late.ID, "overdue", -23}, {soon.ID, "open", 17}, {today.ID, "open", 30}}
	if diff := cmp.Diff(want, list("")); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}

	status, raw = e.adminDo("POST", "/v1/admin/dsar/"+soon.ID+"/close", `{"note":"corrected the address"}`)
	if status != http.StatusOK || decodeAs[dsarJSON](t, raw).Status != "closed" {
		t.Fatalf("close: %d %s", status, raw)
	}
	if diff := cmp.Diff([]row{want[0], want[2]}, list("")); diff != "" {
		t.Errorf("open after closing (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]row{want[0], want[2], {soon.ID, "closed", 17}}, list("?closed=true")); diff != "" {
		t.Errorf("all after closing (-want +got):\n%s", diff)
	}
	if status, _ := e.adminDo("POST", "/v1/admin/dsar/"+soon.ID+"/close", ""); status != http.StatusConflict {
		t.Errorf("closing twice: %d", status)
	}
	if status, _ := e.adminDo("POST", "/v1/admin/dsar/dsar-404/close", ""); status != http.StatusNotFound {
		t.Errorf("closing an unknown request: %d", status)
	}

	// The operator reads the email through the API; the files and the
	// logs never hold it.
	status, raw = e.adminDo("GET", "/v1/admin/dsar", "")
	if status != http.StatusOK || !strings.Contains(string(raw), marker) {
		t.Errorf("the list does not show the requester's email: %s", raw)
	}
	if storeFilesContain(t, e, marker) {
		t.Error("the requester's email is readable in the store's files")
	}
	if strings.Contains(e.logs.String(), marker) {
		t.Error("the requester's email is in the logs")
	}

	// 90 days after closing, the email and notes are destroyed.
	clock.Advance(compliance.DSARKeepPersonal)
	later := []row{{late.ID, "overdue", -23 - 90}, {today.ID, "overdue", 30 - 90}, {soon.ID, "closed", 17 - 90}}
	if diff := cmp.Diff(later, list("?closed=true")); diff != "" {
		t.Errorf("after the retention (-want +got):\n%s", diff)
	}
	_, raw = e.adminDo("GET", "/v1/admin/dsar?closed=true", "")
	for _, r := range decodeAs[struct{ Requests []dsarJSON }](t, raw).Requests {
		if r.ID == soon.ID && (!r.Erased || r.Email != "" || r.CloseNote != "") {
			t.Errorf("closed request after the retention: %+v", r)
		}
	}
}

// notifyAccounts creates accounts with the given emails.
func notifyAccounts(t *testing.T, e *env, emails ...string) []store.Account {
	t.Helper()
	var out []store.Account
	for _, m := range emails {
		a, err := e.db.CreateAccount(store.NewAccount{Email: m, PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// waitNotifyDone polls a job's progress until it is done.
func waitNotifyDone(t *testing.T, e *env, id string) notifyJSON {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, raw := e.adminDo("GET", "/v1/admin/notify/"+id, "")
		if status != http.StatusOK {
			t.Fatalf("progress: %d %s", status, raw)
		}
		j := decodeAs[notifyJSON](t, raw)
		if j.State == string(store.NotifyDone) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not done: %+v", id, j)
		}
		time.Sleep(20 * time.Millisecond) // polling a background job's progress
	}
}

// settledMailCounts stops e's gateway, whose shutdown waits for every
// notification run and mail in flight, and then counts the outbox: nothing
// can still be on its way, so a late duplicate is counted too.
func settledMailCounts(t *testing.T, e *env, addrs ...string) map[string]int {
	t.Helper()
	e.close()
	return mailCounts(t, e, addrs...)
}

// mailCounts counts the outbox's messages to each address.
func mailCounts(t *testing.T, e *env, addrs ...string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, a := range addrs {
		out[a] = len(e.mails(a, 0))
	}
	return out
}

func TestAdminNotifyMailsEachSelectedAccountOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken, PublicURL: "https://images.example.net"}})
	emails := []string{"alpha@example.com", "bravo@example.com", "charlie@example.com", "delta@example.com", "echo@example.com", "foxtrot@example.com"}
	accts := notifyAccounts(t, e, emails...)
	if err := e.db.SetStatus(accts[2].ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.BeginErasure(accts[3].ID, store.ErasureByUser); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range accts {
		ids = append(ids, a.ID)
	}
	ids = append(ids, "acct_nobody", accts[0].ID)
	body, _ := json.Marshal(map[string]any{
		"subject": "Security incident", "rate": 500, "accounts": ids,
		"template": "Hello {{email}},\n\non {{date}} we found a problem; details at {{site_url}}/incident.\nYour account exists since {{ account_created }}.\n",
	})
	status, raw := e.adminDo("POST", "/v1/admin/notify", string(body))
	if status != http.StatusAccepted {
		t.Fatalf("start: %d %s", status, raw)
	}
	job := waitNotifyDone(t, e, decodeAs[notifyJSON](t, raw).ID)
	want := store.NotifyCounts{Total: 7, Sent: 4, Skipped: map[string]int{store.SkipSuspended: 1, store.SkipErasing: 1, store.SkipDeleted: 1}}
	if diff := cmp.Diff(want, job.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	wantMails := map[string]int{"alpha@example.com": 1, "bravo@example.com": 1, "charlie@example.com": 0, "delta@example.com": 0, "echo@example.com": 1, "foxtrot@example.com": 1}
	if diff := cmp.Diff(wantMails, mailCounts(t, e, emails...)); diff != "" {
		t.Errorf("mails (-want +got):\n%s", diff)
	}
	m := e.mails("alpha@example.com", 1)[0]
	text, _ := io.ReadAll(m.Body)
	today := time.Now().UTC().Format(time.DateOnly)
	wantText := "Hello alpha@example.com,\n\non " + today + " we found a problem; details at https://images.example.net/incident.\nYour account exists since " + accts[0].Created.UTC().Format(time.DateOnly) + ".\n"
	if got := strings.ReplaceAll(string(text), "\r\n", "\n"); got != wantText {
		t.Errorf("body:\n%s\nwant:\n%s", got, wantText)
	}
	if m.Header.Get("Subject") != "Security incident" {
		t.Errorf("subject %q", m.Header.Get("Subject"))
	}
	for _, addr := range emails {
		if strings.Contains(e.logs.String(), addr) {
			t.Errorf("%s is in the logs", addr)
		}
	}

	// --all: every active account, once more.
	status, raw = e.adminDo("POST", "/v1/admin/notify", `{"all":true,"rate":500,"template":"All of you: {{email}}"}`)
	if status != http.StatusAccepted {
		t.Fatalf("start --all: %d %s", status, raw)
	}
	job = waitNotifyDone(t, e, decodeAs[notifyJSON](t, raw).ID)
	if job.Counts.Sent != 4 || job.Counts.Total != 6 || job.Subject != defaultNotifySubject {
		t.Errorf("--all job: %+v", job)
	}
	for addr, n := range wantMails {
		wantMails[addr] = 2 * n
	}
	if diff := cmp.Diff(wantMails, mailCounts(t, e, emails...)); diff != "" {
		t.Errorf("mails after --all (-want +got):\n%s", diff)
	}
}

func TestAdminNotifyRefusesBadJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	for name, tc := range map[string]struct{ body, mention string }{
		"nobody":              {`{"template":"hi"}`, "accounts or all"},
		"both":                {`{"template":"hi","all":true,"accounts":["acct_a"]}`, "accounts or all"},
		"empty template":      {`{"template":" ","all":true}`, "template: is empty"},
		"unknown placeholder": {`{"template":"hi {{name}}","all":true}`, "unknown placeholder {{name}}"},
		"unclosed":            {`{"template":"hi {{email","all":true}`, "without a closing"},
		"rate":                {`{"template":"hi","all":true,"rate":5000}`, "rate:"},
		"negative rate":       {`{"template":"hi","all":true,"rate":-1}`, "rate:"},
		"subject line break":  {`{"template":"hi","all":true,"subject":"a\nb"}`, "subject"},
		"bad account id":      {`{"template":"hi","accounts":["a b"]}`, "account id"},
		"unknown field":       {`{"template":"hi","all":true,"bcc":"x@example.com"}`, "unknown field"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			status, raw := e.adminDo("POST", "/v1/admin/notify", tc.body)
			if status != http.StatusBadRequest || !strings.Contains(string(raw), tc.mention) {
				t.Errorf("%d %s, want 400 mentioning %q", status, raw, tc.mention)
			}
		})
	}
	if jobs, _ := e.db.UnfinishedNotifyJobs(); len(jobs) != 0 {
		t.Errorf("refused requests created jobs: %+v", jobs)
	}
	if status, _ := e.adminDo("GET", "/v1/admin/notify/notify-404", ""); status != http.StatusNotFound {
		t.Errorf("unknown job: %d", status)
	}
}

// timedMailer records the (fake) time of every send, then delivers
// through the real outbox; fail makes chosen sends fail first through a
// real mailer.
type timedMailer struct {
	mu    sync.Mutex
	clock func() time.Time
	next  mailer
	times []time.Time
	// failFirst sends go to failing (a real SMTP mailer whose server is
	// down) instead of next.
	failFirst int
	failing   mailer
	afterSend func(n int)
}

func (m *timedMailer) Send(ctx context.Context, msg mail.Message) error {
	m.mu.Lock()
	m.times = append(m.times, m.clock())
	n := len(m.times)
	fail := n <= m.failFirst
	m.mu.Unlock()
	var err error
	if fail {
		err = m.failing.Send(ctx, msg)
	} else {
		err = m.next.Send(ctx, msg)
	}
	if m.afterSend != nil {
		m.afterSend(n)
	}
	return err
}

// downSMTP is a real SMTP mailer pointed at a port that refuses connections.
func downSMTP(t *testing.T) *mail.SMTP {
	t.Helper()
	addr := testpeer.Addr(testpeer.RefusedPort(t))
	s, err := mail.NewSMTP(mail.Config{SMTPURL: "smtp://" + addr, From: "ops@example.com", Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testNotifier is the gateway's notifier with a fake clock whose wait
// moves the clock instead of sleeping, and retryAfter as its first pause
// after a mail failure (0: the gateway's).
func testNotifier(e *env, m mailer, clock *testpeer.Clock, waits *[]time.Duration, retryAfter time.Duration) *compliance.Notifier {
	cfg := e.gw.notifierConfig()
	cfg.Mailer, cfg.Clock, cfg.RetryAfter = m, clock.Now, retryAfter
	cfg.Wait = func(ctx context.Context, d time.Duration) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		*waits = append(*waits, d)
		clock.Advance(d)
		return nil
	}
	return compliance.NewNotifier(cfg)
}

// Sends are paced at the job's rate: with 4 per second, one every 250 ms
// of the (fake) clock, the first at once.
func TestNotifyIsPaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	var emails []string
	for i := range 9 {
		emails = append(emails, fmt.Sprintf("paced%d@example.org", i))
	}
	var ids []string
	for _, a := range notifyAccounts(t, e, emails...) {
		ids = append(ids, a.ID)
	}
	job, err := e.db.CreateNotifyJob(store.NewNotifyJob{Subject: "s", Template: "paced {{email}}", Rate: 4, Accounts: ids})
	if err != nil {
		t.Fatal(err)
	}
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC))
	start := clock.Now()
	m := &timedMailer{clock: clock.Now, next: e.outbox}
	var waits []time.Duration
	if err := testNotifier(e, m, clock, &waits, 0).Run(t.Context(), job.ID); err != nil {
		t.Fatal(err)
	}
	var offsets []time.Duration
	for _, at := range m.times {
		offsets = append(offsets, at.Sub(start))
	}
	var want []time.Duration
	for i := range 9 {
		want = append(want, time.Duration(i)*250*time.Millisecond)
	}
	if diff := cmp.Diff(want, offsets); diff != "" {
		t.Errorf("send times (-want +got):\n%s", diff)
	}
	for _, addr := range emails {
		if n := len(e.mails(addr, 0)); n != 1 {
			t.Errorf("%s got %d mails", addr, n)
		}
	}
}

// While the mail server is unreachable the job waits (backing off)
// instead of failing its recipients; the recipient is mailed once it is
// back.
func TestNotifyWaitsOutAnUnreachableMailServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	accts := notifyAccounts(t, e, "first@example.org", "second@example.org")
	job, err := e.db.CreateNotifyJob(store.NewNotifyJob{Subject: "s", Template: "t", Rate: 1000, Accounts: []string{accts[0].ID, accts[1].ID}})
	if err != nil {
		t.Fatal(err)
	}
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC))
	m := &timedMailer{clock: clock.Now, next: e.outbox, failFirst: 3, failing: downSMTP(t)}
	var waits []time.Duration
	n := testNotifier(e, m, clock, &waits, time.Minute)
	if err := n.Run(t.Context(), job.ID); err != nil {
		t.Fatal(err)
	}
	var backoffs []time.Duration
	for _, w := range waits {
		if w >= time.Minute {
			backoffs = append(backoffs, w)
		}
	}
	if diff := cmp.Diff([]time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute}, backoffs); diff != "" {
		t.Errorf("back-off (-want +got):\n%s", diff)
	}
	got, _ := e.db.NotifyJob(job.ID)
	if diff := cmp.Diff(store.NotifyCounts{Total: 2, Sent: 2, Skipped: map[string]int{}}, got.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"first@example.org": 1, "second@example.org": 1}, mailCounts(t, e, "first@example.org", "second@example.org")); diff != "" {
		t.Errorf("mails (-want +got):\n%s", diff)
	}
}

// A gateway that stops mid-job — killed between claiming a recipient and
// mailing it, here — resumes the job when it starts again, and nobody
// gets the notice twice; the recipient whose mail was in flight is
// reported as interrupted.
func TestNotifyResumesAfterRestartWithoutDuplicates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e1 := newEnv(t, envOptions{dir: dir, cfg: Config{AdminToken: testAdminToken}})
	var emails, ids []string
	for i := range 6 {
		emails = append(emails, fmt.Sprintf("resume%d@example.org", i))
	}
	for _, a := range notifyAccounts(t, e1, emails...) {
		ids = append(ids, a.ID)
	}
	job, err := e1.db.CreateNotifyJob(store.NewNotifyJob{Subject: "s", Template: "t {{email}}", Rate: 1000, Accounts: ids})
	if err != nil {
		t.Fatal(err)
	}
	// Two mails go out, then the run stops.
	ctx, cancel := context.WithCancel(t.Context())
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC))
	m := &timedMailer{clock: clock.Now, next: e1.outbox, afterSend: func(n int) {
		if n == 2 {
			cancel()
		}
	}}
	var waits []time.Duration
	if err := testNotifier(e1, m, clock, &waits, 0).Run(ctx, job.ID); err != context.Canceled {
		t.Fatalf("first run: %v", err)
	}
	// The crash: a recipient claimed, its mail never handed over.
	crashed, err := e1.db.NextNotifyRecipient(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	e1.close()

	e2 := newEnv(t, envOptions{dir: dir, cfg: Config{AdminToken: testAdminToken}})
	got := waitNotifyDone(t, e2, job.ID)
	if diff := cmp.Diff(store.NotifyCounts{Total: 6, Sent: 5, Interrupted: 1, Skipped: map[string]int{}}, got.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	want := map[string]int{}
	for _, addr := range emails {
		want[addr] = 1
	}
	want[crashed.Email] = 0
	if diff := cmp.Diff(want, settledMailCounts(t, e2, emails...)); diff != "" {
		t.Errorf("mails (-want +got):\n%s", diff)
	}
}

// A job started through the API survives a gateway restart at any point:
// the stopping gateway finishes the mail in flight, the next one picks up
// the rest.
func TestNotifyStartedByAPISurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e1 := newEnv(t, envOptions{dir: dir, cfg: Config{AdminToken: testAdminToken}})
	var emails, ids []string
	for i := range 8 {
		emails = append(emails, fmt.Sprintf("restart%d@example.org", i))
	}
	for _, a := range notifyAccounts(t, e1, emails...) {
		ids = append(ids, a.ID)
	}
	// At 10 a second the job takes 0.7 s: the gateway stops long before.
	body, _ := json.Marshal(map[string]any{"accounts": ids, "rate": 10, "template": "notice for {{email}}"})
	status, raw := e1.adminDo("POST", "/v1/admin/notify", string(body))
	if status != http.StatusAccepted {
		t.Fatalf("start: %d %s", status, raw)
	}
	id := decodeAs[notifyJSON](t, raw).ID
	e1.close()

	e2 := newEnv(t, envOptions{dir: dir, cfg: Config{AdminToken: testAdminToken}})
	got := waitNotifyDone(t, e2, id)
	if !strings.Contains(e2.logs.String(), "resuming notification") {
		t.Error("the second gateway did not resume the job: the first finished it alone")
	}
	if diff := cmp.Diff(store.NotifyCounts{Total: 8, Sent: 8, Skipped: map[string]int{}}, got.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	for addr, n := range settledMailCounts(t, e2, emails...) {
		if n != 1 {
			t.Errorf("%s got %d mails", addr, n)
		}
	}
}

func TestAdminStatsExport(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{AdminToken: testAdminToken}})
	const promptMarker = "prompt-marker-b7e1"
	gen := func(a store.Account, style string) {
		t.Helper()
		g := store.Generation{
			Prompt: promptMarker + a.ID, Model: "retro", ModelVersion: "1", Width: 256, Height: 256, Steps: 30, Guidance: 7,
			Style: style, Object: strings.Repeat("a", 64), Ext: "png", ContentKey: "ck-" + style + a.ID, LatencyMS: 200,
		}
		if _, _, err := e.db.RecordGeneration(a.ID, g, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for i := range 26 {
		a := notifyAccounts(t, e, fmt.Sprintf("stats%d@example.org", i))[0]
		ids = append(ids, a.ID)
		switch {
		case i < 12:
			gen(a, "synthwave")
		case i < 15:
			gen(a, "pixel") // 3 accounts: below k
		default:
			// 11 opted-out accounts: the only ones using "noir", and they
			// add to "synthwave" too.
			gen(a, "noir")
			gen(a, "synthwave")
			if err := e.db.SetSettings(a.ID, store.Settings{NoModelImprovement: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	status, raw := e.adminDo("GET", "/v1/admin/stats?k=10", "")
	if status != http.StatusOK {
		t.Fatalf("export: %d %s", status, raw)
	}
	out := decodeAs[store.StatsExport](t, raw)
	var styles []string
	for _, g := range out.Groups {
		styles = append(styles, g.Style)
		if g.Accounts < 10 {
			t.Errorf("group of %d accounts published: %+v", g.Accounts, g)
		}
	}
	if diff := cmp.Diff([]string{"synthwave"}, styles); diff != "" || out.Groups[0].Generations != 12 || out.SuppressedGroups != 1 {
		t.Errorf("groups (-want +got):\n%s\n%s", diff, raw)
	}
	for _, s := range append([]string{"noir", "pixel", promptMarker, "example.org", "acct_"}, ids...) {
		if strings.Contains(string(raw), s) {
			t.Errorf("the export mentions %q", s)
		}
	}
	for _, q := range []string{"?k=9", "?k=0", "?k=-3", "?k=ten"} {
		if status, raw := e.adminDo("GET", "/v1/admin/stats"+q, ""); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, status, raw)
		}
	}
	if resp, _ := e.get(e.url + "/v1/admin/stats"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d", resp.StatusCode)
	}
}
