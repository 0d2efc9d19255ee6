package store

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

func TestAPIKeyScopes(t *testing.T) {
	t.Parallel()
	db, _, _ := testDB(t)
	a := mustAccount(t, db, "scopes@example.com")
	for _, tc := range []struct {
		name string
		ask  []string
		want []string
	}{
		{"default", nil, []string{ScopeImagesWrite}},
		{"read only", []string{ScopeAccountRead}, []string{ScopeAccountRead}},
		{"both, duplicated, any order", []string{ScopeAccountRead, ScopeImagesWrite, ScopeAccountRead}, []string{ScopeImagesWrite, ScopeAccountRead}},
	} {
		secret, k, err := db.CreateAPIKey(a.ID, tc.name, tc.ask)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := db.ValidateAPIKey(secret)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got.Scopes); diff != "" || !slices.Equal(k.Scopes, got.Scopes) {
			t.Errorf("%s: stored scopes (-want +got):\n%s", tc.name, diff)
		}
	}
	before, _ := db.APIKeys(a.ID)
	for _, bad := range [][]string{{}, {"account:write"}, {ScopeImagesWrite, "admin"}} {
		if _, _, err := db.CreateAPIKey(a.ID, "bad", bad); err == nil {
			t.Errorf("CreateAPIKey(%q) succeeded", bad)
		}
	}
	if after, _ := db.APIKeys(a.ID); len(after) != len(before) {
		t.Errorf("refused requests created keys: %d → %d", len(before), len(after))
	}
}

// A key written before scopes existed has no scopes field: it reads as
// images:write only, whether validated or listed, and stays that way after
// a validation writes its last-used time back.
func TestAPIKeyWithoutScopesReadsAsImagesOnly(t *testing.T) {
	t.Parallel()
	db, clock, _ := testDB(t)
	a := mustAccount(t, db, "legacy@example.com")
	secret, k, err := db.CreateAPIKey(a.ID, "old", []string{ScopeImagesWrite, ScopeAccountRead})
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the record as the previous release stored it.
	legacy := `{"id":"` + k.ID + `","account":"` + a.ID + `","name":"old","hint":"` + k.Hint + `","created":"2026-01-02T03:04:05Z","last_used":"0001-01-01T00:00:00Z"}`
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAPIKeys).Put(hashToken(secret), []byte(legacy))
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second validation reads what the first wrote back
		got, err := db.ValidateAPIKey(secret)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{ScopeImagesWrite}, got.Scopes); diff != "" || got.HasScope(ScopeAccountRead) {
			t.Errorf("legacy key scopes (-want +got):\n%s", diff)
		}
		if got.Name != "old" || !got.Created.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
			t.Errorf("legacy key decoded as %+v", got)
		}
		clock.Advance(2 * time.Hour)
	}
	keys, err := db.APIKeys(a.ID)
	if err != nil || len(keys) != 1 || !slices.Equal(keys[0].Scopes, []string{ScopeImagesWrite}) || keys[0].LastUsed.IsZero() {
		t.Errorf("listed legacy key %+v, %v", keys, err)
	}
}

// A password change or reset revokes the account's keys, or keeps them
// working with a flag, as the caller chose.
func TestPasswordChangeRevokesOrFlagsAPIKeys(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*DB, Account, []string) {
		db, _, _ := testDB(t)
		a := mustAccount(t, db, "pw@example.com")
		if err := db.LinkGoogle(a.ID, "google-pw"); err != nil { // a proven address
			t.Fatal(err)
		}
		var secrets []string
		for _, name := range []string{"one", "two"} {
			s, _, err := db.CreateAPIKey(a.ID, name, nil)
			if err != nil {
				t.Fatal(err)
			}
			secrets = append(secrets, s)
		}
		return db, a, secrets
	}
	change := func(db *DB, a Account, keys APIKeyAction) (PasswordChange, error) {
		return db.SetPassword(a.ID, "$argon2id$changed", "", keys)
	}
	reset := func(db *DB, a Account, keys APIKeyAction) (PasswordChange, error) {
		tok, err := db.CreatePasswordReset(a.ID, time.Hour)
		if err != nil {
			return PasswordChange{}, err
		}
		return db.ConsumePasswordReset(tok, "$argon2id$reset", keys)
	}
	for _, tc := range []struct {
		name string
		do   func(*DB, Account, APIKeyAction) (PasswordChange, error)
		by   string
	}{{"change", change, "password_change"}, {"reset", reset, "password_reset"}} {
		t.Run(tc.name+"/revoke", func(t *testing.T) {
			t.Parallel()
			db, a, secrets := setup(t)
			ch, err := tc.do(db, a, RevokeAPIKeys)
			if err != nil || ch.KeysRevoked != 2 || ch.KeysFlagged != 0 || ch.AccountID != a.ID {
				t.Fatalf("%+v, %v; want 2 revoked", ch, err)
			}
			for _, s := range secrets {
				if _, err := db.ValidateAPIKey(s); !errors.Is(err, ErrNotFound) {
					t.Errorf("revoked key still valid: %v", err)
				}
			}
			if keys, _ := db.APIKeys(a.ID); len(keys) != 0 {
				t.Errorf("keys listed after revocation: %+v", keys)
			}
		})
		t.Run(tc.name+"/flag", func(t *testing.T) {
			t.Parallel()
			db, a, secrets := setup(t)
			ch, err := tc.do(db, a, FlagAPIKeys)
			if err != nil || ch.KeysFlagged != 2 || ch.KeysRevoked != 0 {
				t.Fatalf("%+v, %v; want 2 flagged", ch, err)
			}
			for _, s := range secrets {
				k, err := db.ValidateAPIKey(s)
				if err != nil {
					t.Fatalf("flagged key refused: %v", err)
				}
				if !k.Flagged.Equal(db.now().UTC()) || k.FlaggedBy != tc.by || !k.HasScope(ScopeImagesWrite) {
					t.Errorf("flagged key %+v, want flagged now by %s, scopes kept", k, tc.by)
				}
			}
		})
	}
	t.Run("unknown action changes nothing", func(t *testing.T) {
		t.Parallel()
		db, a, secrets := setup(t)
		if _, err := change(db, a, "keep"); err == nil {
			t.Fatal("an unknown action was accepted")
		}
		if got, _ := db.Account(a.ID); got.PasswordHash == "$argon2id$changed" {
			t.Error("the password changed although the request was refused")
		}
		if _, err := db.ValidateAPIKey(secrets[0]); err != nil {
			t.Errorf("key gone after a refused change: %v", err)
		}
	})
}
