package store

import (
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Consent sources: where a choice was made.
const (
	ConsentBanner   = "banner"
	ConsentSettings = "settings"
	ConsentGPC      = "gpc" // a Sec-GPC: 1 request header (promise K2)
	ConsentAPI      = "api"
)

// Consent is one recorded cookie choice (promise K5): what the visitor
// allowed, under which revision of the cookie policy, when and how.
// Records are append-only; the latest one for a subject is in force.
type Consent struct {
	// Subject is whose choice it is: the account id when the visitor is
	// signed in, else the visitor id from the consent cookie.
	Subject string `json:"subject"`
	// Visitor is the consent cookie's visitor id (the browser).
	Visitor     string    `json:"visitor,omitempty"`
	Revision    int       `json:"revision"`
	Preferences bool      `json:"preferences"`
	Analytics   bool      `json:"analytics"`
	Source      string    `json:"source"`
	Time        time.Time `json:"time"`
}

// RecordConsent appends a choice, stamping its time.
func (db *DB) RecordConsent(c Consent) (Consent, error) {
	if c.Subject == "" || c.Source == "" {
		return Consent{}, errors.New("store: consent needs a subject and a source")
	}
	c.Time = db.now().UTC()
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConsents)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		return putJSON(b, compositeKey([]byte(c.Subject), u64(seq)), c)
	})
	return c, err
}

// Consents returns a subject's choices, oldest first.
func (db *DB) Consents(subject string) ([]Consent, error) {
	var out []Consent
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConsents)
		for _, k := range prefixKeys(b, compositeKey([]byte(subject), nil)) {
			var c Consent
			if err := getJSON(b, k, &c); err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// LatestConsent returns the choice in force for subject, or ErrNotFound.
func (db *DB) LatestConsent(subject string) (Consent, error) {
	all, err := db.Consents(subject)
	if err != nil {
		return Consent{}, err
	}
	if len(all) == 0 {
		return Consent{}, ErrNotFound
	}
	return all[len(all)-1], nil
}
