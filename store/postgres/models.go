package postgres

import (
	"encoding/json"
	"fmt"

	"github.com/imagegate/imagegate/store"
)

// SaveModels replaces the stored model catalogue.
func (db *DB) SaveModels(models []store.Model) error {
	v, err := json.Marshal(models)
	if err != nil {
		return fmt.Errorf("postgres: encode models: %w", err)
	}
	ctx, cancel := db.op()
	defer cancel()
	_, err = db.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('models', $1)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, v)
	return err
}

// Models returns the stored catalogue, or store.ErrNotFound before the
// first save.
func (db *DB) Models() ([]store.Model, error) {
	ctx, cancel := db.op()
	defer cancel()
	var v []byte
	if err := db.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'models'`).Scan(&v); err != nil {
		return nil, notFound(err)
	}
	var models []store.Model
	if err := json.Unmarshal(v, &models); err != nil {
		return nil, fmt.Errorf("postgres: decode models: %w", err)
	}
	return models, nil
}
