package store

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Where apparent CSAM was found.
const (
	ReportFromPrompt = "prompt" // the request, before anything was generated
	ReportFromOutput = "output" // a generated image, before it was stored
)

// Report records apparent CSAM for the operator's legal reporting duty
// (promise C6). It is kept under a legal hold until HoldUntil — through
// every erasure request, which never touches reports — and then destroyed
// by SweepReports.
//
// Everything that could identify a person or describe the material is
// sealed with a key of the report's own, kept in the report key file
// outside bbolt: destroying that key when the hold ends makes every copy
// of the report (freed pages, old backups) unreadable.
type Report struct {
	ID        string
	Created   time.Time
	HoldUntil time.Time
	// Category is the moderation category that flagged the content.
	Category string
	// Source is ReportFromPrompt or ReportFromOutput.
	Source string

	// AccountID is the account that asked; empty for a visitor without
	// one, whose ClientIP is kept instead.
	AccountID      string
	ClientIP       string
	Prompt         string
	NegativePrompt string
	// Params are the request's other parameters (model, size, seed…).
	Params map[string]string
	// Image is the material, if there was an image: the flagged output
	// (which is kept here and never in the object store) or the reference
	// image of an image-to-image request. Only Report returns the bytes;
	// Reports leaves Image nil and fills ImageSize.
	Image       []byte
	ContentType string
	// ImageSHA256 is the image's SHA-256, hex: the name the object store
	// would have given it.
	ImageSHA256 string
	ImageSize   int
}

// reportRecord is a report as stored: the identifying part sealed.
type reportRecord struct {
	ID        string    `json:"id"`
	Slot      uint64    `json:"slot"`
	Created   time.Time `json:"created"`
	HoldUntil time.Time `json:"hold_until"`
	Category  string    `json:"category"`
	Source    string    `json:"source"`
	ImageSize int       `json:"image_size,omitempty"`
	Details   []byte    `json:"details"`
}

// ReportDetails is the sealed part of a report, the same JSON in every
// store (store copy moves it sealed, unread).
type ReportDetails struct {
	AccountID      string            `json:"account,omitempty"`
	ClientIP       string            `json:"ip,omitempty"`
	Prompt         string            `json:"prompt"`
	NegativePrompt string            `json:"negative_prompt,omitempty"`
	Params         map[string]string `json:"params,omitempty"`
	ContentType    string            `json:"content_type,omitempty"`
	ImageSHA256    string            `json:"image_sha256,omitempty"`
}

// NewReportID orders reports by creation time, so a cursor lists them
// newest first.
func NewReportID(now time.Time) string {
	var b [5]byte
	rand.Read(b[:])
	return fmt.Sprintf("rpt_%016x%s", now.UnixNano(), idEncoding.EncodeToString(b[:]))
}

// reportTag labels a report's key slot.
func reportTag(id string) [tagLen]byte {
	sum := sha256.Sum256([]byte("report-key\x00" + id))
	var t [tagLen]byte
	copy(t[:], sum[:])
	return t
}

// reportImageKey is where a report's sealed image lives, right after the
// record in key order.
func reportImageKey(id string) []byte { return compositeKey([]byte(id), []byte("image")) }

// CreateReport records r under a legal hold of hold from now, stamping
// its ID, Created, HoldUntil and image digest. The key is made durable
// before the record is written.
func (db *DB) CreateReport(r Report, hold time.Duration) (Report, error) {
	var errs []error
	if r.Category == "" {
		errs = append(errs, errors.New("store: report needs a category"))
	}
	if r.Source != ReportFromPrompt && r.Source != ReportFromOutput {
		errs = append(errs, fmt.Errorf("store: report source %q must be %s or %s", r.Source, ReportFromPrompt, ReportFromOutput))
	}
	if hold <= 0 {
		errs = append(errs, errors.New("store: report needs a positive hold"))
	}
	if err := errors.Join(errs...); err != nil {
		return Report{}, err
	}
	now := db.now().UTC()
	r.ID, r.Created, r.HoldUntil = NewReportID(now), now, now.Add(hold)
	r.ImageSize, r.ImageSHA256 = len(r.Image), ""
	if len(r.Image) > 0 {
		sum := sha256.Sum256(r.Image)
		r.ImageSHA256 = hex.EncodeToString(sum[:])
	}
	details, err := json.Marshal(ReportDetails{
		AccountID: r.AccountID, ClientIP: r.ClientIP, Prompt: r.Prompt, NegativePrompt: r.NegativePrompt,
		Params: r.Params, ContentType: r.ContentType, ImageSHA256: r.ImageSHA256,
	})
	if err != nil {
		return Report{}, fmt.Errorf("store: encode report: %w", err)
	}
	slot, err := db.reserveSlot(bucketReports)
	if err != nil {
		return Report{}, err
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReports)
		key, err := db.reportKeys.create(slot, reportTag(r.ID))
		if err != nil {
			return err
		}
		rec := reportRecord{ID: r.ID, Slot: slot, Created: r.Created, HoldUntil: r.HoldUntil,
			Category: r.Category, Source: r.Source, ImageSize: r.ImageSize}
		if rec.Details, err = seal(key, "report:"+r.ID, details); err != nil {
			return err
		}
		if len(r.Image) > 0 {
			img, err := seal(key, "report-image:"+r.ID, r.Image)
			if err != nil {
				return err
			}
			if err := b.Put(reportImageKey(r.ID), img); err != nil {
				return err
			}
		}
		return putJSON(b, []byte(r.ID), rec)
	})
	if err != nil {
		// The slot is spent (reserved and committed): an orphan key seals
		// nothing. Never destroy it: the commit may have reached the disk.
		return Report{}, err
	}
	return r, nil
}

// Reports returns every report not yet swept, newest first, without
// image bytes.
func (db *DB) Reports() ([]Report, error) {
	var out []Report
	err := db.bolt.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketReports).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if bytes.IndexByte(k, 0) >= 0 {
				continue // an image
			}
			r, _, err := db.openReport(v)
			if errors.Is(err, ErrKeyDestroyed) {
				continue // swept midway: the record is noise and goes next sweep
			}
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Report returns one report, image included, or ErrNotFound.
func (db *DB) Report(id string) (Report, error) {
	var r Report
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReports)
		v := b.Get([]byte(id))
		if v == nil || bytes.IndexByte([]byte(id), 0) >= 0 {
			return ErrNotFound
		}
		var key []byte
		var err error
		if r, key, err = db.openReport(v); err != nil {
			if errors.Is(err, ErrKeyDestroyed) {
				return ErrNotFound
			}
			return err
		}
		if sealed := b.Get(reportImageKey(id)); sealed != nil {
			// unseal allocates, so the image outlives the transaction.
			r.Image, err = unseal(key, "report-image:"+id, sealed)
		}
		return err
	})
	return r, err
}

// openReport decodes and unseals a stored report (without its image) and
// returns its key.
func (db *DB) openReport(v []byte) (Report, []byte, error) {
	var rec reportRecord
	if err := decodeRecord(v, &rec); err != nil {
		return Report{}, nil, err
	}
	key, err := db.reportKeys.get(rec.Slot, reportTag(rec.ID))
	if err != nil {
		return Report{}, nil, err
	}
	plain, err := unseal(key, "report:"+rec.ID, rec.Details)
	if err != nil {
		return Report{}, nil, err
	}
	var d ReportDetails
	if err := decodeRecord(plain, &d); err != nil {
		return Report{}, nil, err
	}
	return Report{
		ID: rec.ID, Created: rec.Created, HoldUntil: rec.HoldUntil, Category: rec.Category, Source: rec.Source,
		AccountID: d.AccountID, ClientIP: d.ClientIP, Prompt: d.Prompt, NegativePrompt: d.NegativePrompt,
		Params: d.Params, ContentType: d.ContentType, ImageSHA256: d.ImageSHA256, ImageSize: rec.ImageSize,
	}, key, nil
}

// SweepReports destroys every report whose hold has ended and returns how
// many. Each report's key is destroyed first and its record deleted
// after, so a crash in between leaves only an unreadable record, which
// the next sweep deletes. Idempotent; each batch is one short
// transaction.
func (db *DB) SweepReports() (int, error) {
	total := 0
	for {
		now := db.now()
		type due struct {
			id   string
			slot uint64
		}
		var batch []due
		err := db.bolt.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketReports).Cursor()
			for k, v := c.First(); k != nil && len(batch) < sweepBatch; k, v = c.Next() {
				if bytes.IndexByte(k, 0) >= 0 {
					continue // an image
				}
				var rec reportRecord
				if err := decodeRecord(v, &rec); err != nil {
					return err
				}
				if !now.Before(rec.HoldUntil) {
					batch = append(batch, due{rec.ID, rec.Slot})
				}
			}
			return nil
		})
		if err != nil || len(batch) == 0 {
			return total, err
		}
		for _, d := range batch {
			if err := db.reportKeys.destroy(d.slot); err != nil {
				return total, err
			}
		}
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketReports)
			for _, d := range batch {
				if err := b.Delete([]byte(d.id)); err != nil {
					return err
				}
				if err := b.Delete(reportImageKey(d.id)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += len(batch)
		if len(batch) < sweepBatch {
			return total, nil
		}
	}
}
