package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

type dsarRow struct {
	ID          string
	Slot        int64
	Kind        store.DSARKind
	EmailSealed []byte
	NoteSealed  []byte
	Received    time.Time
	Deadline    time.Time
	Closed      *time.Time
	CloseSealed []byte
	Erased      bool
}

const dsarCols = `id, slot, kind, email_sealed, note_sealed, received, deadline, closed, close_sealed, erased`

func scanDSAR(row pgx.Row) (dsarRow, error) {
	var r dsarRow
	err := row.Scan(&r.ID, &r.Slot, &r.Kind, &r.EmailSealed, &r.NoteSealed, &r.Received, &r.Deadline, &r.Closed, &r.CloseSealed, &r.Erased)
	return r, notFound(err)
}

// AddDSAR records a rights request received by email; its email and note
// are sealed with a key of its own, destroyed 90 days after closing.
func (db *DB) AddDSAR(n store.NewDSAR) (store.DSAR, error) {
	email := store.NormalizeEmail(n.Email)
	var errs []error
	if email == "" {
		errs = append(errs, errors.New("postgres: rights request needs the requester's email"))
	}
	if !n.Kind.Valid() {
		errs = append(errs, fmt.Errorf("postgres: rights request kind must be one of %v", store.DSARKinds))
	}
	now := db.now().UTC()
	received := store.UTCDay(now)
	if !n.Received.IsZero() {
		received = store.UTCDay(n.Received)
	}
	if received.After(store.UTCDay(now)) {
		errs = append(errs, errors.New("postgres: a rights request cannot be received in the future"))
	}
	if err := errors.Join(errs...); err != nil {
		return store.DSAR{}, err
	}
	ctx, cancel := db.op()
	defer cancel()
	var slot, seq int64
	if err := db.pool.QueryRow(ctx, `SELECT nextval('account_key_slots'), nextval('dsar_seq')`).Scan(&slot, &seq); err != nil {
		return store.DSAR{}, err
	}
	r := dsarRow{ID: "dsar-" + strconv.FormatInt(seq, 10), Slot: slot, Kind: n.Kind, Received: received,
		Deadline: received.AddDate(0, 0, store.DSARDeadlineDays)}
	key, err := db.keys.CreateDSARKey(uint64(slot), r.ID)
	if err != nil {
		return store.DSAR{}, err
	}
	if r.EmailSealed, err = store.Seal(key, "dsar-email:"+r.ID, []byte(email)); err != nil {
		return store.DSAR{}, err
	}
	if n.Note != "" {
		if r.NoteSealed, err = store.Seal(key, "dsar-note:"+r.ID, []byte(n.Note)); err != nil {
			return store.DSAR{}, err
		}
	}
	_, err = db.pool.Exec(ctx, `INSERT INTO dsar_requests (id, slot, kind, email_sealed, note_sealed, received, deadline, created)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, r.ID, r.Slot, r.Kind, r.EmailSealed, r.NoteSealed, r.Received, r.Deadline, now)
	if err != nil {
		return store.DSAR{}, err
	}
	return db.openDSAR(r)
}

// DSARs lists open requests (overdue first, then by deadline), and with
// closed also the closed ones after them, newest closed first.
func (db *DB) DSARs(closed bool) ([]store.DSAR, error) {
	ctx, cancel := db.op()
	defer cancel()
	q := `SELECT ` + dsarCols + ` FROM dsar_requests`
	if !closed {
		q += ` WHERE closed IS NULL`
	}
	rows, err := db.pool.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dsarRow, error) { return scanDSAR(row) })
	if err != nil {
		return nil, err
	}
	now := db.now()
	out := make([]store.DSAR, 0, len(recs))
	for _, rec := range recs {
		r, err := db.openDSAR(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortFunc(out, store.CompareDSARs(now))
	return out, nil
}

// DSAR returns one request.
func (db *DB) DSAR(id string) (store.DSAR, error) {
	ctx, cancel := db.op()
	defer cancel()
	r, err := scanDSAR(db.pool.QueryRow(ctx, `SELECT `+dsarCols+` FROM dsar_requests WHERE id = $1`, id))
	if err != nil {
		return store.DSAR{}, err
	}
	return db.openDSAR(r)
}

// CloseDSAR closes an open request with an optional note (sealed);
// closing twice is store.ErrConflict.
func (db *DB) CloseDSAR(id, note string) (store.DSAR, error) {
	var out store.DSAR
	err := db.inTx(func(ctx context.Context, tx pgx.Tx) error {
		r, err := scanDSAR(tx.QueryRow(ctx, `SELECT `+dsarCols+` FROM dsar_requests WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if r.Closed != nil {
			return store.ErrConflict
		}
		now := db.now().UTC()
		r.Closed = &now
		if note != "" {
			key, err := db.keys.DSARKey(uint64(r.Slot), r.ID)
			if err != nil {
				return err
			}
			if r.CloseSealed, err = store.Seal(key, "dsar-close:"+r.ID, []byte(note)); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE dsar_requests SET closed = $2, close_sealed = $3 WHERE id = $1`, id, now, r.CloseSealed); err != nil {
			return err
		}
		out, err = db.openDSAR(r)
		return err
	})
	return out, err
}

// ExpireDSARs destroys the key (so the email and notes) of requests
// closed keepPersonal ago and deletes those closed keepRecord ago.
func (db *DB) ExpireDSARs(keepPersonal, keepRecord time.Duration) (erased, deleted int, err error) {
	if keepPersonal <= 0 || keepRecord < keepPersonal {
		return 0, 0, errors.New("postgres: rights-request retention must be positive, the record's at least the personal data's")
	}
	now := db.now().UTC()
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT `+dsarCols+` FROM dsar_requests
		WHERE closed IS NOT NULL AND closed <= $1 AND (NOT erased OR closed <= $2)`, now.Add(-keepPersonal), now.Add(-keepRecord))
	if err != nil {
		return 0, 0, err
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dsarRow, error) { return scanDSAR(row) })
	if err != nil {
		return 0, 0, err
	}
	for _, r := range due {
		if err := db.keys.DestroyDSARKey(uint64(r.Slot)); err != nil {
			return erased, deleted, err
		}
		drop := !now.Before(r.Closed.Add(keepRecord))
		if drop {
			_, err = db.pool.Exec(ctx, `DELETE FROM dsar_requests WHERE id = $1`, r.ID)
		} else {
			_, err = db.pool.Exec(ctx, `UPDATE dsar_requests SET erased = true, email_sealed = NULL, note_sealed = NULL, close_sealed = NULL WHERE id = $1`, r.ID)
		}
		if err != nil {
			return erased, deleted, err
		}
		if !r.Erased {
			erased++
		}
		if drop {
			deleted++
		}
	}
	return erased, deleted, nil
}

func (db *DB) openDSAR(rec dsarRow) (store.DSAR, error) {
	r := store.DSAR{ID: rec.ID, Kind: rec.Kind, Received: rec.Received.UTC(), Deadline: rec.Deadline.UTC(), Erased: rec.Erased}
	if rec.Closed != nil {
		r.Closed = rec.Closed.UTC()
	}
	if rec.Erased {
		return r, nil
	}
	key, err := db.keys.DSARKey(uint64(rec.Slot), rec.ID)
	if errors.Is(err, store.ErrKeyDestroyed) {
		r.Erased = true
		return r, nil
	}
	if err != nil {
		return store.DSAR{}, err
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
		pt, err := store.Unseal(key, f.aad+rec.ID, f.sealed)
		if err != nil {
			return store.DSAR{}, err
		}
		*f.to = string(pt)
	}
	return r, nil
}
