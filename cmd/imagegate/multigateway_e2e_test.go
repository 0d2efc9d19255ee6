package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
)

// startAll starts every command before waiting for any, so the gateways
// open the database (and race on its migrations) at the same time.
func startAll(t *testing.T, cmds []*exec.Cmd) []*proc {
	t.Helper()
	procs := make([]*proc, len(cmds))
	outs := make([]io.Reader, len(cmds))
	for i, cmd := range cmds {
		p := &proc{cmd: cmd, stderr: &testpeer.Buffer{}}
		cmd.Stderr = p.stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		procs[i], outs[i] = p, out
	}
	for i, p := range procs {
		sc := bufio.NewScanner(outs[i])
		for sc.Scan() {
			if _, u, ok := strings.Cut(sc.Text(), "listening on "); ok {
				p.url = strings.TrimSpace(u)
				go io.Copy(io.Discard, outs[i])
				break
			}
		}
		if p.url == "" {
			t.Fatalf("%v exited before listening:\n%s", p.cmd.Args, p.logs())
		}
	}
	return procs
}

// send is one JSON request through the jar, returning status and body.
func (j *jarClient) send(t *testing.T, method, u, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := j.c.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// TestThreeGatewaysOnOnePostgres runs three gateway processes on one
// PostgreSQL database, sharing key files and nothing else (each has its
// own data directory, caches and object store), and checks what a fleet
// must get right: a session made on one is valid on the others and its
// sign-out ends it everywhere at once; a balance spent through all three
// at once never goes below zero and ends exact; an erasure cut off by
// SIGKILL on one is finished by another.
func TestThreeGatewaysOnOnePostgres(t *testing.T) {
	t.Parallel()
	const (
		admin    = "admin-token-fleet-0123456789"
		password = "a long enough passphrase"
	)
	pg := testpeer.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	keyDir := t.TempDir()

	// Gateway 0 mails through a server that accepts and never answers, so
	// an erasure started there stops at its last step, the mail.
	smtp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer smtp.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := smtp.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never greeted
		}
	}()
	var dirs []string
	var cmds []*exec.Cmd
	for i := range 3 {
		dir := t.TempDir()
		dirs = append(dirs, dir)
		args := []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--key-dir", keyDir, "--admin-token", admin,
			"--rate-limits", "off", "--lifecycle-interval", "200ms"}
		if i == 0 {
			args = append(args, "--smtp-url", "smtp://"+smtp.Addr().String(), "--mail-from", "Site <no-reply@example.com>")
		}
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn", "IMAGEGATE_DATABASE_URL="+dbURL)
		cmds = append(cmds, cmd)
	}
	gws := startAll(t, cmds)
	for _, g := range gws {
		waitReady(t, g.url)
	}
	// The test's own view of the database, as a fourth client.
	db, err := postgres.Open(t.Context(), postgres.Config{URL: dbURL, KeyPath: filepath.Join(keyDir, "imagegate.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	t.Run("sessions are shared and sign-out is immediate everywhere", func(t *testing.T) {
		u := newJarClient(t) // one cookie for 127.0.0.1, whatever the port
		u.expect(t, "POST", gws[0].url+"/v1/auth/signup", `{"email":"fleet-session@example.com","password":"`+password+`","over_18":true}`, 202)
		u.expect(t, "POST", gws[1].url+"/v1/auth/login", `{"email":"fleet-session@example.com","password":"`+password+`"}`, 200)
		for _, g := range gws {
			u.expect(t, "GET", g.url+"/v1/account", "", 200)
		}
		u.expect(t, "POST", gws[2].url+"/v1/auth/logout", "", 204)
		for _, g := range gws {
			if code, body := u.send(t, "GET", g.url+"/v1/account", ""); code != 401 {
				t.Errorf("%s after sign-out on another gateway: %d %s, want 401", g.url, code, body)
			}
		}
	})

	t.Run("credits spent through three gateways at once end exact", func(t *testing.T) {
		u := newJarClient(t)
		u.expect(t, "POST", gws[0].url+"/v1/auth/signup", `{"email":"fleet-credits@example.com","password":"`+password+`","over_18":true}`, 202)
		u.expect(t, "POST", gws[0].url+"/v1/auth/login", `{"email":"fleet-credits@example.com","password":"`+password+`"}`, 200)
		// The free plan grants 50 credits; a 256 px miss costs 1. Sixty
		// distinct prompts (all misses) race through the three gateways.
		const requests = 60
		codes := make([]int, requests)
		var wg sync.WaitGroup
		for i := range requests {
			wg.Go(func() {
				body := fmt.Sprintf(`{"prompt":"a fleet race number %d","size":"256x256"}`, i)
				codes[i], _ = u.send(t, "POST", gws[i%3].url+"/v1/images/generations", body)
			})
		}
		wg.Wait()
		count := map[int]int{}
		for _, c := range codes {
			count[c]++
		}
		if count[200] != 50 || count[402] != 10 || len(count) != 2 {
			t.Errorf("statuses %v; want 50×200 and 10×402", count)
		}
		for _, g := range gws {
			raw := u.expect(t, "GET", g.url+"/v1/account", "", 200)
			var a struct{ Credits int64 }
			if err := json.Unmarshal(raw, &a); err != nil || a.Credits != 0 {
				t.Errorf("%s says credits %d (%v), want 0", g.url, a.Credits, err)
			}
		}
		acct, err := db.AccountByEmail("fleet-credits@example.com")
		if err != nil {
			t.Fatal(err)
		}
		entries, err := db.Ledger(acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		charges := 0
		for _, e := range entries {
			sum += e.Amount
			if e.Kind == store.KindCharge {
				charges++
			}
		}
		if sum != 0 || charges != count[200] || acct.Credits != 0 || acct.Held != 0 {
			t.Errorf("ledger sums to %d with %d charges; account credits %d held %d; want 0, %d, 0, 0",
				sum, charges, acct.Credits, acct.Held, count[200])
		}
		if mm, err := db.Reconcile(false); err != nil || len(mm) != 0 {
			t.Errorf("Reconcile = %+v, %v", mm, err)
		}
		// The operator's check runs beside the live gateways.
		out, err := exec.Command(binary, "billing", "reconcile", "--database-url", dbURL, "--key-dir", keyDir).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ok: every balance equals its ledger") {
			t.Errorf("billing reconcile on PostgreSQL: %v\n%s", err, out)
		}
	})

	t.Run("an erasure cut off by SIGKILL is finished by another gateway", func(t *testing.T) {
		const email = "fleet-erased@example.com"
		u := newJarClient(t)
		u.expect(t, "POST", gws[0].url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
		u.expect(t, "POST", gws[0].url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
		u.expect(t, "POST", gws[0].url+"/v1/images/generations", `{"prompt":"a fleet lighthouse nobody else asked for","size":"256x256","private":true}`, 200)
		acct, err := db.AccountByEmail(email)
		if err != nil {
			t.Fatal(err)
		}
		pollUntil(t, "the generation recorded", func() bool { return db.GenerationCount(acct.ID) == 1 })
		u.expect(t, "DELETE", gws[0].url+"/v1/account", `{"password":"`+password+`"}`, 202)
		select {
		case c := <-accepted:
			defer c.Close()
		case <-time.After(60 * time.Second):
			t.Fatalf("the erasure never reached its confirmation mail:\n%s", gws[0].logs())
		}
		if err := gws[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		gws[0].cmd.Wait()

		// Gateways 1 and 2 find the job in the database on their next
		// pass; one of them finishes it and mails the confirmation.
		waitErasuresDone(t, db, gws[1], gws[2])
		if !outboxHas(t, dirs[1], email, "Your account has been deleted") && !outboxHas(t, dirs[2], email, "Your account has been deleted") {
			t.Errorf("no gateway mailed the deletion confirmation")
		}
		if _, err := db.AccountByEmail(email); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the account is still findable: %v", err)
		}
		if n := db.GenerationCount(acct.ID); n != 0 {
			t.Errorf("%d generations survived the erasure", n)
		}
		for _, g := range gws[1:] {
			if code, _ := newJarClient(t).send(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`); code != 401 {
				t.Errorf("login on %s after the erasure: %d, want 401", g.url, code)
			}
		}
	})
}

// TestStoreCopyMovesADeployment moves a single-node deployment to
// PostgreSQL with `imagegate store copy` and checks that a gateway on the
// database knows the account: its password, its credits and its history
// (whose prompt was sealed in bbolt and still opens).
func TestStoreCopyMovesADeployment(t *testing.T) {
	t.Parallel()
	const (
		email    = "moved@example.com"
		password = "a long enough passphrase"
		prompt   = "a lighthouse that moved house"
	)
	dir := t.TempDir()
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", dir)
	waitReady(t, g.url)
	u := newJarClient(t)
	u.expect(t, "POST", g.url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
	u.expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
	u.expect(t, "POST", g.url+"/v1/images/generations", `{"prompt":"`+prompt+`","size":"256x256"}`, 200)
	before := u.expect(t, "GET", g.url+"/v1/account", "", 200)
	stop(t, g)

	pg := testpeer.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	out, err := exec.Command(binary, "store", "copy", "--from", "bolt:"+dir, "--to", dbURL).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok: copied and verified") {
		t.Fatalf("store copy: %v\n%s", err, out)
	}
	if again, err := exec.Command(binary, "store", "copy", "--from", "bolt:"+dir, "--to", dbURL).CombinedOutput(); err == nil {
		t.Errorf("a second copy into the same database succeeded:\n%s", again)
	}

	g = start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--key-dir", dir, "--database-url", dbURL)
	waitReady(t, g.url)
	u = newJarClient(t)
	u.expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
	after := u.expect(t, "GET", g.url+"/v1/account", "", 200)
	var a, b map[string]any
	json.Unmarshal(before, &a)
	json.Unmarshal(after, &b)
	if a["id"] == nil || a["id"] != b["id"] || a["credits"] != b["credits"] || a["email"] != b["email"] {
		t.Errorf("account before the move %v, after %v", a, b)
	}
	hist := u.expect(t, "GET", g.url+"/v1/account/generations", "", 200)
	if !strings.Contains(string(hist), prompt) {
		t.Errorf("the history on PostgreSQL lacks the moved generation's prompt: %s", hist)
	}
}

// TestCacheHitsNeedNoDatabase stops PostgreSQL under a running gateway: a
// cache hit is still served, since it never waits on the database, while a
// miss (which records its output's owner before answering) is not.
func TestCacheHitsNeedNoDatabase(t *testing.T) {
	t.Parallel()
	pg := testpeer.StartPostgres(t)
	g := start(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", pg.NewDatabase(t))
	waitReady(t, g.url)
	const body = `{"prompt":"a lighthouse served without a database","size":"256x256"}`
	resp, first := generate(t, g.url, body)
	if resp.StatusCode != 200 {
		t.Fatalf("miss with the database up: %d %v", resp.StatusCode, first)
	}
	pg.Stop(t)
	resp, again := generate(t, g.url, body)
	path := func(u string) string { p, _, _ := strings.Cut(u, "?"); return p }
	if resp.StatusCode != 200 || path(firstURL(t, again)) != path(firstURL(t, first)) {
		t.Errorf("hit with the database down: %d %v, want 200 and the same output", resp.StatusCode, again)
	}
	if resp, out := generate(t, g.url, `{"prompt":"a harbour nobody asked for yet","size":"256x256"}`); resp.StatusCode == 200 {
		t.Errorf("a miss succeeded with the database down (%v): the test would not see a hit touching it", out)
	}
}

// TestObjectGCWithThreeGateways runs three gateways on one PostgreSQL and
// one S3 bucket. An output two accounts made through different gateways
// survives one owner deleting it through a third, because the reference
// count is the database's, not a gateway's; once the last owner deletes
// it, a gateway's lifecycle pass removes it from the bucket and the
// deletion queue.
func TestObjectGCWithThreeGateways(t *testing.T) {
	t.Parallel()
	const password = "a long enough passphrase"
	s3 := testpeer.Versitygw(t)
	bucket := s3.NewBucket(t)
	pg := testpeer.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	keyDir := t.TempDir()
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.Command(binary, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--key-dir", keyDir,
			"--database-url", dbURL, "--rate-limits", "off", "--lifecycle-interval", "200ms",
			"--signing-key", "a-signing-key-shared-by-the-fleet-0123456789",
			"--s3-endpoint", s3.Endpoint, "--s3-bucket", bucket, "--s3-access-key-id", s3.AccessKey,
			"--s3-secret-access-key", s3.SecretKey, "--s3-region", s3.Region)
		cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn")
		cmds = append(cmds, cmd)
	}
	gws := startAll(t, cmds)
	for _, g := range gws {
		waitReady(t, g.url)
	}
	db, err := postgres.Open(t.Context(), postgres.Config{URL: dbURL, KeyPath: filepath.Join(keyDir, "imagegate.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	inBucket := func(name string) bool {
		t.Helper()
		found := false
		filepath.WalkDir(filepath.Join(s3.Dir, bucket), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == name {
				found = true
			}
			return nil
		})
		return found
	}
	type owner struct {
		jar *jarClient
		id  string
	}
	signUp := func(email string, g *proc) owner {
		u := newJarClient(t)
		u.expect(t, "POST", g.url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
		u.expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
		a, err := db.AccountByEmail(email)
		if err != nil {
			t.Fatal(err)
		}
		return owner{u, a.ID}
	}
	generation := func(o owner, g *proc, prompt string) (name, genID string) {
		raw := o.jar.expect(t, "POST", g.url+"/v1/images/generations", `{"prompt":"`+prompt+`","size":"256x256"}`, 200)
		var out struct {
			Data []struct{ URL string } `json:"data"`
		}
		if err := json.Unmarshal(raw, &out); err != nil || len(out.Data) != 1 {
			t.Fatalf("generation: %v %s", err, raw)
		}
		p, _, _ := strings.Cut(out.Data[0].URL, "?")
		// A generation is recorded in the history off the request path.
		deadline := time.Now().Add(60 * time.Second)
		for genID == "" {
			if err := db.Generations(o.id, func(gen store.Generation) error {
				if strings.Contains(p, gen.Object) {
					genID = gen.ID
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if genID == "" && time.Now().After(deadline) {
				t.Fatalf("no generation of %s in the history", p)
			}
			if genID == "" {
				time.Sleep(20 * time.Millisecond) // polling the history writer
			}
		}
		return filepath.Base(p), genID
	}
	waitGone := func(name string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for inBucket(name) {
			if time.Now().After(deadline) {
				t.Fatalf("%s is still in the bucket", name)
			}
			time.Sleep(20 * time.Millisecond) // polling the gateways' lifecycle passes
		}
	}

	alice, bob, carol := signUp("alice@example.com", gws[0]), signUp("bob@example.com", gws[1]), signUp("carol@example.com", gws[2])
	shared, aliceGen := generation(alice, gws[0], "a lighthouse two people asked for")
	sharedAgain, bobGen := generation(bob, gws[1], "a lighthouse two people asked for")
	if shared != sharedAgain || !inBucket(shared) {
		t.Fatalf("the two accounts' outputs are %s and %s (in the bucket: %v), want one shared output", shared, sharedAgain, inBucket(shared))
	}
	alice.jar.expect(t, "DELETE", gws[2].url+"/v1/account/generations/"+aliceGen, "", 204)
	// A lifecycle pass after Alice's deletion provably ran once Carol's
	// own deleted output is gone from the bucket.
	own, carolGen := generation(carol, gws[2], "a harbour only carol asked for")
	carol.jar.expect(t, "DELETE", gws[0].url+"/v1/account/generations/"+carolGen, "", 204)
	waitGone(own)
	if !inBucket(shared) {
		t.Fatalf("the output Bob still has was deleted when Alice deleted hers")
	}
	if owners, err := db.ObjectOwners(strings.TrimSuffix(shared, filepath.Ext(shared))); err != nil || len(owners) != 1 || owners[0] != bob.id {
		t.Errorf("owners of the shared output = %v, %v; want Bob alone", owners, err)
	}
	bob.jar.expect(t, "DELETE", gws[2].url+"/v1/account/generations/"+bobGen, "", 204)
	waitGone(shared)
	deadline := time.Now().Add(60 * time.Second)
	for {
		queued, err := db.DoomedObjects("", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(queued) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still queued for deletion: %+v", queued)
		}
		time.Sleep(20 * time.Millisecond) // polling the lifecycle pass that removes the queue entry
	}
}

// TestJobMovesToAnotherGatewayWhenItsGatewayDies: two gateways on one
// PostgreSQL. A job submitted to A is visible on B at once, and the same
// Idempotency-Key sent to B returns it; A is killed with SIGKILL mid-job,
// and once its lease lapses B takes the job over, gives back the credits
// A's run held, runs it to its end, and the client polling B gets the
// image, charged once.
func TestJobMovesToAnotherGatewayWhenItsGatewayDies(t *testing.T) {
	t.Parallel()
	const (
		email    = "job-moves@example.com"
		password = "a long enough passphrase"
	)
	pg := testpeer.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	keyDir := t.TempDir()
	tier := start(t, "inference", "--addr", "127.0.0.1:0")
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command(binary, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--key-dir", keyDir,
			"--inference", tier.url, "--rate-limits", "off", "--job-lease", "2s")
		cmd.Env = append(os.Environ(), "IMAGEGATE_LOG_LEVEL=warn", "IMAGEGATE_DATABASE_URL="+dbURL)
		cmds = append(cmds, cmd)
	}
	gws := startAll(t, cmds)
	a, b := gws[0], gws[1]
	waitReady(t, a.url)
	waitReady(t, b.url)
	user := newJarClient(t)
	user.expect(t, "POST", a.url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
	user.expect(t, "POST", a.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)
	initial := accountCredits(t, user, b.url)

	// The tier is frozen, so the job cannot finish on A before the kill.
	thaw := freeze(t, tier)
	const body = `{"prompt":"a job that outlives its gateway","size":"256x256"}`
	user.header = map[string][]string{"Prefer": {"respond-async"}, "Idempotency-Key": {"move-me-1"}}
	raw := user.expect(t, "POST", a.url+"/v1/images/generations", body, 202)
	var job struct {
		ID     string `json:"id"`
		Result struct {
			Data []struct{ URL string } `json:"data"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &job); err != nil || job.ID == "" {
		t.Fatalf("job: %v %s", err, raw)
	}
	// A retry of the same POST through the other gateway is the same job.
	raw = user.expect(t, "POST", b.url+"/v1/images/generations", body, 202)
	var again struct{ ID string }
	if err := json.Unmarshal(raw, &again); err != nil || again.ID != job.ID {
		t.Errorf("the retried POST on B made job %q, want %q", again.ID, job.ID)
	}
	user.header = nil
	waitJob(t, user, b.url, job.ID, "running")
	waitCredits(t, user, b.url, initial-1) // one held by A's run
	// A's run recorded its hold's ID on the job before taking the hold,
	// so with the credits held the ID is there already.
	db, err := postgres.Open(t.Context(), postgres.Config{URL: dbURL, KeyPath: filepath.Join(keyDir, "imagegate.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if j, err := db.Job(job.ID, nil); err != nil || len(j.Holds) != 1 {
		t.Errorf("A's job with its credits held records holds %v (%v), want the one", j.Holds, err)
	}

	a.cmd.Process.Kill()
	a.cmd.Wait()
	thaw()

	raw = waitJob(t, user, b.url, job.ID, "succeeded")
	if err := json.Unmarshal(raw, &job); err != nil || len(job.Result.Data) != 1 {
		t.Fatalf("finished job: %v %s", err, raw)
	}
	resp, err := client.Get(job.Result.Data[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the job's image on B: %d", resp.StatusCode)
	}
	if after := accountCredits(t, user, b.url); after != initial-1 {
		t.Errorf("credits %d after B finished the job, want %d: A's hold given back, the image charged once", after, initial-1)
	}
	stored, err := db.Job(job.ID, nil)
	if err != nil || stored.Runs != 2 || len(stored.Holds) != 0 {
		t.Errorf("stored job: runs %d holds %v (%v); want 2 runs (A's, B's) and no hold left", stored.Runs, stored.Holds, err)
	}
}

// pollUntil polls cond until it holds, failing after a generous bound.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitErasuresDone polls the database until no erasure is pending (the
// gateways' lifecycle passes finish them); on a timeout the logs of gws
// go with the failure.
func waitErasuresDone(t *testing.T, db *postgres.DB, gws ...*proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		jobs, err := db.PendingErasures()
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, g := range gws {
				logs = append(logs, g.logs())
			}
			t.Fatalf("the erasure is still pending: %+v\n%s", jobs, strings.Join(logs, "\n"))
		}
		time.Sleep(20 * time.Millisecond) // polling the gateways' lifecycle passes
	}
}
