package postgres_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
	"github.com/imagegate/imagegate/store/storetest"
)

// snapshot is everything the public API shows of a store's accounts and
// jobs, to compare a copy with its source.
type snapshot struct {
	Accounts    []store.Account
	Ledgers     [][]store.LedgerEntry
	Events      [][]store.SecurityEvent
	Consents    [][]store.Consent
	Billing     []store.Billing
	Generations [][]store.Generation
	Profiles    []store.Profile
	APIKeys     [][]store.APIKey
	Doomed      []store.DoomedObject
	Owners      [][]string
	Reports     []store.Report
	Report      store.Report
	DSARs       []store.DSAR
	Notify      []store.NotifyJob
	Erasures    []store.ErasureJob
	Analytics   []store.AnalyticsDay
	Flags       []store.BillingFlag
	Models      []store.Model
	Partners    []store.Partner
	Usage       [][]store.PartnerUsage
	Jobs        [][]store.Job
}

func takeSnapshot(t *testing.T, s storetest.Store, accounts []string, objects []string, reportID string) snapshot {
	t.Helper()
	var sn snapshot
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range accounts {
		a, err := s.Account(id)
		must(err)
		sn.Accounts = append(sn.Accounts, a)
		l, err := s.Ledger(id)
		must(err)
		sn.Ledgers = append(sn.Ledgers, l)
		ev, err := s.SecurityEvents(id)
		must(err)
		sn.Events = append(sn.Events, ev)
		cs, err := s.Consents(id)
		must(err)
		sn.Consents = append(sn.Consents, cs)
		b, err := s.Billing(id)
		must(err)
		sn.Billing = append(sn.Billing, b)
		var gens []store.Generation
		must(s.Generations(id, func(g store.Generation) error { gens = append(gens, g); return nil }))
		sn.Generations = append(sn.Generations, gens)
		p, err := s.Profile(id)
		must(err)
		sn.Profiles = append(sn.Profiles, p)
		keys, err := s.APIKeys(id)
		must(err)
		sn.APIKeys = append(sn.APIKeys, keys)
		jobs, err := s.AccountJobs(id)
		must(err)
		for i := range jobs {
			// Leases are a running process's, not carried by a copy.
			jobs[i].LeaseHolder, jobs[i].LeaseUntil = "", time.Time{}
		}
		sn.Jobs = append(sn.Jobs, jobs)
	}
	var err error
	sn.Doomed, err = s.DoomedObjects("", 100)
	must(err)
	for _, o := range objects {
		owners, err := s.ObjectOwners(o)
		must(err)
		sn.Owners = append(sn.Owners, owners)
	}
	sn.Reports, err = s.Reports()
	must(err)
	sn.Report, err = s.Report(reportID)
	must(err)
	sn.DSARs, err = s.DSARs(true)
	must(err)
	sn.Notify, err = s.UnfinishedNotifyJobs()
	must(err)
	sn.Erasures, err = s.PendingErasures()
	must(err)
	sn.Analytics, err = s.Analytics(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	must(err)
	sn.Flags, err = s.BillingFlags()
	must(err)
	sn.Models, err = s.Models()
	must(err)
	sn.Partners, err = s.Partners()
	must(err)
	for _, p := range sn.Partners {
		u, err := s.PartnerUsageDays(p.ID, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
		must(err)
		sn.Usage = append(sn.Usage, u)
	}
	return sn
}

// A populated bbolt store copied into PostgreSQL reads back the same
// through every public method, with the same key files; secrets (session,
// API key, reset link) still work; and new records on the copy never
// reuse a key slot of the old ones.
func TestCopyFromBolt(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "imagegate.db")
	src, err := store.Open(store.Config{Path: path, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var accounts []string
	for _, email := range []string{"ada@example.com", "bob@example.com", "gone@example.com"} {
		a, err := src.CreateAccount(store.NewAccount{Email: email, PasswordHash: "$argon2id$x", Plan: "free", AgeAttested: clock.Now()})
		must(err)
		accounts = append(accounts, a.ID)
	}
	ada, bob, gone := accounts[0], accounts[1], accounts[2]
	must(src.LinkGoogle(ada, "google-ada"))
	session, _, err := src.CreateSession(ada, store.SessionPolicy{Idle: time.Hour, Absolute: 24 * time.Hour})
	must(err)
	secret, _, err := src.CreateAPIKey(bob, "ci", []string{store.ScopeImagesWrite, store.ScopeAccountRead})
	must(err)
	_, err = src.SetPassword(bob, "$argon2id$changed", "", store.FlagAPIKeys) // the key stays, flagged
	must(err)
	reset, err := src.CreatePasswordReset(bob, time.Hour)
	must(err)
	_, err = src.CreateEmailVerification(ada, "ada@new.example", time.Hour)
	must(err)
	_, err = src.ApplyGrant(ada, "2026-11", 50)
	must(err)
	h, err := src.Reserve(ada, 3, "gen")
	must(err)
	_, err = src.CommitHold(h.ID)
	must(err)
	_, err = src.Reserve(ada, 2, "in flight")
	must(err)
	_, err = src.RecordConsent(store.Consent{Subject: ada, Revision: 1, Analytics: true, Source: store.ConsentBanner})
	must(err)
	must(src.LogSecurityEvent(store.SecurityEvent{Kind: "login", AccountID: ada, IP: "203.0.113.9", UserAgent: "Browser/1"}))
	_, err = src.LinkStripeCustomer(bob, "cus_bob")
	must(err)
	_, err = src.ApplyStripeEvent(store.StripeEvent{ID: "evt_1", Type: "checkout.session.completed", Created: clock.Now()},
		store.PaymentGrant{AccountID: bob, PaymentKey: "pi_1", Ref: "pi_1", Kind: store.KindPurchase, Credits: 100, MoneyMinor: 500, Currency: "usd"},
		store.SubscriptionUpdate{AccountID: bob, Full: true, DefaultPlan: "free", Subscription: store.Subscription{ID: "sub_1", Status: "active", Plan: "pro"}})
	must(err)
	_, err = src.ApplyStripeEvent(store.StripeEvent{ID: "evt_2", Type: "charge.dispute.created", Created: clock.Now()},
		store.DisputeUpdate{PaymentKey: "pi_1", DisputeID: "dp_1", Status: "needs_response", AmountMinor: 500, Currency: "usd"})
	must(err)
	shared, private, doomed := hashOf('a'), hashOf('b'), hashOf('c')
	for _, id := range []string{ada, bob} {
		_, _, err = src.RecordGeneration(id, store.Generation{Prompt: "a shared lighthouse", NegativePrompt: "fog", Model: "retro", ModelVersion: "1",
			Width: 256, Height: 256, Object: shared, Ext: "png", ContentKey: "ck-shared"}, 30*24*time.Hour)
		must(err)
	}
	_, _, err = src.RecordGeneration(ada, store.Generation{Prompt: "a private harbour", Model: "retro", ModelVersion: "1",
		Object: private, Ext: "png", ContentKey: "ck-private", Private: true}, 30*24*time.Hour)
	must(err)
	must(src.TouchAnonymousOutput(shared, "png", "retro", "1", "ck-anon", time.Hour))
	must(src.PendingObject(doomed, "png", "retro", "1", "ck-doomed", clock.Now().Add(time.Minute)))
	must(src.SetProfile(ada, store.Profile{DisplayName: "Ada L."}))
	must(src.RecordPageView(store.PageView{Path: "/", Device: store.DeviceDesktop, Country: "DE"}))
	must(src.SaveModels([]store.Model{{Name: "retro", Version: "1", Kind: "procedural"}}))
	rep, err := src.CreateReport(store.Report{Category: "csam", Source: store.ReportFromOutput, AccountID: bob, Prompt: "reported", Image: []byte("image-bytes")}, 365*24*time.Hour)
	must(err)
	_, err = src.AddDSAR(store.NewDSAR{Email: "asker@example.com", Kind: store.DSARAccess, Note: "by mail"})
	must(err)
	_, err = src.CreateNotifyJob(store.NewNotifyJob{Subject: "Notice", Template: "Hello {{email}}", Rate: 1, Accounts: []string{ada, bob}})
	must(err)
	_, err = src.BeginErasure(gone, store.ErasureByUser)
	must(err)
	// An account erased to the end: bbolt has rotated its lookup-index
	// key, which the copy must carry over.
	erased, err := src.CreateAccount(store.NewAccount{Email: "erased@example.com", PasswordHash: "$argon2id$x", Plan: "free", AgeAttested: clock.Now()})
	must(err)
	_, err = src.BeginErasure(erased.ID, store.ErasureByUser)
	must(err)
	for done := false; !done; {
		done, err = src.EraseStep(erased.ID, 10)
		must(err)
	}
	must(src.FinishErasure(erased.ID))
	partner, partnerSecret, err := src.CreatePartner(store.NewPartner{Name: "Shop", Origins: []string{"https://shop.example"},
		MonthlyQuota: 10, RateLimit: 60, Plan: "free", WebhookURL: "https://shop.example/hooks"})
	must(err)
	disabled := true
	clock.Advance(time.Second) // listed after Shop
	_, _, err = src.CreatePartner(store.NewPartner{Name: "Old", Origins: []string{"https://old.example"}, MonthlyQuota: 1, RateLimit: 1, Plan: "free"})
	must(err)
	must(src.ReservePartnerImages(partner.ID, clock.Now(), 4))
	must(src.ReservePartnerImages(partner.ID, clock.Now().Add(24*time.Hour), 2))
	partners, err := src.Partners()
	must(err)
	_, err = src.UpdatePartner(partners[1].ID, store.PartnerChange{Disabled: &disabled})
	must(err)
	// Jobs: ada's finished one under an idempotency key, bob's running
	// one with a credit hold, a visitor's unfinished and finished ones.
	adaJob, _, err := src.CreateJob(store.Job{ID: store.NewJobID(), Owner: ada, Request: []byte(`{"prompt":"ada's job"}`), IdemKey: "k-ada", RequestHash: []byte("rh")}, nil)
	must(err)
	_, err = src.UpdateJob(adaJob.ID, func(j *store.Job) error {
		j.Status, j.Runs, j.Images = store.JobSucceeded, 1, []store.JobImage{{Object: shared, Ext: "png", ContentType: "image/png", Seed: 7, Width: 256, Height: 256}}
		return nil
	})
	must(err)
	bobJob, _, err := src.CreateJob(store.Job{ID: store.NewJobID(), Owner: bob, Request: []byte(`{"prompt":"bob's job"}`), LeaseUntil: clock.Now().Add(time.Hour)}, nil)
	must(err)
	_, err = src.UpdateJob(bobJob.ID, func(j *store.Job) error {
		j.Status, j.Runs, j.Holds = store.JobRunning, 1, []string{"hold_1"}
		return nil
	})
	must(err)
	anonKey := make([]byte, 32)
	anonKey[0] = 9
	anonJob, _, err := src.CreateJob(store.Job{ID: store.NewJobID(), Request: []byte(`{"prompt":"a visitor's job"}`), TokenHash: []byte("th")}, anonKey)
	must(err)
	anonDone, _, err := src.CreateJob(store.Job{ID: store.NewJobID(), Request: []byte(`{"prompt":"a visitor's finished job"}`), TokenHash: []byte("th2")}, anonKey)
	must(err)
	_, err = src.UpdateJob(anonDone.ID, func(j *store.Job) error { j.Status = store.JobFailed; return nil })
	must(err)
	clock.Advance(2 * time.Minute)
	_, err = src.ExpireOutputs(100) // the pending output, never owned, is queued for deletion
	must(err)

	before := takeSnapshot(t, src, accounts, []string{shared, private}, rep.ID)
	if len(before.Partners) != 2 || len(before.Usage[0]) != 2 ||
		len(before.Doomed) != 1 || len(before.Events) == 0 || before.Events[0][0].IP != "203.0.113.9" {
		t.Fatalf("the source is not populated as meant: doomed %v, events %v", before.Doomed, before.Events)
	}

	pg := testpeer.StartPostgres(t)
	url := pg.NewDatabase(t)
	dst, err := postgres.Open(t.Context(), postgres.Config{URL: url, KeyPath: path, Now: clock.Now})
	must(err)
	defer dst.Close()
	copied, err := dst.CopyFromBolt(t.Context(), src)
	if err != nil {
		t.Fatal(err)
	}
	if copied.Counts["accounts"] != 3 || copied.Counts["generations"] != 3 || copied.Checksums["ledger"] == "" ||
		copied.Counts["partners"] != 2 || copied.Counts["partner_usage"] != 2 || copied.Checksums["partners"] == "" ||
		copied.Counts["jobs"] != 4 || copied.Checksums["jobs"] == "" {
		t.Errorf("copy report %+v", copied)
	}
	after := takeSnapshot(t, dst, accounts, []string{shared, private}, rep.ID)
	if diff := cmp.Diff(before, after, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("the copy reads differently (-bbolt +postgres):\n%s", diff)
	}
	if s, err := dst.ValidateSession(session); err != nil || s.AccountID != ada {
		t.Errorf("the session on the copy: %+v, %v", s, err)
	}
	if k, err := dst.ValidateAPIKey(secret); err != nil || k.AccountID != bob {
		t.Errorf("the API key on the copy: %+v, %v", k, err)
	}
	if p, err := dst.PartnerBySecret(partnerSecret); err != nil || p.ID != partner.ID {
		t.Errorf("the partner's secret key on the copy: %+v, %v", p, err)
	}
	if p, err := dst.PartnerByPublishableKey(partner.PublishableKey); err != nil || p.ID != partner.ID {
		t.Errorf("the partner's publishable key on the copy: %+v, %v", p, err)
	}
	// The month's count carries over: 6 of 10 used.
	if err := dst.ReservePartnerImages(partner.ID, clock.Now(), 5); !errors.Is(err, store.ErrPartnerQuota) {
		t.Errorf("the copy forgot the month's usage: %v", err)
	}
	if err := dst.CheckPasswordReset(reset); err != nil {
		t.Errorf("the reset link on the copy: %v", err)
	}
	if a, err := dst.AccountByGoogle("google-ada"); err != nil || a.ID != ada {
		t.Errorf("Google lookup on the copy: %v, %v", a.ID, err)
	}
	if a, err := dst.AccountByEmail("bob@example.com"); err != nil || a.ID != bob {
		t.Errorf("email lookup on the copy: %v, %v", a.ID, err)
	}
	if _, err := dst.AccountByEmail("erased@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the erased address on the copy: %v, want ErrNotFound", err)
	}
	// New records take fresh slots: the old accounts stay readable.
	c, err := dst.CreateAccount(store.NewAccount{Email: "carol@example.com", Plan: "free", AgeAttested: clock.Now()})
	must(err)
	if got, err := dst.Account(c.ID); err != nil || got.Email != "carol@example.com" {
		t.Errorf("a new account on the copy: %+v, %v", got, err)
	}
	if got, err := dst.Account(ada); err != nil || got.Email != "ada@example.com" {
		t.Errorf("an old account after a new one: %+v, %v", got, err)
	}
	// Jobs: the idempotency key still names ada's job; the visitor's token
	// still opens theirs; the unfinished ones, leases dropped, are claimed
	// at once, the visitor's with its request from the resume copy.
	if j, created, err := dst.CreateJob(store.Job{ID: store.NewJobID(), Owner: ada, Request: []byte(`{}`), IdemKey: "k-ada"}, nil); err != nil || created || j.ID != adaJob.ID {
		t.Errorf("ada's idempotency key on the copy: %s created=%v %v", j.ID, created, err)
	}
	for _, id := range []string{anonJob.ID, anonDone.ID} {
		if j, err := dst.Job(id, anonKey); err != nil || len(j.Request) == 0 {
			t.Errorf("a visitor's job on the copy: %v", err)
		}
	}
	claimed, err := dst.ClaimJobs(time.Minute)
	must(err)
	got := map[string]string{}
	for _, j := range claimed {
		got[j.ID] = string(j.Request)
	}
	if want := map[string]string{bobJob.ID: `{"prompt":"bob's job"}`, anonJob.ID: `{"prompt":"a visitor's job"}`}; !cmp.Equal(got, want) {
		t.Errorf("claimed on the copy %v, want %v", got, want)
	}
	// A second copy is refused: the database has accounts.
	if _, err := dst.CopyFromBolt(t.Context(), src); !errors.Is(err, postgres.ErrNotEmpty) {
		t.Errorf("copy into a non-empty database: %v, want ErrNotEmpty", err)
	}
}

func hashOf(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
