package postgres

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
)

// While another node holds the sweep lease, a sweep touches nothing and
// says so; once the lease is free it sweeps. The lease dies with its
// holder's connection, so a node that crashes mid-sweep frees it.
func TestSweepWaitsForTheLease(t *testing.T) {
	clock := testpeer.NewClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	pg := testpeer.StartPostgres(t)
	db, err := Open(t.Context(), Config{URL: pg.NewDatabase(t), KeyPath: filepath.Join(t.TempDir(), "imagegate.db"), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a, err := db.CreateAccount(store.NewAccount{Email: "lease@example.com", Plan: "free", AgeAttested: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, _, err := db.CreateSession(a.ID, store.SessionPolicy{Idle: time.Hour, Absolute: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Hour)

	other, err := db.pool.Acquire(t.Context()) // another node's session
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, sweepLock); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Sweep(t.Context(), store.Retention{}); !errors.Is(err, ErrSweepRunning) {
		t.Errorf("sweep while another node holds the lease: %v, want ErrSweepRunning", err)
	}
	if n := db.SessionCount(a.ID); n != 5 {
		t.Errorf("a refused sweep removed sessions: %d left, want 5", n)
	}
	// The holder dies. Closing the socket alone races the server, which
	// frees the lock only when the backend process has exited, so the test
	// kills the backend and waits (pg_terminate_backend with a timeout
	// returns once the process, and every lock it held, is gone).
	var pid uint32
	if err := other.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var gone bool
	if err := db.pool.QueryRow(t.Context(), `SELECT pg_terminate_backend($1, 60000)`, int32(pid)).Scan(&gone); err != nil || !gone {
		t.Fatalf("terminating the lease holder: %v, %v", gone, err)
	}
	_ = other.Conn().Close(context.Background())
	other.Release()
	rep, err := db.Sweep(t.Context(), store.Retention{})
	if err != nil || rep.Sessions != 5 {
		t.Errorf("sweep after the holder died = %+v, %v; want 5 sessions", rep, err)
	}
}
