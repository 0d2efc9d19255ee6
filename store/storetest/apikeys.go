package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/store"
)

func testAPIKeyScopes(t *testing.T, h Harness) {
	db, _ := h.open(t)
	a := mustAccount(t, db, "scopes@example.com")
	for _, tc := range []struct {
		name string
		ask  []string
		want []string
	}{
		{"default", nil, []string{store.ScopeImagesWrite}},
		{"read only", []string{store.ScopeAccountRead}, []string{store.ScopeAccountRead}},
		{"both, duplicated, any order", []string{store.ScopeAccountRead, store.ScopeImagesWrite, store.ScopeAccountRead}, []string{store.ScopeImagesWrite, store.ScopeAccountRead}},
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
	for _, bad := range [][]string{{}, {"account:write"}, {store.ScopeImagesWrite, "admin"}} {
		if _, _, err := db.CreateAPIKey(a.ID, "bad", bad); err == nil {
			t.Errorf("CreateAPIKey(%q) succeeded", bad)
		}
	}
	if after, _ := db.APIKeys(a.ID); len(after) != len(before) {
		t.Errorf("refused requests created keys: %d → %d", len(before), len(after))
	}
}

// A password change or reset revokes the account's keys, or keeps them
// working with a flag, as the caller chose.
func testPasswordChangeRevokesOrFlagsAPIKeys(t *testing.T, h Harness) {
	setup := func(t *testing.T) (Store, store.Account, []string) {
		db, _ := h.open(t)
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
	change := func(db Store, a store.Account, keys store.APIKeyAction) (store.PasswordChange, error) {
		return db.SetPassword(a.ID, "$argon2id$changed", "", keys)
	}
	reset := func(db Store, a store.Account, keys store.APIKeyAction) (store.PasswordChange, error) {
		tok, err := db.CreatePasswordReset(a.ID, time.Hour)
		if err != nil {
			return store.PasswordChange{}, err
		}
		return db.ConsumePasswordReset(tok, "$argon2id$reset", keys)
	}
	for _, tc := range []struct {
		name string
		do   func(Store, store.Account, store.APIKeyAction) (store.PasswordChange, error)
		by   string
	}{{"change", change, "password_change"}, {"reset", reset, "password_reset"}} {
		t.Run(tc.name+"/revoke", func(t *testing.T) {
			t.Parallel()
			db, a, secrets := setup(t)
			ch, err := tc.do(db, a, store.RevokeAPIKeys)
			if err != nil || ch.KeysRevoked != 2 || ch.KeysFlagged != 0 || ch.AccountID != a.ID {
				t.Fatalf("%+v, %v; want 2 revoked", ch, err)
			}
			for _, s := range secrets {
				if _, err := db.ValidateAPIKey(s); !errors.Is(err, store.ErrNotFound) {
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
			ch, err := tc.do(db, a, store.FlagAPIKeys)
			if err != nil || ch.KeysFlagged != 2 || ch.KeysRevoked != 0 {
				t.Fatalf("%+v, %v; want 2 flagged", ch, err)
			}
			for _, s := range secrets {
				k, err := db.ValidateAPIKey(s)
				if err != nil {
					t.Fatalf("flagged key refused: %v", err)
				}
				if !k.Flagged.Equal(start) || k.FlaggedBy != tc.by || !k.HasScope(store.ScopeImagesWrite) {
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
