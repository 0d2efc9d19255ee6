package store

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// CreditSales is what credit packs sold on one UTC day: the credits, and
// the money by currency (minor units).
type CreditSales struct {
	Day     string           `json:"day"` // YYYY-MM-DD
	Credits int64            `json:"credits"`
	Money   map[string]int64 `json:"money"`
}

// CreditSalesDays sums the purchase entries of every account's ledger per
// UTC day from from to to (inclusive days), oldest first; days without a
// sale are left out. It reads the whole ledger, so it is for operators'
// occasional figures (the dashboard), not for request paths.
func (db *DB) CreditSalesDays(from, to time.Time) ([]CreditSales, error) {
	lo, hi := from.UTC().Format(time.DateOnly), to.UTC().Format(time.DateOnly)
	byDay := map[string]*CreditSales{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLedger).ForEach(func(_, v []byte) error {
			var e LedgerEntry
			if err := decodeRecord(v, &e); err != nil {
				return err
			}
			day := e.Time.UTC().Format(time.DateOnly)
			if e.Kind != KindPurchase || day < lo || day > hi {
				return nil
			}
			s := byDay[day]
			if s == nil {
				s = &CreditSales{Day: day, Money: map[string]int64{}}
				byDay[day] = s
			}
			s.Credits += e.Amount
			if e.Currency != "" {
				s.Money[e.Currency] += e.MoneyMinor
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var out []CreditSales
	for d := utcDay(from); !d.After(utcDay(to)); d = d.AddDate(0, 0, 1) {
		if s := byDay[d.Format(time.DateOnly)]; s != nil {
			out = append(out, *s)
		}
	}
	return out, nil
}
