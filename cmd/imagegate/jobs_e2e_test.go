package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSIGKILLMidJobThenRestartRunsIt kills the gateway with SIGKILL while
// an asynchronous job waits on the GPU and checks that the next start runs
// the job to its end: the queue is in the store, no job is lost. The kill
// lands at a known point: the inference tier is frozen (SIGSTOP), so the
// job cannot have finished in the first process.
func TestSIGKILLMidJobThenRestartRunsIt(t *testing.T) {
	t.Parallel()
	const (
		email    = "job-across-kill@example.com"
		password = "a long enough passphrase"
	)
	tier := start(t, "inference", "--addr", "127.0.0.1:0")
	dir := t.TempDir()
	args := []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--inference", tier.url, "--rate-limits", "off"}
	g := start(t, args...)
	waitReady(t, g.url)
	user := newJarClient(t)
	user.expect(t, "POST", g.url+"/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","over_18":true}`, 202)
	user.expect(t, "POST", g.url+"/v1/auth/login", `{"email":"`+email+`","password":"`+password+`"}`, 200)

	thaw := freeze(t, tier)
	initial := accountCredits(t, user, g.url)
	user.header = map[string][]string{"Prefer": {"respond-async"}}
	raw := user.expect(t, "POST", g.url+"/v1/images/generations", `{"prompt":"a job the kill cannot stop","size":"256x256"}`, 202)
	user.header = nil
	var job struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Result struct {
			Data []struct{ URL string } `json:"data"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &job); err != nil || job.ID == "" {
		t.Fatalf("job: %v %s", err, raw)
	}
	waitJob(t, user, g.url, job.ID, "running")
	before := initial - 1
	// 1 held by the running job. Its ID was on the job before the hold
	// existed, so the kill may land at any moment from here.
	waitCredits(t, user, g.url, before)

	g.cmd.Process.Kill()
	g.cmd.Wait()
	thaw()

	g = start(t, args...)
	waitReady(t, g.url)
	raw = waitJob(t, user, g.url, job.ID, "succeeded")
	if err := json.Unmarshal(raw, &job); err != nil || len(job.Result.Data) != 1 {
		t.Fatalf("finished job: %v %s", err, raw)
	}
	// The killed run's hold was released when the job was taken over, not
	// left until holds expire: one image, one credit.
	if after := accountCredits(t, user, g.url); after != before {
		t.Errorf("credits %d after the re-run, want %d (the killed run's hold given back, the image charged once)", after, before)
	}
	resp, err := client.Get(job.Result.Data[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if cfg, err := png.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width != 256 {
		t.Errorf("the job's image: %v %d", err, cfg.Width)
	}
}

// waitJob polls the job until it has status (a state the process reports;
// a bounded poll, not a timing assumption) and returns its JSON.
func waitJob(t *testing.T, user *jarClient, base, id, status string) []byte {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		raw := user.expect(t, "GET", base+"/v1/jobs/"+id, "", 200)
		var j struct{ Status string }
		json.Unmarshal(raw, &j)
		if j.Status == status {
			return raw
		}
		if j.Status == "failed" || j.Status == "cancelled" || time.Now().After(deadline) {
			t.Fatalf("job %s is %s, waited for %s: %s", id, j.Status, status, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitCredits polls the account's available balance until it is want
// (a hold is taken just after a job shows running).
func waitCredits(t *testing.T, user *jarClient, base string, want int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := accountCredits(t, user, base)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("credits %d, waited for %d", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// accountCredits is the account's available balance (held credits not
// counted).
func accountCredits(t *testing.T, user *jarClient, base string) int64 {
	t.Helper()
	var a struct{ Credits int64 }
	if err := json.Unmarshal(user.expect(t, "GET", base+"/v1/account", "", 200), &a); err != nil {
		t.Fatal(err)
	}
	return a.Credits
}

// TestAnonymousJobRunsAgainAfterSIGKILL: a visitor without an account
// starts a job, the gateway is killed mid-job, and the next start runs it
// to its end from the copy sealed under the job's resume key; the
// visitor's token still reads it, and nothing else does.
func TestAnonymousJobRunsAgainAfterSIGKILL(t *testing.T) {
	t.Parallel()
	tier := start(t, "inference", "--addr", "127.0.0.1:0")
	dir := t.TempDir()
	args := []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--inference", tier.url, "--rate-limits", "off"}
	g := start(t, args...)
	waitReady(t, g.url)
	thaw := freeze(t, tier)
	visitor := newJarClient(t)
	visitor.header = map[string][]string{"Prefer": {"respond-async"}}
	raw := visitor.expect(t, "POST", g.url+"/v1/images/generations", `{"prompt":"an anonymous job the kill cannot stop","size":"256x256"}`, 202)
	var job struct {
		ID     string `json:"id"`
		Token  string `json:"token"`
		Result struct {
			Data []struct{ URL string } `json:"data"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &job); err != nil || job.ID == "" || job.Token == "" {
		t.Fatalf("job: %v %s", err, raw)
	}
	visitor.header = map[string][]string{"Job-Token": {job.Token}}
	waitJob(t, visitor, g.url, job.ID, "running")

	g.cmd.Process.Kill()
	g.cmd.Wait()
	thaw()

	g = start(t, args...)
	waitReady(t, g.url)
	raw = waitJob(t, visitor, g.url, job.ID, "succeeded")
	if err := json.Unmarshal(raw, &job); err != nil || len(job.Result.Data) != 1 {
		t.Fatalf("finished job: %v %s", err, raw)
	}
	stranger := newJarClient(t)
	stranger.expect(t, "GET", g.url+"/v1/jobs/"+job.ID, "", 404)
	stranger.header = map[string][]string{"Job-Token": {"igjt_not-the-token"}}
	stranger.expect(t, "GET", g.url+"/v1/jobs/"+job.ID, "", 404)
}

// freeze stops proc (SIGSTOP) so whatever it is doing cannot finish, and
// returns thaw (SIGCONT), which is safe to call again and runs at the
// test's end if the test has not called it.
func freeze(t *testing.T, p *proc) (thaw func()) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { p.cmd.Process.Signal(syscall.SIGCONT) }) }
	t.Cleanup(thaw)
	return thaw
}
