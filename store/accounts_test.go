package store

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func TestAccountLifecycle(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a, err := db.CreateAccount(NewAccount{Email: "  Ada@Example.COM ", PasswordHash: "$argon2id$x", Plan: "free", AgeAttested: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	want := Account{
		ID: a.ID, Email: "ada@example.com", PasswordHash: "$argon2id$x", Plan: "free", Status: StatusActive,
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
	if _, err := db.AccountByEmail("bob@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown email: %v, want ErrNotFound", err)
	}
	if _, err := db.CreateAccount(NewAccount{Email: "ADA@example.com", AgeAttested: clock.Now()}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate email: %v, want ErrConflict", err)
	}
	if _, err := db.CreateAccount(NewAccount{Email: "kid@example.com"}); err == nil {
		t.Errorf("an account without an age attestation was created")
	}

	if err := db.LinkGoogle(a.ID, "google-sub-1"); err != nil {
		t.Fatal(err)
	}
	if got, err := db.AccountByGoogle("google-sub-1"); err != nil || got.ID != a.ID || got.GoogleSubject != "google-sub-1" {
		t.Errorf("AccountByGoogle = %+v, %v", got, err)
	}
	b := mustAccount(t, db, "bob@example.com")
	if err := db.LinkGoogle(b.ID, "google-sub-1"); !errors.Is(err, ErrConflict) {
		t.Errorf("linking a subject owned by another account: %v, want ErrConflict", err)
	}

	if err := db.SetEmail(a.ID, "ada@new.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AccountByEmail("ada@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old email still finds the account: %v", err)
	}
	if got, _ := db.AccountByEmail("ada@new.example"); got.ID != a.ID || !got.EmailVerified {
		t.Errorf("new email lookup = %+v", got)
	}
	if err := db.SetEmail(a.ID, "bob@example.com"); !errors.Is(err, ErrConflict) {
		t.Errorf("taking another account's email: %v, want ErrConflict", err)
	}
	settings := Settings{ProductEmail: true, NoAnalytics: true}
	if err := db.SetSettings(a.ID, settings); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Account(a.ID); got.Settings != settings {
		t.Errorf("settings = %+v, want %+v", got.Settings, settings)
	}
}

func TestPersonalDataIsSealedInTheFile(t *testing.T) {
	t.Parallel()
	db, _, path := testDB(t)
	const email = "sealed-marker@example.com"
	a := mustAccount(t, db, email)
	if err := db.LinkGoogle(a.ID, "google-subject-marker-991"); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{email, "google-subject-marker-991"} {
		if fileContains(t, path, []byte(needle)) {
			t.Errorf("%q is readable in the store files", needle)
		}
	}
}

func TestDestroyedKeyMakesAccountUnreadable(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "gone@example.com")
	var rec accountRecord
	db.bolt.View(func(tx *bolt.Tx) error { var err error; rec, err = getAccount(tx, a.ID); return err })
	if err := db.keys.destroy(rec.Slot); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Account(a.ID); !errors.Is(err, ErrKeyDestroyed) {
		t.Errorf("Account after key destruction: %v, want ErrKeyDestroyed", err)
	}
	// Another account's key is untouched.
	b := mustAccount(t, db, "kept@example.com")
	if got, err := db.Account(b.ID); err != nil || got.Email != "kept@example.com" {
		t.Errorf("other account: %+v, %v", got, err)
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	a := mustAccount(t, db, "s@example.com")
	policy := SessionPolicy{Idle: time.Hour, Absolute: 3 * time.Hour}

	token, s, err := db.CreateSession(a.ID, policy)
	if err != nil {
		t.Fatal(err)
	}
	if len(token) < 22 || s.AccountID != a.ID {
		t.Fatalf("CreateSession = %q, %+v", token, s)
	}
	db.bolt.Sync()
	if fileContains(t, path, []byte(token)) {
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
	if _, err := db.ValidateSession(token); !errors.Is(err, ErrExpired) {
		t.Errorf("past absolute timeout: %v, want ErrExpired", err)
	}
	if _, err := db.ValidateSession(token); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired session not deleted: %v", err)
	}

	idle, _, _ := db.CreateSession(a.ID, policy)
	clock.Advance(time.Hour)
	if _, err := db.ValidateSession(idle); !errors.Is(err, ErrExpired) {
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
		if _, err := db.ValidateSession(tok); !errors.Is(err, ErrNotFound) {
			t.Errorf("ended session still valid: %v", err)
		}
	}
	// A password change ends the rest too.
	if ch, err := db.SetPassword(a.ID, "$argon2id$new", "", RevokeAPIKeys); err != nil || ch.SessionsEnded != 1 {
		t.Errorf("SetPassword ended %d, %v; want 1", ch.SessionsEnded, err)
	}
	if db.SessionCount(a.ID) != 0 {
		t.Errorf("sessions left after password change")
	}
	// Suspended accounts cannot sign in.
	if err := db.SetStatus(a.ID, StatusSuspended); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateSession(a.ID, policy); !errors.Is(err, ErrAccountInactive) {
		t.Errorf("session for a suspended account: %v", err)
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	a := mustAccount(t, db, "k@example.com")
	secret, k, err := db.CreateAPIKey(a.ID, "ci", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) < 30 || secret[:3] != APIKeyPrefix || k.Hint != secret[:7] {
		t.Errorf("secret %q hint %q", secret, k.Hint)
	}
	db.bolt.Sync()
	if fileContains(t, path, []byte(secret)) {
		t.Errorf("API key stored in the clear")
	}
	clock.Advance(2 * time.Hour)
	got, err := db.ValidateAPIKey(secret)
	if err != nil || got.AccountID != a.ID || !got.LastUsed.Equal(clock.Now()) {
		t.Errorf("ValidateAPIKey = %+v, %v", got, err)
	}
	if _, err := db.ValidateAPIKey(secret + "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("wrong key: %v", err)
	}
	keys, _ := db.APIKeys(a.ID)
	if len(keys) != 1 || keys[0].ID != k.ID {
		t.Errorf("APIKeys = %+v", keys)
	}
	if err := db.DeleteAPIKey(a.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ValidateAPIKey(secret); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoked key still valid: %v", err)
	}
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
	a := mustAccount(t, db, "r@example.com")
	policy := SessionPolicy{Idle: time.Hour, Absolute: time.Hour}
	sess, _, _ := db.CreateSession(a.ID, policy)

	first, err := db.CreatePasswordReset(a.ID, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := db.CreatePasswordReset(a.ID, 30*time.Minute)
	db.bolt.Sync()
	if fileContains(t, path, []byte(first)) {
		t.Errorf("reset token stored in the clear")
	}
	if err := db.CheckPasswordReset(second); err != nil {
		t.Errorf("CheckPasswordReset(live token) = %v", err)
	}
	if err := db.CheckPasswordReset("not-a-token"); !errors.Is(err, ErrNotFound) {
		t.Errorf("CheckPasswordReset(unknown) = %v, want ErrNotFound", err)
	}
	ch, err := db.ConsumePasswordReset(second, "$argon2id$reset", RevokeAPIKeys)
	if err != nil || ch.AccountID != a.ID || ch.SessionsEnded != 1 {
		t.Fatalf("Consume = %+v, %v", ch, err)
	}
	if got, _ := db.Account(a.ID); got.PasswordHash != "$argon2id$reset" {
		t.Errorf("password not changed")
	}
	if _, err := db.ValidateSession(sess); !errors.Is(err, ErrNotFound) {
		t.Errorf("session survived a reset: %v", err)
	}
	for _, tok := range []string{second, first} {
		if _, err := db.ConsumePasswordReset(tok, "$argon2id$again", RevokeAPIKeys); !errors.Is(err, ErrNotFound) {
			t.Errorf("reused/sibling token: %v, want ErrNotFound", err)
		}
	}
	late, _ := db.CreatePasswordReset(a.ID, 30*time.Minute)
	clock.Advance(31 * time.Minute)
	if err := db.CheckPasswordReset(late); !errors.Is(err, ErrExpired) {
		t.Errorf("CheckPasswordReset(expired) = %v, want ErrExpired", err)
	}
	if _, err := db.ConsumePasswordReset(late, "$argon2id$late", RevokeAPIKeys); !errors.Is(err, ErrExpired) {
		t.Errorf("expired token: %v, want ErrExpired", err)
	}
	if got, _ := db.Account(a.ID); got.PasswordHash != "$argon2id$reset" {
		t.Errorf("an expired token changed the password")
	}
}

func TestConsentsAreAppendOnly(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	if _, err := db.LatestConsent("v_1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("no choice yet: %v", err)
	}
	first, _ := db.RecordConsent(Consent{Subject: "v_1", Revision: 1, Analytics: true, Source: ConsentBanner})
	clock.Advance(time.Minute)
	second, _ := db.RecordConsent(Consent{Subject: "v_1", Revision: 1, Source: ConsentSettings})
	db.RecordConsent(Consent{Subject: "v_2", Revision: 1, Preferences: true, Source: ConsentGPC})
	all, err := db.Consents("v_1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Consent{first, second}, all); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if latest, _ := db.LatestConsent("v_1"); latest != second {
		t.Errorf("latest = %+v", latest)
	}
}

func TestEmailVerificationAndChange(t *testing.T) {
	t.Parallel()
	db, clock, path := testDB(t)
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
	if _, err := db.ConfirmEmail(tok); !errors.Is(err, ErrNotFound) {
		t.Errorf("token reused: %v", err)
	}

	// Changing the address: only the newest link works, and the pending
	// address is not readable in the file.
	old, _ := db.CreateEmailVerification(a.ID, "pending-marker@example.com", time.Hour)
	change, _ := db.CreateEmailVerification(a.ID, "new@example.com", time.Hour)
	db.bolt.Sync()
	if fileContains(t, path, []byte("pending-marker@example.com")) {
		t.Errorf("a pending address is readable in the store files")
	}
	if _, err := db.ConfirmEmail(old); !errors.Is(err, ErrNotFound) {
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
	if _, err := db.ConfirmEmail(reset); !errors.Is(err, ErrNotFound) {
		t.Errorf("reset token confirmed an email: %v", err)
	}
	late, _ := db.CreateEmailVerification(a.ID, "later@example.com", time.Hour)
	clock.Advance(2 * time.Hour)
	if _, err := db.ConfirmEmail(late); !errors.Is(err, ErrExpired) {
		t.Errorf("expired link: %v", err)
	}
}

// Account pre-hijacking: someone signs up with another person's address
// and never proves it. When the address's owner proves it (a Google link
// or a reset link), nothing the signer-up holds may still open the account.
func TestProvingAnAddressRevokesTheSquattersCredentials(t *testing.T) {
	t.Parallel()
	policy := SessionPolicy{Idle: time.Hour, Absolute: time.Hour}
	squat := func(t *testing.T, db *DB, email string) (Account, string, string, string) {
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
	assertRevoked := func(t *testing.T, db *DB, sess, key string) {
		t.Helper()
		if _, err := db.ValidateSession(sess); !errors.Is(err, ErrNotFound) {
			t.Errorf("the squatter's session survived: %v", err)
		}
		if _, err := db.ValidateAPIKey(key); !errors.Is(err, ErrNotFound) {
			t.Errorf("the squatter's API key survived: %v", err)
		}
	}

	t.Run("google link", func(t *testing.T) {
		t.Parallel()
		db, _, _ := testDB(t)
		a, sess, key, reset := squat(t, db, "victim@example.com")
		if err := db.LinkGoogle(a.ID, "google-owner"); err != nil {
			t.Fatal(err)
		}
		assertRevoked(t, db, sess, key)
		if _, err := db.ConsumePasswordReset(reset, "$argon2id$squatter", FlagAPIKeys); !errors.Is(err, ErrNotFound) {
			t.Errorf("the squatter's reset link still works: %v", err)
		}
		got, _ := db.Account(a.ID)
		if got.PasswordHash != "" || !got.EmailVerified {
			t.Errorf("after the link: password %q, verified %v; want none and true", got.PasswordHash, got.EmailVerified)
		}
	})

	t.Run("reset link", func(t *testing.T) {
		t.Parallel()
		db, _, _ := testDB(t)
		a, sess, key, reset := squat(t, db, "victim@example.com")
		// Flagging is the owner's choice, but the squatter's key dies
		// whatever the choice.
		if _, err := db.ConsumePasswordReset(reset, "$argon2id$owner", FlagAPIKeys); err != nil {
			t.Fatal(err)
		}
		assertRevoked(t, db, sess, key)
		if got, _ := db.Account(a.ID); !got.EmailVerified {
			t.Errorf("a spent reset link did not mark the address proven")
		}
	})

	t.Run("a proven account keeps its keys when it asks to", func(t *testing.T) {
		t.Parallel()
		db, _, _ := testDB(t)
		a := mustAccount(t, db, "owner@example.com")
		if err := db.LinkGoogle(a.ID, "google-owner"); err != nil {
			t.Fatal(err)
		}
		key, _, _ := db.CreateAPIKey(a.ID, "mine", nil)
		reset, _ := db.CreatePasswordReset(a.ID, time.Hour)
		if _, err := db.ConsumePasswordReset(reset, "$argon2id$new", FlagAPIKeys); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ValidateAPIKey(key); err != nil {
			t.Errorf("a verified owner's reset revoked their API key: %v", err)
		}
	})
}
