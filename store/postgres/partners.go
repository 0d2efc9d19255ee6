package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

const partnerCols = `id, name, origins, monthly_quota, rate_limit, plan, disabled, publishable_key,
	secret_hint, webhook_url, webhook_secret, created, updated`

func scanPartner(row pgx.Row) (store.Partner, error) {
	var p store.Partner
	err := row.Scan(&p.ID, &p.Name, &p.Origins, &p.MonthlyQuota, &p.RateLimit, &p.Plan, &p.Disabled, &p.PublishableKey,
		&p.SecretHint, &p.WebhookURL, &p.WebhookSecret, &p.Created, &p.Updated)
	p.Created, p.Updated = p.Created.UTC(), p.Updated.UTC()
	return p, notFound(err)
}

// CreatePartner validates and stores a partner with fresh keys. It returns
// the secret key, which is not kept (only its SHA-256) and cannot be
// shown again.
func (db *DB) CreatePartner(n store.NewPartner) (store.Partner, string, error) {
	now := db.now().UTC()
	p := store.Partner{
		ID: store.NewID("ptr_"), Name: n.Name, Origins: n.Origins, MonthlyQuota: n.MonthlyQuota,
		RateLimit: n.RateLimit, Plan: n.Plan, WebhookURL: n.WebhookURL, Created: now, Updated: now,
	}
	if err := store.CheckPartner(&p); err != nil {
		return store.Partner{}, "", err
	}
	p.PublishableKey, _ = store.NewToken(store.PublishableKeyPrefix, 18)
	secret, hash := store.NewToken(store.PartnerSecretPrefix, 24)
	p.SecretHint = secret[:len(store.PartnerSecretPrefix)+4]
	if p.WebhookURL != "" {
		p.WebhookSecret = store.NewWebhookSecret()
	}
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO partners (`+partnerCols+`, secret_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			p.ID, p.Name, p.Origins, p.MonthlyQuota, p.RateLimit, p.Plan, p.Disabled, p.PublishableKey,
			p.SecretHint, p.WebhookURL, p.WebhookSecret, p.Created, p.Updated, hash)
		return err
	})
	if err != nil {
		return store.Partner{}, "", err
	}
	return p, secret, nil
}

// Partner returns one partner.
func (db *DB) Partner(id string) (store.Partner, error) {
	ctx, cancel := db.op()
	defer cancel()
	return scanPartner(db.pool.QueryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE id = $1`, id))
}

// Partners lists every partner, oldest first.
func (db *DB) Partners() ([]store.Partner, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT `+partnerCols+` FROM partners ORDER BY created, id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Partner, error) { return scanPartner(row) })
}

// PartnerByPublishableKey returns the partner whose publishable key is
// pk, disabled or not (the caller decides), or store.ErrNotFound.
func (db *DB) PartnerByPublishableKey(pk string) (store.Partner, error) {
	ctx, cancel := db.op()
	defer cancel()
	return scanPartner(db.pool.QueryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE publishable_key = $1`, pk))
}

// PartnerBySecret returns the partner whose secret key is secret, or
// store.ErrNotFound.
func (db *DB) PartnerBySecret(secret string) (store.Partner, error) {
	ctx, cancel := db.op()
	defer cancel()
	return scanPartner(db.pool.QueryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE secret_hash = $1`, store.HashToken(secret)))
}

// UpdatePartner applies ch to partner id after validating the result, as
// the bbolt store does; the row is locked so concurrent updates from
// other gateways apply one after the other.
func (db *DB) UpdatePartner(id string, ch store.PartnerChange) (store.Partner, error) {
	var p store.Partner
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		p, err = scanPartner(tx.QueryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		store.ApplyPartnerChange(&p, ch)
		if err := store.CheckPartner(&p); err != nil {
			return err
		}
		p.Updated = db.now().UTC()
		_, err = tx.Exec(ctx, `UPDATE partners SET name = $2, origins = $3, monthly_quota = $4, rate_limit = $5, plan = $6,
			disabled = $7, webhook_url = $8, webhook_secret = $9, updated = $10 WHERE id = $1`,
			p.ID, p.Name, p.Origins, p.MonthlyQuota, p.RateLimit, p.Plan, p.Disabled, p.WebhookURL, p.WebhookSecret, p.Updated)
		return err
	})
	if err != nil {
		return store.Partner{}, err
	}
	return p, nil
}

// ReservePartnerImages adds n images to the partner's count for day's UTC
// day, refusing with store.ErrPartnerQuota when the calendar month's total
// would exceed the partner's monthly quota. A negative n gives images back
// and never fails on the quota. The partner's row is locked (FOR UPDATE)
// while the month is summed and the day counted, so reservations from
// every gateway on the database apply one at a time and cannot overshoot.
func (db *DB) ReservePartnerImages(id string, day time.Time, n int) error {
	d := utcDate(day)
	return db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var quota int
		if err := tx.QueryRow(ctx, `SELECT monthly_quota FROM partners WHERE id = $1 FOR UPDATE`, id).Scan(&quota); err != nil {
			return notFound(err)
		}
		if n > 0 {
			month, err := monthUsage(ctx, tx, id, d)
			if err != nil {
				return err
			}
			if month+n > quota {
				return store.ErrPartnerQuota
			}
		}
		var images int64
		err := tx.QueryRow(ctx, `SELECT images FROM partner_usage WHERE partner_id = $1 AND day = $2`, id, d).Scan(&images)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		images += int64(n)
		if images <= 0 {
			_, err = tx.Exec(ctx, `DELETE FROM partner_usage WHERE partner_id = $1 AND day = $2`, id, d)
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO partner_usage (partner_id, day, images) VALUES ($1, $2, $3)
			ON CONFLICT (partner_id, day) DO UPDATE SET images = excluded.images`, id, d, images)
		return err
	})
}

// utcDate is t's UTC calendar day at midnight, as a date column holds it.
func utcDate(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// monthUsage sums the partner's images in day's UTC calendar month.
func monthUsage(ctx context.Context, q querier, id string, day time.Time) (int, error) {
	first := time.Date(day.Year(), day.Month(), 1, 0, 0, 0, 0, time.UTC)
	var n int64
	err := q.QueryRow(ctx, `SELECT coalesce(sum(images), 0) FROM partner_usage WHERE partner_id = $1 AND day >= $2 AND day < $3`,
		id, first, first.AddDate(0, 1, 0)).Scan(&n)
	return int(n), err
}

// PartnerMonthUsage is the partner's image count in month's UTC calendar
// month.
func (db *DB) PartnerMonthUsage(id string, month time.Time) (int, error) {
	ctx, cancel := db.op()
	defer cancel()
	return monthUsage(ctx, db.pool, id, utcDate(month))
}

// PartnerUsageDays lists the partner's images per UTC day from from to to
// (inclusive days), oldest first; days without images are left out.
func (db *DB) PartnerUsageDays(id string, from, to time.Time) ([]store.PartnerUsage, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT to_char(day, 'YYYY-MM-DD'), images FROM partner_usage
		WHERE partner_id = $1 AND day >= $2 AND day <= $3 ORDER BY day`, id, utcDate(from), utcDate(to))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.PartnerUsage, error) {
		var u store.PartnerUsage
		var images int64
		err := row.Scan(&u.Day, &images)
		u.Images = int(images)
		return u, err
	})
}
