package postgres

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// CreateReport records a report of apparent CSAM under legal hold for
// hold: everything but its category and dates is sealed with a key of its
// own in the report key file, destroyed when the hold ends.
func (db *DB) CreateReport(r store.Report, hold time.Duration) (store.Report, error) {
	var errs []error
	if r.Category == "" {
		errs = append(errs, errors.New("postgres: report needs a category"))
	}
	if r.Source != store.ReportFromPrompt && r.Source != store.ReportFromOutput {
		errs = append(errs, fmt.Errorf("postgres: report source %q must be %s or %s", r.Source, store.ReportFromPrompt, store.ReportFromOutput))
	}
	if hold <= 0 {
		errs = append(errs, errors.New("postgres: report needs a positive hold"))
	}
	if err := errors.Join(errs...); err != nil {
		return store.Report{}, err
	}
	now := db.now().UTC()
	r.ID, r.Created, r.HoldUntil = store.NewReportID(now), now, now.Add(hold)
	r.ImageSize, r.ImageSHA256 = len(r.Image), ""
	if len(r.Image) > 0 {
		sum := sha256.Sum256(r.Image)
		r.ImageSHA256 = hex.EncodeToString(sum[:])
	}
	details, err := json.Marshal(store.ReportDetails{
		AccountID: r.AccountID, ClientIP: r.ClientIP, Prompt: r.Prompt, NegativePrompt: r.NegativePrompt,
		Params: r.Params, ContentType: r.ContentType, ImageSHA256: r.ImageSHA256,
	})
	if err != nil {
		return store.Report{}, fmt.Errorf("postgres: encode report: %w", err)
	}
	ctx, cancel := db.op()
	defer cancel()
	var slot int64
	if err := db.pool.QueryRow(ctx, `SELECT nextval('report_key_slots')`).Scan(&slot); err != nil {
		return store.Report{}, err
	}
	key, err := db.keys.CreateReportKey(uint64(slot), r.ID)
	if err != nil {
		return store.Report{}, err
	}
	sealed, err := store.Seal(key, "report:"+r.ID, details)
	if err != nil {
		return store.Report{}, err
	}
	var img []byte
	if len(r.Image) > 0 {
		if img, err = store.Seal(key, "report-image:"+r.ID, r.Image); err != nil {
			return store.Report{}, err
		}
	}
	_, err = db.pool.Exec(ctx, `INSERT INTO reports (id, slot, created, hold_until, category, source, image_size, details, image_sealed)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, r.ID, slot, r.Created, r.HoldUntil, r.Category, r.Source, r.ImageSize, sealed, img)
	if err != nil {
		return store.Report{}, err
	}
	return r, nil
}

type reportRow struct {
	id, category, source string
	slot                 int64
	created, holdUntil   time.Time
	imageSize            int
	details, image       []byte
}

func (db *DB) openReport(rr reportRow) (store.Report, []byte, error) {
	key, err := db.keys.ReportKey(uint64(rr.slot), rr.id)
	if err != nil {
		return store.Report{}, nil, err
	}
	plain, err := store.Unseal(key, "report:"+rr.id, rr.details)
	if err != nil {
		return store.Report{}, nil, err
	}
	var d store.ReportDetails
	if err := json.Unmarshal(plain, &d); err != nil {
		return store.Report{}, nil, fmt.Errorf("postgres: decode report: %w", err)
	}
	return store.Report{
		ID: rr.id, Created: rr.created.UTC(), HoldUntil: rr.holdUntil.UTC(), Category: rr.category, Source: rr.source,
		AccountID: d.AccountID, ClientIP: d.ClientIP, Prompt: d.Prompt, NegativePrompt: d.NegativePrompt,
		Params: d.Params, ContentType: d.ContentType, ImageSHA256: d.ImageSHA256, ImageSize: rr.imageSize,
	}, key, nil
}

const reportCols = `id, slot, created, hold_until, category, source, image_size, details`

func scanReport(row pgx.Row, image bool) (reportRow, error) {
	var rr reportRow
	dst := []any{&rr.id, &rr.slot, &rr.created, &rr.holdUntil, &rr.category, &rr.source, &rr.imageSize, &rr.details}
	if image {
		dst = append(dst, &rr.image)
	}
	return rr, notFound(row.Scan(dst...))
}

// Reports lists the reports under hold, newest first, without images.
func (db *DB) Reports() ([]store.Report, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT `+reportCols+` FROM reports ORDER BY id DESC`)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (reportRow, error) { return scanReport(row, false) })
	if err != nil {
		return nil, err
	}
	var out []store.Report
	for _, rr := range all {
		r, _, err := db.openReport(rr)
		if errors.Is(err, store.ErrKeyDestroyed) {
			continue // swept midway: the row is noise and goes next sweep
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Report returns one report with its image.
func (db *DB) Report(id string) (store.Report, error) {
	ctx, cancel := db.op()
	defer cancel()
	rr, err := scanReport(db.pool.QueryRow(ctx, `SELECT `+reportCols+`, image_sealed FROM reports WHERE id = $1`, id), true)
	if err != nil {
		return store.Report{}, err
	}
	r, key, err := db.openReport(rr)
	if errors.Is(err, store.ErrKeyDestroyed) {
		return store.Report{}, store.ErrNotFound
	}
	if err != nil {
		return store.Report{}, err
	}
	if rr.image != nil {
		if r.Image, err = store.Unseal(key, "report-image:"+id, rr.image); err != nil {
			return store.Report{}, err
		}
	}
	return r, nil
}

// SweepReports destroys the keys of reports whose hold ended, then
// deletes them; a crash between the two leaves rows that are noise and go
// next time. It returns how many went.
func (db *DB) SweepReports() (int, error) {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT id, slot FROM reports WHERE hold_until <= $1`, db.now())
	if err != nil {
		return 0, err
	}
	type due struct {
		id   string
		slot int64
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (due, error) {
		var d due
		return d, row.Scan(&d.id, &d.slot)
	})
	if err != nil {
		return 0, err
	}
	for _, d := range all {
		if err := db.keys.DestroyReportKey(uint64(d.slot)); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, d := range all {
		tag, err := db.pool.Exec(ctx, `DELETE FROM reports WHERE id = $1`, d.id)
		if err != nil {
			return n, err
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}
