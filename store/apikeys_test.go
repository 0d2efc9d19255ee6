package store

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
)

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
