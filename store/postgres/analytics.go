package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// RecordPageView adds one page view to the day aggregates (promise K3:
// only aggregates exist). The day rows are locked, so views counted by
// several gateways at once all count.
func (db *DB) RecordPageView(v store.PageView) error {
	if err := v.Validate(); err != nil {
		return err
	}
	now := db.now().UTC()
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		days := map[string]*store.AnalyticsDay{}
		load := func(t time.Time) (*store.AnalyticsDay, error) {
			k := store.AnalyticsDayKey(t)
			if d, ok := days[k]; ok {
				return d, nil
			}
			d := store.NewAnalyticsDay(k)
			if _, err := tx.Exec(ctx, `INSERT INTO analytics_days (day, record) VALUES ($1, '\x7b7d') ON CONFLICT DO NOTHING`, k); err != nil {
				return nil, err
			}
			var raw []byte
			if err := tx.QueryRow(ctx, `SELECT record FROM analytics_days WHERE day = $1 FOR UPDATE`, k).Scan(&raw); err != nil {
				return nil, err
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				return nil, fmt.Errorf("postgres: decode analytics: %w", err)
			}
			days[k] = &d
			return &d, nil
		}
		if err := store.ApplyPageView(load, v, now); err != nil {
			return err
		}
		for k, d := range days {
			raw, err := json.Marshal(d)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE analytics_days SET record = $2 WHERE day = $1`, k, raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// Analytics returns the aggregates of the days from from to to, inclusive.
func (db *DB) Analytics(from, to time.Time) ([]store.AnalyticsDay, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT day, record FROM analytics_days WHERE day >= $1 AND day <= $2 ORDER BY day`,
		store.AnalyticsDayKey(from), store.AnalyticsDayKey(to))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AnalyticsDay, error) {
		var day string
		var raw []byte
		if err := row.Scan(&day, &raw); err != nil {
			return store.AnalyticsDay{}, err
		}
		d := store.NewAnalyticsDay(day)
		return d, json.Unmarshal(raw, &d)
	})
}

// statsTimeout bounds one statistics export, a scan of all generations.
const statsTimeout = 10 * time.Minute

// ExportStats returns the k-anonymous generation statistics (promise C4),
// aggregated by the same rule as the bbolt store.
func (db *DB) ExportStats(k int) (store.StatsExport, error) {
	if k < store.MinStatsK {
		return store.StatsExport{}, fmt.Errorf("postgres: k must be at least %d", store.MinStatsK)
	}
	// One pass over every generation: bounded by its own, longer deadline.
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	// Only eligible accounts: active and not opted out of model
	// improvement; ordered so each account's rows come together.
	rows, err := db.pool.Query(ctx, `SELECT g.account_id, g.record FROM generations g JOIN accounts a ON a.id = g.account_id
		WHERE a.status = $1 AND NOT coalesce((a.settings->>'no_model_improvement')::boolean, false)
		ORDER BY g.account_id, g.id`, store.StatusActive)
	if err != nil {
		return store.StatsExport{}, err
	}
	defer rows.Close()
	sb := store.NewStatsBuilder()
	cur := ""
	for rows.Next() {
		var id string
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			return store.StatsExport{}, err
		}
		if id != cur {
			sb.NextAccount()
			cur = id
		}
		var g store.Generation
		if err := json.Unmarshal(raw, &g); err != nil {
			return store.StatsExport{}, err
		}
		sb.Add(g)
	}
	if err := rows.Err(); err != nil {
		return store.StatsExport{}, err
	}
	return sb.Export(k, db.now()), nil
}
