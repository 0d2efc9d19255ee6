// Package storetest is the conformance suite every implementation of the
// account store passes: the embedded bbolt store (package store) and the
// PostgreSQL store (package store/postgres). It holds the behaviour tests;
// tests of one implementation's internals stay beside that implementation.
package storetest

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// Store is the part of the store the suite exercises.
type Store interface {
	CreateAccount(store.NewAccount) (store.Account, error)
	Account(id string) (store.Account, error)
	AccountByEmail(email string) (store.Account, error)
	AccountByGoogle(subject string) (store.Account, error)
	LinkGoogle(id, subject string) error
	SetPassword(id, hash, keep string, keys store.APIKeyAction) (store.PasswordChange, error)
	SetEmail(id, email string) error
	SetSettings(id string, s store.Settings) error
	SetStatus(id string, status store.AccountStatus) error
	UpdateSettings(accountID string, fn func(*store.Settings)) (store.Settings, bool, error)

	CreateSession(accountID string, p store.SessionPolicy) (string, store.Session, error)
	ValidateSession(token string) (store.Session, error)
	DeleteSession(token string) error
	DeleteSessions(accountID, keep string) (int, error)
	SessionCount(accountID string) int

	CreatePasswordReset(accountID string, ttl time.Duration) (string, error)
	CheckPasswordReset(token string) error
	ConsumePasswordReset(token, newHash string, keys store.APIKeyAction) (store.PasswordChange, error)
	CreateEmailVerification(accountID, newEmail string, ttl time.Duration) (string, error)
	ConfirmEmail(token string) (string, error)
	CancelEmailChange(accountID string) (bool, error)

	CreateAPIKey(accountID, name string, scopes []string) (string, store.APIKey, error)
	ValidateAPIKey(secret string) (store.APIKey, error)
	APIKeys(accountID string) ([]store.APIKey, error)
	DeleteAPIKey(accountID, keyID string) error

	AddCredit(accountID string, c store.Credit) (store.LedgerEntry, bool, error)
	ApplyGrant(accountID, period string, amount int64) (bool, error)
	Reserve(accountID string, amount int64, ref string) (store.Hold, error)
	ReserveHold(h store.Hold) (store.Hold, error)
	CommitHold(holdID string) (store.LedgerEntry, error)
	ReleaseHold(holdID string) error
	Ledger(accountID string) ([]store.LedgerEntry, error)
	Reconcile(fix bool) ([]store.Mismatch, error)
	ReleaseStaleHolds(maxAge time.Duration) (int, error)

	RecordConsent(store.Consent) (store.Consent, error)
	Consents(subject string) ([]store.Consent, error)
	LatestConsent(subject string) (store.Consent, error)

	LogSecurityEvent(store.SecurityEvent) error
	SecurityEvents(accountID string) ([]store.SecurityEvent, error)
	AllSecurityEvents(fn func(store.SecurityEvent) error) error
	SweepSecurityLog(retention time.Duration) (int, error)

	SaveModels([]store.Model) error
	Models() ([]store.Model, error)

	billingStore
	lifecycleStore
	jobStore
	partnerStore
	complianceStore
}

// lifecycleStore is generations, outputs, erasure and sweeps.
type lifecycleStore interface {
	RecordGeneration(accountID string, g store.Generation, retention time.Duration) (store.Generation, bool, error)
	TouchAnonymousOutput(hash, ext, model, version, contentKey string, retention time.Duration) error
	HoldObject(hash, ext, model, version, holdID string, until time.Time) error
	Generations(accountID string, fn func(store.Generation) error) error
	GenerationCount(accountID string) int
	DeleteGeneration(accountID, genID string) error
	ExpireOutputs(batch int) (int, error)
	DoomedObjects(after string, limit int) ([]store.DoomedObject, error)
	ObjectReferenced(hash string) (bool, error)
	PendingObject(hash, ext, model, version, contentKey string, until time.Time) error
	ObjectDeleted(hash string) error
	ObjectOwners(hash string) ([]string, error)
	BeginErasure(accountID, reason string) (store.ErasureJob, error)
	PendingErasures() ([]store.ErasureJob, error)
	EraseStep(accountID string, batch int) (bool, error)
	ErasureEmail(accountID string) (string, error)
	MarkErasureMailed(accountID string) error
	FinishErasure(accountID string) error
	Sweep(ctx context.Context, r store.Retention) (store.SweepReport, error)
	Profile(accountID string) (store.Profile, error)
	SetProfile(accountID string, p store.Profile) error
	ClaimDoomed(hash string) (bool, error)
	DoomedGone(hash string) error
	ObjectKeys(hash string) ([]string, error)
	SuspendedAccounts() ([]string, error)
	LiftSuspension(id string) error
	OpenSubscriptionCheckout(accountID string, c store.SubscriptionCheckout) (store.SubscriptionCheckout, error)
}

// complianceStore is rights requests, reports, notifications, analytics
// and statistics.
type complianceStore interface {
	AddDSAR(store.NewDSAR) (store.DSAR, error)
	DSARs(closed bool) ([]store.DSAR, error)
	DSAR(id string) (store.DSAR, error)
	CloseDSAR(id, note string) (store.DSAR, error)
	ExpireDSARs(keepPersonal, keepRecord time.Duration) (erased, deleted int, err error)
	CreateReport(r store.Report, hold time.Duration) (store.Report, error)
	Reports() ([]store.Report, error)
	Report(id string) (store.Report, error)
	SweepReports() (int, error)
	CreateNotifyJob(store.NewNotifyJob) (store.NotifyJob, error)
	NotifyJob(id string) (store.NotifyJob, error)
	UnfinishedNotifyJobs() ([]store.NotifyJob, error)
	ListNotifyRecipients(jobID string, batch int) (done bool, err error)
	NextNotifyRecipient(jobID string) (store.NotifyRecipient, error)
	FinishNotifyRecipient(jobID, accountID string, outcome store.NotifyOutcome) error
	RecordPageView(store.PageView) error
	Analytics(from, to time.Time) ([]store.AnalyticsDay, error)
	ExportStats(k int) (store.StatsExport, error)
}

// Harness is how the suite gets stores of one implementation.
type Harness struct {
	// Open returns an empty store telling time with now, and the KeyPath
	// of its key files (store.OpenKeyring). It closes the store when t
	// ends.
	Open func(t *testing.T, now func() time.Time) (s Store, keyPath string)
	// Contains reports whether needle is readable anywhere s keeps data:
	// its files or database and its key files.
	Contains func(t *testing.T, s Store, needle []byte) bool
	// Reopen closes s and opens its data again, as a restarted process
	// would (on PostgreSQL: as another gateway on the same database).
	Reopen func(t *testing.T, s Store, now func() time.Time) Store
	// Share opens s's data a second time while s stays open, as another
	// gateway on the same database would; nil when the implementation is
	// one process's alone (bbolt locks its file). It closes the store
	// when t ends.
	Share func(t *testing.T, s Store, now func() time.Time) Store

	keyPaths *sync.Map
}

// Run runs every conformance test against h's implementation.
func Run(t *testing.T, h Harness) {
	h.keyPaths = &sync.Map{}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"AccountLifecycle", testAccountLifecycle},
		{"Sessions", testSessions},
		{"SignOutIsImmediate", testSignOutIsImmediate},
		{"APIKeys", testAPIKeys},
		{"APIKeyScopes", testAPIKeyScopes},
		{"PasswordChangeRevokesOrFlagsAPIKeys", testPasswordChangeRevokesOrFlagsAPIKeys},
		{"PasswordReset", testPasswordReset},
		{"ConsentsAreAppendOnly", testConsentsAreAppendOnly},
		{"EmailVerificationAndChange", testEmailVerificationAndChange},
		{"CancelEmailChange", testCancelEmailChange},
		{"ProvingAnAddressRevokesTheSquattersCredentials", testProvingAnAddressRevokesTheSquattersCredentials},
		{"UpdateSettings", testUpdateSettings},
		{"CreditsLedger", testCreditsLedger},
		{"ConcurrentReservationsNeverOverspend", testConcurrentReservationsNeverOverspend},
		{"ConcurrentCreditsStayExact", testConcurrentCreditsStayExact},
		{"StaleHoldsAreReleased", testStaleHoldsAreReleased},
		{"SecurityLogRetention", testSecurityLogRetention},
		{"Models", testModels},
		{"HarnessSeesStoredData", testHarnessSeesStoredData},
		{"LinkStripeCustomer", testLinkStripeCustomer},
		{"UnlinkStripeCustomer", testUnlinkStripeCustomer},
		{"ApplyStripeEventOnce", testApplyStripeEventOnce},
		{"SubscriptionUpdatesConverge", testSubscriptionUpdatesConverge},
		{"PaymentClawbacksConverge", testPaymentClawbacksConverge},
		{"ClawbackEntriesAndFlags", testClawbackEntriesAndFlags},
		{"TransactionsNewestFirst", testTransactionsNewestFirst},
		{"PruneStripeEvents", testPruneStripeEvents},
		{"SharedOutputsLiveWhileReferenced", testSharedOutputsLiveWhileReferenced},
		{"OutputsExpireByRetention", testOutputsExpireByRetention},
		{"LegalHoldOutlivesErasureAndRetention", testLegalHoldOutlivesErasureAndRetention},
		{"RegeneratedBytesMoveTheReference", testRegeneratedBytesMoveTheReference},
		{"PendingReferenceExpiresUnlessOwned", testPendingReferenceExpiresUnlessOwned},
		{"DSARsOverdueFirstThenByDeadline", testDSARsOverdueFirstThenByDeadline},
		{"DSARValidation", testDSARValidation},
		{"CloseDSAR", testCloseDSAR},
		{"ReportsAreSealedAndListedNewestFirst", testReportsAreSealedAndListedNewestFirst},
		{"ReportsSurviveErasure", testReportsSurviveErasure},
		{"CreateReportRefusesIncompleteReports", testCreateReportRefusesIncompleteReports},
		{"NotifyMailsEachListedActiveAccountOnce", testNotifyMailsEachListedActiveAccountOnce},
		{"NotifyAllListsAccountsCreatedBeforeTheJob", testNotifyAllListsAccountsCreatedBeforeTheJob},
		{"CreateNotifyJobValidation", testCreateNotifyJobValidation},
		{"NotifyRetryKeepsTheRecipientNext", testNotifyRetryKeepsTheRecipientNext},
		{"RecordPageViewAggregates", testRecordPageViewAggregates},
		{"RecordPageViewRefusesFreeText", testRecordPageViewRefusesFreeText},
		{"RecordPageViewConcurrent", testRecordPageViewConcurrent},
		{"ExportStatsIsKAnonymousAndExcludesOptOuts", testExportStatsIsKAnonymousAndExcludesOptOuts},
		{"SweepRemovesOnlyWhatIsDue", testSweepRemovesOnlyWhatIsDue},
		{"NotifyResumesWithoutDuplicates", testNotifyResumesWithoutDuplicates},
		{"ErasureResumesInAnotherProcess", testErasureResumesInAnotherProcess},
		{"DataSurvivesReopen", testDataSurvivesReopen},
		{"OneOpenSubscriptionCheckout", testOneOpenSubscriptionCheckout},
		{"ClaimDoomedDecidesTheRace", testClaimDoomedDecidesTheRace},
		{"LiftSuspension", testLiftSuspension},
		{"PartnerKeysAndLookup", testPartnerKeysAndLookup},
		{"PartnerValidation", testPartnerValidation},
		{"PartnersOldestFirst", testPartnersOldestFirst},
		{"UpdatePartner", testUpdatePartner},
		{"PartnerQuotaAndUsage", testPartnerQuotaAndUsage},
		{"PartnerQuotaConcurrent", testPartnerQuotaConcurrent},
		{"CreditSalesDays", testCreditSalesDays},
		{"ErasureRotatesTheLookupIndexKey", testErasureRotatesTheLookupIndexKey},
		{"JobsSealedKeyedAndIdempotent", testJobsSealedKeyedAndIdempotent},
		{"JobIdempotencyAcrossClients", testJobIdempotencyAcrossClients},
		{"JobLeaseGoesToOneClientAtATime", testJobLeaseGoesToOneClientAtATime},
		{"JobsResumeAfterRestart", testJobsResumeAfterRestart},
		{"JobsErasedWithTheAccountAndSwept", testJobsErasedWithTheAccountAndSwept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, h)
		})
	}
}

func (h Harness) open(t *testing.T) (Store, *testpeer.Clock) {
	t.Helper()
	clock := testpeer.NewClock(start)
	s, keyPath := h.Open(t, clock.Now)
	h.keyPaths.Store(s, keyPath)
	return s, clock
}

// reopen is Harness.Reopen, keeping track of the key files.
func (h Harness) reopen(t *testing.T, s Store, clock *testpeer.Clock) Store {
	t.Helper()
	p, _ := h.keyPaths.Load(s)
	s2 := h.Reopen(t, s, clock.Now)
	h.keyPaths.Store(s2, p)
	return s2
}

// reopenShared is Harness.Share, or s itself when the store cannot be
// shared.
func (h Harness) reopenShared(t *testing.T, s Store, clock *testpeer.Clock) Store {
	t.Helper()
	if h.Share == nil {
		return s
	}
	p, _ := h.keyPaths.Load(s)
	s2 := h.Share(t, s, clock.Now)
	h.keyPaths.Store(s2, p)
	return s2
}

// keyring opens s's key files a second time, to check which keys exist.
func (h Harness) keyring(t *testing.T, s Store) *store.Keyring {
	t.Helper()
	p, ok := h.keyPaths.Load(s)
	if !ok {
		t.Fatal("storetest: store not opened by the harness")
	}
	k, err := store.OpenKeyring(p.(string))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// start is where every test's clock begins.
var start = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func mustAccount(t *testing.T, db Store, email string) store.Account {
	t.Helper()
	a, err := db.CreateAccount(store.NewAccount{Email: email, PasswordHash: "$argon2id$test", Plan: "free", AgeAttested: start})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// ContainsText reports whether needle appears in dump as text or as the
// hex a bytea column is rendered in; for Harness.Contains over a textual
// dump of a database.
func ContainsText(dump string, needle []byte) bool {
	return strings.Contains(dump, string(needle)) || strings.Contains(dump, hex.EncodeToString(needle))
}

// A sign-out (or a suspension) ends the session at once for every reader
// of the store: the next validation fails, with no grace period.
func testSignOutIsImmediate(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "out@example.com")
	policy := store.SessionPolicy{Idle: time.Hour, Absolute: time.Hour}
	tok, _, err := db.CreateSession(a.ID, policy)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ValidateSession(tok); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteSession(tok); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ValidateSession(tok); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("signed-out session: %v, want ErrNotFound", err)
	}
	if err := db.DeleteSession(tok); err != nil {
		t.Errorf("signing out twice: %v", err)
	}
	other, _, _ := db.CreateSession(a.ID, policy)
	if err := db.SetStatus(a.ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ValidateSession(other); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of a suspended account: %v, want ErrNotFound", err)
	}
}

func testCancelEmailChange(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "c@example.com")
	if ok, err := db.CancelEmailChange(a.ID); err != nil || ok {
		t.Errorf("cancel with nothing pending = %v, %v; want false", ok, err)
	}
	verify, _ := db.CreateEmailVerification(a.ID, "", time.Hour)
	reset, _ := db.CreatePasswordReset(a.ID, time.Hour)
	change, _ := db.CreateEmailVerification(a.ID, "moved@example.com", time.Hour)
	if ok, err := db.CancelEmailChange(a.ID); err != nil || !ok {
		t.Fatalf("cancel = %v, %v; want true", ok, err)
	}
	if _, err := db.ConfirmEmail(change); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancelled change link: %v, want ErrNotFound", err)
	}
	if got, _ := db.Account(a.ID); got.Email != "c@example.com" {
		t.Errorf("email = %q after a cancelled change", got.Email)
	}
	// The change link superseded the plain verification; the reset link is
	// not a change and survives.
	if _, err := db.ConfirmEmail(verify); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("superseded verification: %v", err)
	}
	if err := db.CheckPasswordReset(reset); err != nil {
		t.Errorf("reset link after cancelling a change: %v", err)
	}
}

// TestUpdateSettings checks that concurrent changes of different switches
// all survive, and that unchanged settings report no change.
func testUpdateSettings(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "ada@example.com")

	var wg sync.WaitGroup
	for _, set := range []func(*store.Settings){
		func(s *store.Settings) { s.ProductEmail = true },
		func(s *store.Settings) { s.NoAnalytics = true },
		func(s *store.Settings) { s.NoModelImprovement = true },
	} {
		wg.Go(func() {
			if _, _, err := db.UpdateSettings(a.ID, set); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := store.Settings{ProductEmail: true, NoAnalytics: true, NoModelImprovement: true}
	got, err := db.Account(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Settings); diff != "" {
		t.Errorf("settings after concurrent updates (-want +got):\n%s", diff)
	}
	s, changed, err := db.UpdateSettings(a.ID, func(s *store.Settings) { s.NoAnalytics, s.NoModelImprovement = true, true })
	if err != nil || changed || s != want {
		t.Errorf("no-op update = %+v, %v, %v; want %+v, false, nil", s, changed, err, want)
	}
	s, changed, err = db.UpdateSettings(a.ID, func(s *store.Settings) { s.ProductEmail = false })
	if err != nil || !changed || s.ProductEmail {
		t.Errorf("update = %+v, %v, %v; want product email off, changed", s, changed, err)
	}
	if err := db.SetStatus(a.ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.UpdateSettings(a.ID, func(s *store.Settings) { s.ProductEmail = true }); !errors.Is(err, store.ErrAccountInactive) {
		t.Errorf("suspended account: %v, want ErrAccountInactive", err)
	}
	if _, _, err := db.UpdateSettings("acct_missing", func(*store.Settings) {}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing account: %v, want ErrNotFound", err)
	}
}

// Purchases, grants, charges and releases racing on one account leave the
// balance equal to the ledger's sum and nothing held.
func testConcurrentCreditsStayExact(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "x@example.com")
	if _, _, err := db.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: 50, Ref: "seed"}); err != nil {
		t.Fatal(err)
	}
	var charged atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			// Every purchase is sent twice: the ref makes the second a no-op.
			ref := "cs_" + string(rune('a'+i%20))
			if _, _, err := db.AddCredit(a.ID, store.Credit{Kind: store.KindPurchase, Amount: 3, Ref: ref}); err != nil {
				t.Error(err)
			}
			hold, err := db.Reserve(a.ID, 2, "gen")
			if errors.Is(err, store.ErrInsufficientCredits) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				db.ReleaseHold(hold.ID)
				return
			}
			if _, err := db.CommitHold(hold.ID); err != nil {
				t.Error(err)
				return
			}
			charged.Add(2)
		})
	}
	wg.Wait()
	got, err := db.Account(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := 50 + 20*3 - charged.Load(); got.Credits != want || got.Held != 0 {
		t.Errorf("credits %d held %d; want %d held 0", got.Credits, got.Held, want)
	}
	if mm, err := db.Reconcile(false); err != nil || len(mm) != 0 {
		t.Errorf("Reconcile after the race = %+v, %v", mm, err)
	}
}

func testModels(t *testing.T, h Harness) {
	db, _ := h.open(t)
	if _, err := db.Models(); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("models before the first save: %v, want ErrNotFound", err)
	}
	want := []store.Model{{Name: "retro", Version: "3", Kind: "procedural", Styles: []string{"pixel"}, Sizes: []int{256, 512}}}
	if err := db.SaveModels(want); err != nil {
		t.Fatal(err)
	}
	want[0].Version = "4"
	if err := db.SaveModels(want); err != nil {
		t.Fatal(err)
	}
	got, err := db.Models()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
}

func testAccountLifecycle(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a, err := db.CreateAccount(store.NewAccount{Email: "  Ada@Example.COM ", PasswordHash: "$argon2id$x", Plan: "free", AgeAttested: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	want := store.Account{
		ID: a.ID, Email: "ada@example.com", PasswordHash: "$argon2id$x", Plan: "free", Status: store.StatusActive,
		Created: clock.Now(), AgeAttested: clock.Now(),
	}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("created account (-want +got):\n%s", diff)
	}
	for _, email := range []string{"ada@example.com", "ADA@EXAMPLE.COM", " ada@example.com\t"} {
		got, err := db.AccountByEmail(email)
		if err != nil || got.ID != a.ID {
			t.Errorf("AccountByEmail(%q) = %v, %v; want %s", email, got.ID, err, a.ID)
		}
	}
	if _, err := db.AccountByEmail("bob@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown email: %v, want ErrNotFound", err)
	}
	if _, err := db.CreateAccount(store.NewAccount{Email: "ADA@example.com", AgeAttested: clock.Now()}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate email: %v, want ErrConflict", err)
	}
	if _, err := db.CreateAccount(store.NewAccount{Email: "kid@example.com"}); err == nil {
		t.Errorf("an account without an age attestation was created")
	}

	if err := db.LinkGoogle(a.ID, "google-sub-1"); err != nil {
		t.Fatal(err)
	}
	if got, err := db.AccountByGoogle("google-sub-1"); err != nil || got.ID != a.ID || got.GoogleSubject != "google-sub-1" {
		t.Errorf("AccountByGoogle = %+v, %v", got, err)
	}
	b := mustAccount(t, db, "bob@example.com")
	if err := db.LinkGoogle(b.ID, "google-sub-1"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("linking a subject owned by another account: %v, want ErrConflict", err)
	}

	if err := db.SetEmail(a.ID, "ada@new.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AccountByEmail("ada@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old email still finds the account: %v", err)
	}
	if got, _ := db.AccountByEmail("ada@new.example"); got.ID != a.ID || !got.EmailVerified {
		t.Errorf("new email lookup = %+v", got)
	}
	if err := db.SetEmail(a.ID, "bob@example.com"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("taking another account's email: %v, want ErrConflict", err)
	}
	settings := store.Settings{ProductEmail: true, NoAnalytics: true}
	if err := db.SetSettings(a.ID, settings); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Account(a.ID); got.Settings != settings {
		t.Errorf("settings = %+v, want %+v", got.Settings, settings)
	}
}

func testSessions(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "s@example.com")
	policy := store.SessionPolicy{Idle: time.Hour, Absolute: 3 * time.Hour}

	token, s, err := db.CreateSession(a.ID, policy)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) < 22 || s.AccountID != a.ID {
		t.Fatalf("CreateSession = %q, %+v", token, s)
	}
	if h.Contains(t, db, []byte(token)) {
		t.Errorf("the session token is stored in the clear")
	}
	// Used every 50 minutes the session outlives its idle timeout but not
	// its absolute one.
	for range 3 {
		clock.Advance(50 * time.Minute)
		if _, err := db.ValidateSession(token); err != nil {
			t.Fatalf("ValidateSession while active: %v", err)
		}
	}
	clock.Advance(31 * time.Minute) // 3h01m since sign-in
	if _, err := db.ValidateSession(token); !errors.Is(err, store.ErrExpired) {
		t.Errorf("past absolute timeout: %v, want ErrExpired", err)
	}
	if _, err := db.ValidateSession(token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired session not deleted: %v", err)
	}

	idle, _, _ := db.CreateSession(a.ID, policy)
	clock.Advance(time.Hour)
	if _, err := db.ValidateSession(idle); !errors.Is(err, store.ErrExpired) {
		t.Errorf("past idle timeout: %v, want ErrExpired", err)
	}

	// Sign out everywhere but here.
	var tokens []string
	for range 3 {
		tok, _, _ := db.CreateSession(a.ID, policy)
		tokens = append(tokens, tok)
	}
	n, err := db.DeleteSessions(a.ID, tokens[0])
	if err != nil || n != 2 {
		t.Fatalf("DeleteSessions = %d, %v; want 2", n, err)
	}
	if _, err := db.ValidateSession(tokens[0]); err != nil {
		t.Errorf("kept session: %v", err)
	}
	for _, tok := range tokens[1:] {
		if _, err := db.ValidateSession(tok); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ended session still valid: %v", err)
		}
	}
	// A password change ends the rest too.
	if ch, err := db.SetPassword(a.ID, "$argon2id$new", "", store.RevokeAPIKeys); err != nil || ch.SessionsEnded != 1 {
		t.Errorf("SetPassword ended %d, %v; want 1", ch.SessionsEnded, err)
	}
	if db.SessionCount(a.ID) != 0 {
		t.Errorf("sessions left after password change")
	}
	// Suspended accounts cannot sign in.
	if err := db.SetStatus(a.ID, store.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateSession(a.ID, policy); !errors.Is(err, store.ErrAccountInactive) {
		t.Errorf("session for a suspended account: %v", err)
	}
}

func testAPIKeys(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "k@example.com")
	secret, k, err := db.CreateAPIKey(a.ID, "ci", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) < 30 || secret[:3] != store.APIKeyPrefix || k.Hint != secret[:7] {
		t.Errorf("secret %q hint %q", secret, k.Hint)
	}
	if h.Contains(t, db, []byte(secret)) {
		t.Errorf("API key stored in the clear")
	}
	clock.Advance(2 * time.Hour)
	got, err := db.ValidateAPIKey(secret)
	if err != nil || got.AccountID != a.ID || !got.LastUsed.Equal(clock.Now()) {
		t.Errorf("ValidateAPIKey = %+v, %v", got, err)
	}
	if _, err := db.ValidateAPIKey(secret + "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("wrong key: %v", err)
	}
	keys, _ := db.APIKeys(a.ID)
	if len(keys) != 1 || keys[0].ID != k.ID {
		t.Errorf("APIKeys = %+v", keys)
	}
	if err := db.DeleteAPIKey(a.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ValidateAPIKey(secret); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoked key still valid: %v", err)
	}
}

func testPasswordReset(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "r@example.com")
	policy := store.SessionPolicy{Idle: time.Hour, Absolute: time.Hour}
	sess, _, _ := db.CreateSession(a.ID, policy)

	first, err := db.CreatePasswordReset(a.ID, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := db.CreatePasswordReset(a.ID, 30*time.Minute)
	if h.Contains(t, db, []byte(first)) {
		t.Errorf("reset token stored in the clear")
	}
	if err := db.CheckPasswordReset(second); err != nil {
		t.Errorf("CheckPasswordReset(live token) = %v", err)
	}
	if err := db.CheckPasswordReset("not-a-token"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CheckPasswordReset(unknown) = %v, want ErrNotFound", err)
	}
	ch, err := db.ConsumePasswordReset(second, "$argon2id$reset", store.RevokeAPIKeys)
	if err != nil || ch.AccountID != a.ID || ch.SessionsEnded != 1 {
		t.Fatalf("Consume = %+v, %v", ch, err)
	}
	if got, _ := db.Account(a.ID); got.PasswordHash != "$argon2id$reset" {
		t.Errorf("password not changed")
	}
	if _, err := db.ValidateSession(sess); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session survived a reset: %v", err)
	}
	for _, tok := range []string{second, first} {
		if _, err := db.ConsumePasswordReset(tok, "$argon2id$again", store.RevokeAPIKeys); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("reused/sibling token: %v, want ErrNotFound", err)
		}
	}
	late, _ := db.CreatePasswordReset(a.ID, 30*time.Minute)
	clock.Advance(31 * time.Minute)
	if err := db.CheckPasswordReset(late); !errors.Is(err, store.ErrExpired) {
		t.Errorf("CheckPasswordReset(expired) = %v, want ErrExpired", err)
	}
	if _, err := db.ConsumePasswordReset(late, "$argon2id$late", store.RevokeAPIKeys); !errors.Is(err, store.ErrExpired) {
		t.Errorf("expired token: %v, want ErrExpired", err)
	}
	if got, _ := db.Account(a.ID); got.PasswordHash != "$argon2id$reset" {
		t.Errorf("an expired token changed the password")
	}
}

func testConsentsAreAppendOnly(t *testing.T, h Harness) {
	db, clock := h.open(t)
	if _, err := db.LatestConsent("v_1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("no choice yet: %v", err)
	}
	first, _ := db.RecordConsent(store.Consent{Subject: "v_1", Revision: 1, Analytics: true, Source: store.ConsentBanner})
	clock.Advance(time.Minute)
	second, _ := db.RecordConsent(store.Consent{Subject: "v_1", Revision: 1, Source: store.ConsentSettings})
	db.RecordConsent(store.Consent{Subject: "v_2", Revision: 1, Preferences: true, Source: store.ConsentGPC})
	all, err := db.Consents("v_1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.Consent{first, second}, all); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if latest, _ := db.LatestConsent("v_1"); latest != second {
		t.Errorf("latest = %+v", latest)
	}
}

func testEmailVerificationAndChange(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "v@example.com")
	tok, err := db.CreateEmailVerification(a.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := db.ConfirmEmail(tok); err != nil || id != a.ID {
		t.Fatalf("ConfirmEmail = %q, %v", id, err)
	}
	if got, _ := db.Account(a.ID); !got.EmailVerified {
		t.Errorf("address not marked verified")
	}
	if _, err := db.ConfirmEmail(tok); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("token reused: %v", err)
	}

	// Changing the address: only the newest link works, and the pending
	// address is not readable in the file.
	old, _ := db.CreateEmailVerification(a.ID, "pending-marker@example.com", time.Hour)
	change, _ := db.CreateEmailVerification(a.ID, "new@example.com", time.Hour)
	if h.Contains(t, db, []byte("pending-marker@example.com")) {
		t.Errorf("a pending address is readable in the store files")
	}
	if _, err := db.ConfirmEmail(old); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("superseded change link: %v", err)
	}
	if _, err := db.ConfirmEmail(change); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.AccountByEmail("new@example.com"); got.ID != a.ID {
		t.Errorf("new address does not find the account")
	}
	// A reset token is not a verification token, and vice versa.
	reset, _ := db.CreatePasswordReset(a.ID, time.Hour)
	if _, err := db.ConfirmEmail(reset); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reset token confirmed an email: %v", err)
	}
	late, _ := db.CreateEmailVerification(a.ID, "later@example.com", time.Hour)
	clock.Advance(2 * time.Hour)
	if _, err := db.ConfirmEmail(late); !errors.Is(err, store.ErrExpired) {
		t.Errorf("expired link: %v", err)
	}
}

// store.Account pre-hijacking: someone signs up with another person's address
// and never proves it. When the address's owner proves it (a Google link
// or a reset link), nothing the signer-up holds may still open the account.
func testProvingAnAddressRevokesTheSquattersCredentials(t *testing.T, h Harness) {
	policy := store.SessionPolicy{Idle: time.Hour, Absolute: time.Hour}
	squat := func(t *testing.T, db Store, email string) (store.Account, string, string, string) {
		t.Helper()
		a := mustAccount(t, db, email)
		if a.EmailVerified {
			t.Fatal("a password signup starts verified")
		}
		sess, _, err := db.CreateSession(a.ID, policy)
		if err != nil {
			t.Fatal(err)
		}
		key, _, err := db.CreateAPIKey(a.ID, "squatter", nil)
		if err != nil {
			t.Fatal(err)
		}
		reset, err := db.CreatePasswordReset(a.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return a, sess, key, reset
	}
	assertRevoked := func(t *testing.T, db Store, sess, key string) {
		t.Helper()
		if _, err := db.ValidateSession(sess); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the squatter's session survived: %v", err)
		}
		if _, err := db.ValidateAPIKey(key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the squatter's API key survived: %v", err)
		}
	}

	t.Run("google link", func(t *testing.T) {
		t.Parallel()
		db, _ := h.open(t)
		a, sess, key, reset := squat(t, db, "victim@example.com")
		if err := db.LinkGoogle(a.ID, "google-owner"); err != nil {
			t.Fatal(err)
		}
		assertRevoked(t, db, sess, key)
		if _, err := db.ConsumePasswordReset(reset, "$argon2id$squatter", store.FlagAPIKeys); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the squatter's reset link still works: %v", err)
		}
		got, _ := db.Account(a.ID)
		if got.PasswordHash != "" || !got.EmailVerified {
			t.Errorf("after the link: password %q, verified %v; want none and true", got.PasswordHash, got.EmailVerified)
		}
	})

	t.Run("reset link", func(t *testing.T) {
		t.Parallel()
		db, _ := h.open(t)
		a, sess, key, reset := squat(t, db, "victim@example.com")
		// Flagging is the owner's choice, but the squatter's key dies
		// whatever the choice.
		if _, err := db.ConsumePasswordReset(reset, "$argon2id$owner", store.FlagAPIKeys); err != nil {
			t.Fatal(err)
		}
		assertRevoked(t, db, sess, key)
		if got, _ := db.Account(a.ID); !got.EmailVerified {
			t.Errorf("a spent reset link did not mark the address proven")
		}
	})

	t.Run("a proven account keeps its keys when it asks to", func(t *testing.T) {
		t.Parallel()
		db, _ := h.open(t)
		a := mustAccount(t, db, "owner@example.com")
		if err := db.LinkGoogle(a.ID, "google-owner"); err != nil {
			t.Fatal(err)
		}
		key, _, _ := db.CreateAPIKey(a.ID, "mine", nil)
		reset, _ := db.CreatePasswordReset(a.ID, time.Hour)
		if _, err := db.ConsumePasswordReset(reset, "$argon2id$new", store.FlagAPIKeys); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ValidateAPIKey(key); err != nil {
			t.Errorf("a verified owner's reset revoked their API key: %v", err)
		}
	})
}

func testCreditsLedger(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "l@example.com")

	e, applied, err := db.AddCredit(a.ID, store.Credit{Kind: store.KindPurchase, Amount: 100, Ref: "cs_1", MoneyMinor: 500, Currency: "usd"})
	if err != nil || !applied || e.Balance != 100 {
		t.Fatalf("AddCredit = %+v, %v, %v", e, applied, err)
	}
	again, applied, err := db.AddCredit(a.ID, store.Credit{Kind: store.KindPurchase, Amount: 100, Ref: "cs_1"})
	if err != nil || applied || again.Seq != e.Seq {
		t.Errorf("replayed ref: %+v, applied %v, %v; want the first entry, not applied", again, applied, err)
	}
	if ok, _ := db.ApplyGrant(a.ID, "2026-11", 20); !ok {
		t.Errorf("first grant of the period not applied")
	}
	if ok, _ := db.ApplyGrant(a.ID, "2026-11", 20); ok {
		t.Errorf("second grant of the same period applied")
	}

	hold, err := db.Reserve(a.ID, 30, "key")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Account(a.ID); got.Credits != 120 || got.Available() != 90 {
		t.Errorf("after reserve: credits %d available %d; want 120, 90", got.Credits, got.Available())
	}
	if _, err := db.CommitHold(hold.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CommitHold(hold.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("double commit: %v, want ErrNotFound", err)
	}
	h2, _ := db.Reserve(a.ID, 50, "key2")
	if err := db.ReleaseHold(h2.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.ReleaseHold(h2.ID); err != nil {
		t.Errorf("second release: %v", err)
	}
	got, _ := db.Account(a.ID)
	if got.Credits != 90 || got.Held != 0 {
		t.Errorf("credits %d held %d; want 90, 0", got.Credits, got.Held)
	}
	if _, err := db.Reserve(a.ID, 91, "too much"); !errors.Is(err, store.ErrInsufficientCredits) {
		t.Errorf("overdraft: %v, want ErrInsufficientCredits", err)
	}
	// A hold under an ID chosen (and recorded) before it exists: the ID
	// is the hold's, a second reservation under it is refused and holds
	// nothing, and releasing an ID that was never held is a no-op.
	chosen := store.NewID("hold_")
	if err := db.ReleaseHold(chosen); err != nil {
		t.Errorf("releasing an ID never held: %v", err)
	}
	h3, err := db.ReserveHold(store.Hold{ID: chosen, AccountID: a.ID, Amount: 10, Ref: "key3"})
	if err != nil || h3.ID != chosen || h3.Created.IsZero() {
		t.Fatalf("ReserveHold = %+v, %v; want the chosen ID and a creation time", h3, err)
	}
	if _, err := db.ReserveHold(store.Hold{ID: chosen, AccountID: a.ID, Amount: 10, Ref: "key3"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a second hold under one ID: %v, want ErrConflict", err)
	}
	if got, _ := db.Account(a.ID); got.Held != 10 {
		t.Errorf("held %d after a refused second hold, want 10", got.Held)
	}
	if err := db.ReleaseHold(chosen); err != nil {
		t.Fatal(err)
	}
	entries, _ := db.Ledger(a.ID)
	var sum int64
	for _, e := range entries {
		sum += e.Amount
	}
	if len(entries) != 3 || sum != got.Credits {
		t.Errorf("ledger %d entries summing to %d; want 3 summing to %d", len(entries), sum, got.Credits)
	}
	if mm, err := db.Reconcile(false); err != nil || len(mm) != 0 {
		t.Errorf("Reconcile on a consistent store = %+v, %v", mm, err)
	}
}

func testConcurrentReservationsNeverOverspend(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "c@example.com")
	db.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: 10, Ref: "g"})
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			hold, err := db.Reserve(a.ID, 1, "k")
			switch {
			case errors.Is(err, store.ErrInsufficientCredits):
				refused.Add(1)
			case err != nil:
				t.Error(err)
			default:
				ok.Add(1)
				if _, err := db.CommitHold(hold.ID); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 10 || refused.Load() != 190 {
		t.Errorf("%d charged, %d refused; want 10, 190", ok.Load(), refused.Load())
	}
	if got, _ := db.Account(a.ID); got.Credits != 0 || got.Held != 0 {
		t.Errorf("credits %d held %d; want 0, 0", got.Credits, got.Held)
	}
}

func testStaleHoldsAreReleased(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "h@example.com")
	db.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: 5, Ref: "g"})
	db.Reserve(a.ID, 3, "old")
	clock.Advance(10 * time.Minute)
	fresh, _ := db.Reserve(a.ID, 1, "new")
	n, err := db.ReleaseStaleHolds(5 * time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("ReleaseStaleHolds = %d, %v; want 1", n, err)
	}
	if got, _ := db.Account(a.ID); got.Held != 1 {
		t.Errorf("held %d, want 1 (the fresh hold)", got.Held)
	}
	if _, err := db.CommitHold(fresh.ID); err != nil {
		t.Errorf("fresh hold: %v", err)
	}
}

func testSecurityLogRetention(t *testing.T, h Harness) {
	db, clock := h.open(t)
	a := mustAccount(t, db, "sec@example.com")
	const oldIP, newIP = "203.0.113.77", "198.51.100.42"
	if err := db.LogSecurityEvent(store.SecurityEvent{Kind: "login", AccountID: a.ID, IP: oldIP, UserAgent: "OldBrowser/1"}); err != nil {
		t.Fatal(err)
	}
	db.LogSecurityEvent(store.SecurityEvent{Kind: "login_failed", IP: oldIP})
	clock.Advance(20 * 24 * time.Hour)
	db.LogSecurityEvent(store.SecurityEvent{Kind: "password_changed", AccountID: a.ID, IP: newIP, UserAgent: "NewBrowser/2"})
	if h.Contains(t, db, []byte(oldIP)) || h.Contains(t, db, []byte("OldBrowser")) {
		t.Errorf("an IP or user agent is readable in the store files")
	}

	got, err := db.SecurityEvents(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.SecurityEvent{
		{Time: clock.Now().Add(-20 * 24 * time.Hour), Kind: "login", AccountID: a.ID, IP: oldIP, UserAgent: "OldBrowser/1"},
		{Time: clock.Now(), Kind: "password_changed", AccountID: a.ID, IP: newIP, UserAgent: "NewBrowser/2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	// 31 days after the first events: those two are due, the third not.
	clock.Advance(11 * 24 * time.Hour)
	n, err := db.SweepSecurityLog(30 * 24 * time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("sweep deleted %d, %v; want 2", n, err)
	}
	if n, _ := db.SweepSecurityLog(30 * 24 * time.Hour); n != 0 {
		t.Errorf("second sweep deleted %d, want 0", n)
	}
	got, _ = db.SecurityEvents(a.ID)
	if diff := cmp.Diff(want[1:], got); diff != "" {
		t.Errorf("events after sweep (-want +got):\n%s", diff)
	}
	var all int
	db.AllSecurityEvents(func(store.SecurityEvent) error { all++; return nil })
	if all != 1 {
		t.Errorf("%d events in the log, want 1", all)
	}
	// The swept day's key is gone: a copy of the old row (as bbolt's freed
	// pages keep it) can no longer be opened.
	keys := h.keyring(t, db)
	oldDay := store.DayOf(clock.Now().Add(-31 * 24 * time.Hour))
	if _, err := keys.DayKey(oldDay); err == nil {
		t.Errorf("the day key of swept events still exists")
	}
	newDay := store.DayOf(clock.Now().Add(-11 * 24 * time.Hour))
	if _, err := keys.DayKey(newDay); err != nil {
		t.Errorf("the day key of kept events was destroyed: %v", err)
	}
}

// The "not readable" checks above mean something only if Contains finds
// what the store does keep in the clear, such as an account id and a
// ledger ref.
func testHarnessSeesStoredData(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "seen@example.com")
	if _, _, err := db.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: 1, Ref: "ref-marker-5521"}); err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{a.ID, "ref-marker-5521"} {
		if !h.Contains(t, db, []byte(needle)) {
			t.Errorf("Contains does not find %q, which the store keeps in the clear", needle)
		}
	}
}
