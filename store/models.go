package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Model is the part of an inference backend's description that cache keys
// depend on. It is persisted so a restarted gateway derives the same keys
// before the inference tier is reachable.
type Model struct {
	Name            string   `json:"name"`
	Version         string   `json:"version"`
	Kind            string   `json:"kind"`
	Description     string   `json:"description"`
	Styles          []string `json:"styles"`
	Sizes           []int    `json:"sizes"`
	SupportsEdits   bool     `json:"supports_edits"`
	CaseInsensitive bool     `json:"case_insensitive"`
	PriceCredits    int64    `json:"price_credits,omitempty"`
}

// SaveModels replaces the stored model catalogue.
func (db *DB) SaveModels(models []Model) error {
	v, err := json.Marshal(models)
	if err != nil {
		return fmt.Errorf("store: encode models: %w", err)
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyModels, v)
	})
}

// Models returns the stored catalogue, or ErrNotFound before the first save.
func (db *DB) Models() ([]Model, error) {
	var models []Model
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyModels)
		if v == nil {
			return ErrNotFound
		}
		// Unmarshal copies, so nothing outlives the transaction.
		return json.Unmarshal(v, &models)
	})
	if err != nil {
		return nil, err
	}
	return models, nil
}
