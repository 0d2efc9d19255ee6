package testpeer

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The cluster accepts connections, and each NewDatabase is a separate,
// empty database: a table made in one is absent from the next.
func TestPostgresDatabasesAreSeparate(t *testing.T) {
	pg := StartPostgres(t)
	ctx := context.Background()
	first, err := pgx.Connect(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	if _, err := first.Exec(ctx, "CREATE TABLE marker (n int)"); err != nil {
		t.Fatal(err)
	}
	second, err := pgx.Connect(ctx, pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(ctx)
	var n int
	if err := second.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a fresh database sees %d marker tables from another", n)
	}
}
