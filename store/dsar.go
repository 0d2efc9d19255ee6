package store

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// DSARKind is what a rights request asks for.
type DSARKind string

// Kinds of rights requests (promise R5).
const (
	DSARAccess     DSARKind = "access"
	DSARDeletion   DSARKind = "deletion"
	DSARCorrection DSARKind = "correction"
	DSARObjection  DSARKind = "objection"
	DSAROther      DSARKind = "other"
)

// DSARKinds lists every kind, in the order operators see them.
var DSARKinds = []DSARKind{DSARAccess, DSARDeletion, DSARCorrection, DSARObjection, DSAROther}

// Valid reports whether k is one of DSARKinds.
func (k DSARKind) Valid() bool { return slices.Contains(DSARKinds, k) }

// DSARDeadlineDays is how many days after receipt a request must be
// answered (promise R5).
const DSARDeadlineDays = 30

// DSAR is a rights request received by email. Email and the notes are
// personal data: in the file they exist only sealed with a key of the
// request's own (a slot of the account key file), which ExpireDSARs
// destroys once the request has been closed for the retention period.
type DSAR struct {
	ID   string   `json:"id"`
	Kind DSARKind `json:"kind"`
	// Email is the requester's address; empty once Erased.
	Email string `json:"email"`
	// Received is the UTC day the request arrived (midnight).
	Received time.Time `json:"received"`
	// Deadline is the UTC day by which it must be answered: Received
	// plus DSARDeadlineDays.
	Deadline time.Time `json:"deadline"`
	Note     string    `json:"note,omitempty"`
	// Closed is when the request was answered; zero while open.
	Closed    time.Time `json:"closed,omitzero"`
	CloseNote string    `json:"close_note,omitempty"`
	// Erased reports that the request's key was destroyed: the email and
	// notes are gone for good, the dates remain as the record of
	// compliance.
	Erased bool `json:"erased,omitempty"`
}

// IsOpen reports whether the request still awaits an answer.
func (r DSAR) IsOpen() bool { return r.Closed.IsZero() }

// DaysLeft is the number of whole days from now's UTC day to the
// deadline: 0 on the deadline day, negative once overdue.
func (r DSAR) DaysLeft(now time.Time) int {
	return int(r.Deadline.Sub(utcDay(now)) / (24 * time.Hour))
}

// Overdue reports whether the request is open past its deadline day.
func (r DSAR) Overdue(now time.Time) bool { return r.IsOpen() && r.DaysLeft(now) < 0 }

// NewDSAR is what recording a request needs.
type NewDSAR struct {
	Email string
	Kind  DSARKind
	// Received is when the request arrived; only its UTC day counts. Zero
	// means today.
	Received time.Time
	Note     string
}

// dsarRecord is a DSAR as stored: personal fields sealed with the key in
// slot Slot of the account key file.
type dsarRecord struct {
	ID          string    `json:"id"`
	Slot        uint64    `json:"slot"`
	Kind        DSARKind  `json:"kind"`
	EmailSealed []byte    `json:"email,omitempty"`
	NoteSealed  []byte    `json:"note,omitempty"`
	Received    time.Time `json:"received"`
	Deadline    time.Time `json:"deadline"`
	Created     time.Time `json:"created"`
	Closed      time.Time `json:"closed,omitzero"`
	CloseSealed []byte    `json:"close_note,omitempty"`
	Erased      bool      `json:"erased,omitempty"`
}

// dsarTag labels a request's key slot.
func dsarTag(id string) [tagLen]byte {
	sum := sha256.Sum256([]byte("dsar-key\x00" + id))
	var t [tagLen]byte
	copy(t[:], sum[:])
	return t
}

func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// AddDSAR records a rights request with its deadline. Its id is short
// ("dsar-12") so operators can type it.
func (db *DB) AddDSAR(n NewDSAR) (DSAR, error) {
	email := NormalizeEmail(n.Email)
	var errs []error
	if email == "" {
		errs = append(errs, errors.New("store: rights request needs the requester's email"))
	}
	if !n.Kind.Valid() {
		errs = append(errs, fmt.Errorf("store: rights request kind must be one of %v", DSARKinds))
	}
	now := db.now().UTC()
	received := utcDay(now)
	if !n.Received.IsZero() {
		received = utcDay(n.Received)
	}
	if received.After(utcDay(now)) {
		errs = append(errs, errors.New("store: a rights request cannot be received in the future"))
	}
	if err := errors.Join(errs...); err != nil {
		return DSAR{}, err
	}
	// Key slots come from the same sequence as account slots, so the two
	// never collide in the shared key file.
	slot, err := db.reserveSlot(bucketAccounts)
	if err != nil {
		return DSAR{}, err
	}
	var out DSAR
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDSAR)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		rec := dsarRecord{
			ID: "dsar-" + strconv.FormatUint(seq, 10), Slot: slot, Kind: n.Kind,
			Received: received, Deadline: received.AddDate(0, 0, DSARDeadlineDays), Created: now,
		}
		key, err := db.keys.create(slot, dsarTag(rec.ID))
		if err != nil {
			return err
		}
		if rec.EmailSealed, err = seal(key, "dsar-email:"+rec.ID, []byte(email)); err != nil {
			return err
		}
		if n.Note != "" {
			if rec.NoteSealed, err = seal(key, "dsar-note:"+rec.ID, []byte(n.Note)); err != nil {
				return err
			}
		}
		if err := putJSON(b, []byte(rec.ID), rec); err != nil {
			return err
		}
		out, err = db.openDSAR(rec)
		return err
	})
	return out, err
}

// DSARs returns the open rights requests — overdue first, then by
// deadline — followed, when closed is set, by the closed ones, most
// recently closed first.
func (db *DB) DSARs(closed bool) ([]DSAR, error) {
	var recs []dsarRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDSAR).ForEach(func(_, v []byte) error {
			var rec dsarRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if closed || rec.Closed.IsZero() {
				recs = append(recs, rec)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	now := db.now()
	out := make([]DSAR, 0, len(recs))
	for _, rec := range recs {
		r, err := db.openDSAR(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, CompareDSARs(now))
	return out, nil
}

// cmpDSARID orders ids by their number, so dsar-9 comes before dsar-10.
// CompareDSARs is the order every store lists rights requests in: open
// before closed; open ones overdue first, then by deadline and receipt;
// closed ones most recently closed first.
func CompareDSARs(now time.Time) func(a, b DSAR) int {
	return func(a, b DSAR) int {
		if a.IsOpen() != b.IsOpen() {
			if a.IsOpen() {
				return -1
			}
			return 1
		}
		if !a.IsOpen() {
			return cmp.Or(b.Closed.Compare(a.Closed), strings.Compare(a.ID, b.ID))
		}
		if a.Overdue(now) != b.Overdue(now) {
			if a.Overdue(now) {
				return -1
			}
			return 1
		}
		return cmp.Or(a.Deadline.Compare(b.Deadline), a.Received.Compare(b.Received), cmpDSARID(a.ID, b.ID))
	}
}

func cmpDSARID(a, b string) int {
	return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
}

// DSAR returns one request.
func (db *DB) DSAR(id string) (DSAR, error) {
	var rec dsarRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketDSAR), []byte(id), &rec)
	})
	if err != nil {
		return DSAR{}, err
	}
	return db.openDSAR(rec)
}

// CloseDSAR marks a request answered, with an optional note. Closing a
// closed request is ErrConflict.
func (db *DB) CloseDSAR(id, note string) (DSAR, error) {
	var out DSAR
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDSAR)
		var rec dsarRecord
		if err := getJSON(b, []byte(id), &rec); err != nil {
			return err
		}
		if !rec.Closed.IsZero() {
			return ErrConflict
		}
		rec.Closed = db.now().UTC()
		if note != "" {
			key, err := db.keys.get(rec.Slot, dsarTag(rec.ID))
			if err != nil {
				return err
			}
			if rec.CloseSealed, err = seal(key, "dsar-close:"+rec.ID, []byte(note)); err != nil {
				return err
			}
		}
		if err := putJSON(b, []byte(id), rec); err != nil {
			return err
		}
		var err error
		out, err = db.openDSAR(rec)
		return err
	})
	return out, err
}

// ExpireDSARs applies the retention of closed requests: keepPersonal after
// closing, a request's key is destroyed (its email and notes become
// unreadable everywhere, freed pages and backups included); keepRecord
// after closing, the remaining record (kind and dates) is deleted. It
// returns how many requests it erased and deleted. Open requests are never
// touched. It is idempotent: a crash between destroying a key and
// updating the record is finished by the next call.
func (db *DB) ExpireDSARs(keepPersonal, keepRecord time.Duration) (erased, deleted int, err error) {
	if keepPersonal <= 0 || keepRecord < keepPersonal {
		return 0, 0, errors.New("store: rights-request retention must be positive, the record's at least the personal data's")
	}
	now := db.now().UTC()
	var due []dsarRecord
	err = db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDSAR).ForEach(func(_, v []byte) error {
			var rec dsarRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if !rec.Closed.IsZero() && (!rec.Erased || !now.Before(rec.Closed.Add(keepRecord))) && !now.Before(rec.Closed.Add(keepPersonal)) {
				due = append(due, rec)
			}
			return nil
		})
	})
	if err != nil {
		return 0, 0, err
	}
	for _, rec := range due {
		// The key first: once it is gone, whatever the file still holds
		// of the sealed fields is noise.
		if err := db.keys.destroy(rec.Slot); err != nil {
			return erased, deleted, err
		}
		drop := !now.Before(rec.Closed.Add(keepRecord))
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketDSAR)
			if drop {
				return b.Delete([]byte(rec.ID))
			}
			var cur dsarRecord
			if err := getJSON(b, []byte(rec.ID), &cur); err != nil {
				return err
			}
			cur.Erased, cur.EmailSealed, cur.NoteSealed, cur.CloseSealed = true, nil, nil, nil
			return putJSON(b, []byte(rec.ID), cur)
		})
		if err != nil {
			return erased, deleted, err
		}
		if !rec.Erased {
			erased++
		}
		if drop {
			deleted++
		}
	}
	return erased, deleted, nil
}

// openDSAR decrypts a record. A request whose key is gone opens with its
// personal fields empty and Erased set.
func (db *DB) openDSAR(rec dsarRecord) (DSAR, error) {
	r := DSAR{ID: rec.ID, Kind: rec.Kind, Received: rec.Received, Deadline: rec.Deadline, Closed: rec.Closed, Erased: rec.Erased}
	if rec.Erased {
		return r, nil
	}
	key, err := db.keys.get(rec.Slot, dsarTag(rec.ID))
	if errors.Is(err, ErrKeyDestroyed) {
		r.Erased = true
		return r, nil
	}
	if err != nil {
		return DSAR{}, err
	}
	for _, f := range []struct {
		aad    string
		sealed []byte
		to     *string
	}{
		{"dsar-email:", rec.EmailSealed, &r.Email},
		{"dsar-note:", rec.NoteSealed, &r.Note},
		{"dsar-close:", rec.CloseSealed, &r.CloseNote},
	} {
		if f.sealed == nil {
			continue
		}
		pt, err := unseal(key, f.aad+rec.ID, f.sealed)
		if err != nil {
			return DSAR{}, err
		}
		*f.to = string(pt)
	}
	return r, nil
}
