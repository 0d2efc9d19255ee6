package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

// A recipient claimed by a run that stopped before reporting back may or
// may not have received the mail: it is counted as interrupted and never
// mailed again; the job survives a reopen of the store.
func testNotifyResumesWithoutDuplicates(t *testing.T, h Harness) {
	db, clock := h.open(t)
	var ids []string
	for _, e := range []string{"r1@example.com", "r2@example.com", "r3@example.com", "r4@example.com"} {
		ids = append(ids, mustAccount(t, db, e).ID)
	}
	job, err := db.CreateNotifyJob(store.NewNotifyJob{Subject: "s", Template: "t", Rate: 1, Accounts: ids})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	first, err := db.NextNotifyRecipient(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	seen[first.Email]++
	if err := db.FinishNotifyRecipient(job.ID, first.AccountID, store.NotifySent); err != nil {
		t.Fatal(err)
	}
	crashed, err := db.NextNotifyRecipient(job.ID) // claimed, never reported
	if err != nil {
		t.Fatal(err)
	}
	db = h.reopen(t, db, clock)
	left, err := db.UnfinishedNotifyJobs()
	if err != nil || len(left) != 1 || left[0].ID != job.ID || left[0].Counts.Sending != 1 {
		t.Fatalf("unfinished after reopen: %+v, %v", left, err)
	}
	for _, e := range drainNotify(t, db, job.ID) {
		seen[e]++
	}
	if seen[crashed.Email] != 0 {
		t.Errorf("the interrupted recipient %s was claimed again", crashed.Email)
	}
	for e, n := range seen {
		if n != 1 {
			t.Errorf("%s claimed %d times", e, n)
		}
	}
	if len(seen) != 3 {
		t.Errorf("claimed %v, want the 3 not interrupted", seen)
	}
	job, _ = db.NotifyJob(job.ID)
	if diff := cmp.Diff(store.NotifyCounts{Total: 4, Sent: 3, Interrupted: 1, Skipped: map[string]int{}}, job.Counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// An erasure interrupted after its first step is found and finished by
// the next process; afterwards nothing of the account can be read, its key
// is destroyed, and another account sharing an output keeps it.
func testErasureResumesInAnotherProcess(t *testing.T, h Harness) {
	db, clock := h.open(t)
	gone := mustAccount(t, db, "erase-me@example.com")
	kept := mustAccount(t, db, "kept@example.com")
	shared, private := hash64('1'), hash64('2')
	for i := range 5 {
		if _, _, err := db.RecordGeneration(gone.ID, testGeneration(fmt.Sprintf("erase-marker %d", i), private), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	db.RecordGeneration(gone.ID, testGeneration("shared one", shared), time.Hour)
	db.RecordGeneration(kept.ID, testGeneration("shared one", shared), time.Hour)
	db.RecordConsent(store.Consent{Subject: gone.ID, Revision: 1, Analytics: true, Source: store.ConsentBanner})
	db.LogSecurityEvent(store.SecurityEvent{Kind: "login", AccountID: gone.ID, IP: "192.0.2.9"})
	db.AddCredit(gone.ID, store.Credit{Kind: store.KindPurchase, Amount: 10, Ref: "pi_1", MoneyMinor: 500, Currency: "usd"})
	db.Reserve(gone.ID, 2, "in flight")
	db.SetProfile(gone.ID, store.Profile{DisplayName: "Gone"})
	sess, _, _ := db.CreateSession(gone.ID, store.SessionPolicy{Idle: time.Hour, Absolute: time.Hour})
	key, _, _ := db.CreateAPIKey(gone.ID, "k", nil)

	job, err := db.BeginErasure(gone.ID, store.ErasureByUser)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ValidateSession(sess); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a session survived the start of the erasure: %v", err)
	}
	if _, err := db.ValidateAPIKey(key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an API key survived the start of the erasure: %v", err)
	}
	if done, err := db.EraseStep(gone.ID, 2); err != nil || done {
		t.Fatalf("first step = %v, %v", done, err)
	}
	db = h.reopen(t, db, clock)
	jobs, _ := db.PendingErasures()
	if len(jobs) != 1 || jobs[0].AccountID != gone.ID {
		t.Fatalf("pending after reopening: %+v", jobs)
	}
	for done := false; !done; {
		if done, err = db.EraseStep(gone.ID, 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.FinishErasure(gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishErasure(gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("finishing twice: %v", err)
	}
	if _, err := db.Account(gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("account after erasure: %v", err)
	}
	if _, err := db.AccountByEmail("erase-me@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the email still finds the account: %v", err)
	}
	if ev, _ := db.SecurityEvents(gone.ID); len(ev) != 0 {
		t.Errorf("security events left: %+v", ev)
	}
	if cs, _ := db.Consents(gone.ID); len(cs) != 0 {
		t.Errorf("consents left: %+v", cs)
	}
	if n := db.GenerationCount(gone.ID); n != 0 {
		t.Errorf("%d generations left", n)
	}
	if l, _ := db.Ledger(gone.ID); len(l) != 1 || l[0].Ref != "pi_1" {
		t.Errorf("the pseudonymous ledger: %+v, want the purchase kept", l)
	}
	if d := doomed(t, db); len(d) != 1 || d[0] != private {
		t.Errorf("deletion queue %v, want only the private output", d)
	}
	if ok, _ := db.ObjectReferenced(shared); !ok {
		t.Errorf("the output shared with another account lost its reference")
	}
	if _, err := h.keyring(t, db).AccountKey(job.Slot, gone.ID); !errors.Is(err, store.ErrKeyDestroyed) {
		t.Errorf("the erased account's key still exists: %v", err)
	}
	if mm, _ := db.Reconcile(false); len(mm) != 0 {
		t.Errorf("reconcile after erasure: %+v", mm)
	}
	for _, marker := range []string{"erase-me@example.com", "erase-marker", "192.0.2.9"} {
		if h.Contains(t, db, []byte(marker)) {
			t.Errorf("%q is readable after the erasure", marker)
		}
	}
}

// What one process wrote, the next reads: models, analytics, accounts.
func testDataSurvivesReopen(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "durable@example.com")
	if err := db.SaveModels([]store.Model{{Name: "retro", Version: "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordPageView(store.PageView{Path: "/", Device: store.DeviceTablet, Country: "FR"}); err != nil {
		t.Fatal(err)
	}
	db = h.reopen(t, db, clock)
	if m, err := db.Models(); err != nil || len(m) != 1 || m[0].Version != "2" {
		t.Errorf("models after reopening: %+v, %v", m, err)
	}
	got, err := db.Analytics(clock.Now(), clock.Now())
	if err != nil || len(got) != 1 || got[0].Devices[store.DeviceTablet] != 1 || got[0].Countries["FR"] != 1 {
		t.Errorf("analytics after reopening: %+v, %v", got, err)
	}
	if got, err := db.AccountByEmail("durable@example.com"); err != nil || got.ID != a.ID {
		t.Errorf("account after reopening: %+v, %v", got, err)
	}
}
