package postgres

import (
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// RecordConsent appends a choice, stamping its time.
func (db *DB) RecordConsent(c store.Consent) (store.Consent, error) {
	if c.Subject == "" || c.Source == "" {
		return store.Consent{}, errors.New("postgres: consent needs a subject and a source")
	}
	c.Time = db.now().UTC()
	ctx, cancel := db.op()
	defer cancel()
	_, err := db.pool.Exec(ctx, `INSERT INTO consents (subject, visitor, revision, preferences, analytics, source, time)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, c.Subject, c.Visitor, c.Revision, c.Preferences, c.Analytics, c.Source, c.Time)
	if err != nil {
		return store.Consent{}, err
	}
	return c, nil
}

// Consents returns a subject's choices, oldest first.
func (db *DB) Consents(subject string) ([]store.Consent, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT subject, visitor, revision, preferences, analytics, source, time
		FROM consents WHERE subject = $1 ORDER BY seq`, subject)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Consent, error) {
		var c store.Consent
		err := row.Scan(&c.Subject, &c.Visitor, &c.Revision, &c.Preferences, &c.Analytics, &c.Source, &c.Time)
		c.Time = c.Time.UTC()
		return c, err
	})
}

// LatestConsent returns the choice in force for subject, or
// store.ErrNotFound.
func (db *DB) LatestConsent(subject string) (store.Consent, error) {
	all, err := db.Consents(subject)
	if err != nil {
		return store.Consent{}, err
	}
	if len(all) == 0 {
		return store.Consent{}, store.ErrNotFound
	}
	return all[len(all)-1], nil
}
