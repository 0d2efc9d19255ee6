package postgres_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testpeer"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
)

// ledgerStore is what the ledger benchmark drives.
type ledgerStore interface {
	CreateAccount(store.NewAccount) (store.Account, error)
	AddCredit(accountID string, c store.Credit) (store.LedgerEntry, bool, error)
	Reserve(accountID string, amount int64, ref string) (store.Hold, error)
	CommitHold(holdID string) (store.LedgerEntry, error)
}

// BenchmarkLedger measures one generation's ledger work (reserve, then
// commit) on bbolt and on PostgreSQL in the same run, 8 accounts spent
// from 8 goroutines, and reports each store's operations per second and
// p99 latency and PostgreSQL's cost relative to bbolt (pg/bbolt). The
// PostgreSQL server is a local throwaway cluster with fsync off, so the
// ratio is the protocol and locking overhead, not disk or network.
func BenchmarkLedger(b *testing.B) {
	pg := testpeer.StartPostgres(b)
	bolt, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "imagegate.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer bolt.Close()
	pdb, err := postgres.Open(b.Context(), postgres.Config{URL: pg.NewDatabase(b), KeyPath: filepath.Join(b.TempDir(), "imagegate.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer pdb.Close()

	run := func(s ledgerStore, n int) (perSec float64, p99 time.Duration) {
		const workers = 8
		var ids []string
		for i := range workers {
			a, err := s.CreateAccount(store.NewAccount{Email: fmt.Sprintf("bench%d-%d@example.com", i, n), Plan: "free", AgeAttested: time.Now()})
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := s.AddCredit(a.ID, store.Credit{Kind: store.KindGrant, Amount: int64(n) + 1, Ref: "bench"}); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, a.ID)
		}
		lat := make([][]time.Duration, workers)
		start := time.Now()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					t0 := time.Now()
					h, err := s.Reserve(ids[w], 1, "gen")
					if err == nil {
						_, err = s.CommitHold(h.ID)
					}
					if err != nil {
						b.Error(err)
						return
					}
					lat[w] = append(lat[w], time.Since(t0))
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		all := slices.Concat(lat...)
		slices.Sort(all)
		if len(all) == 0 {
			return 0, 0
		}
		return float64(len(all)) / elapsed.Seconds(), all[(len(all)*99)/100]
	}
	b.ResetTimer()
	boltRate, boltP99 := run(bolt, b.N)
	pgRate, pgP99 := run(pdb, b.N)
	b.StopTimer()
	b.ReportMetric(boltRate, "bbolt-ops/s")
	b.ReportMetric(float64(boltP99.Microseconds()), "bbolt-p99-µs")
	b.ReportMetric(pgRate, "pg-ops/s")
	b.ReportMetric(float64(pgP99.Microseconds()), "pg-p99-µs")
	if pgRate > 0 {
		b.ReportMetric(boltRate/pgRate, "pg/bbolt-time")
	}
}
