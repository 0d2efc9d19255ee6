package postgres

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// Migrate applies every embedded migration once, applies nothing the
// second time, and refuses a database newer than the binary.
func TestMigrateOnceAndRefuseNewer(t *testing.T) {
	pg := testpeer.StartPostgres(t)
	pool, err := pgxpool.New(t.Context(), pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	all, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Migrate(t.Context(), pool)
	if err != nil || len(got) != len(all) || len(all) < 4 {
		t.Fatalf("first Migrate applied %v, %v; want all %d", got, err, len(all))
	}
	if got, err := Migrate(t.Context(), pool); err != nil || len(got) != 0 {
		t.Errorf("second Migrate applied %v, %v; want nothing", got, err)
	}
	if _, err := pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES ($1, 'from_the_future.sql')`, len(all)+1); err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(t.Context(), pool); err == nil || !strings.Contains(err.Error(), "refusing to downgrade") {
		t.Errorf("Migrate on a newer database: %v, want a refusal", err)
	}
}
