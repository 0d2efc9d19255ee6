package postgres

import (
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// CreditSalesDays sums the purchase entries of every account's ledger per
// UTC day from from to to (inclusive days), oldest first; days without a
// sale are left out. For operators' occasional figures (the dashboard).
func (db *DB) CreditSalesDays(from, to time.Time) ([]store.CreditSales, error) {
	ctx, cancel := db.op()
	defer cancel()
	lo := utcDate(from)
	hi := utcDate(to).AddDate(0, 0, 1)
	rows, err := db.pool.Query(ctx, `SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, currency, sum(amount), sum(money_minor)
		FROM ledger WHERE kind = $1 AND time >= $2 AND time < $3 GROUP BY day, currency ORDER BY day, currency`,
		store.KindPurchase, lo, hi)
	if err != nil {
		return nil, err
	}
	var out []store.CreditSales
	var day, currency string
	var credits, money int64
	_, err = pgx.ForEachRow(rows, []any{&day, &currency, &credits, &money}, func() error {
		if len(out) == 0 || out[len(out)-1].Day != day {
			out = append(out, store.CreditSales{Day: day, Money: map[string]int64{}})
		}
		s := &out[len(out)-1]
		s.Credits += credits
		if currency != "" {
			s.Money[currency] += money
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
