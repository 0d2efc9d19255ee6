package postgres

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

type securityClient struct {
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"ua,omitempty"`
}

// LogSecurityEvent appends e to the security log, stamping its time. IP
// and user agent are sealed with the key of the UTC day, destroyed when
// the day leaves the retention period.
func (db *DB) LogSecurityEvent(e store.SecurityEvent) error {
	if e.Kind == "" {
		return errors.New("postgres: security event needs a kind")
	}
	now := db.now().UTC()
	day := store.DayOf(now)
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], uint64(now.UnixNano()))
	rand.Read(k[8:])
	var client []byte
	if e.IP != "" || e.UserAgent != "" {
		key, err := db.keys.CreateDayKey(day)
		if err != nil {
			return err
		}
		plain, _ := json.Marshal(securityClient{IP: e.IP, UserAgent: e.UserAgent})
		if client, err = store.Seal(key, "seclog:"+string(k[:]), plain); err != nil {
			return err
		}
	}
	ctx, cancel := db.op()
	defer cancel()
	_, err := db.pool.Exec(ctx, `INSERT INTO security_log (id, time, kind, account_id, day, client, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, k[:], now, e.Kind, e.AccountID, int64(day), client, e.Detail)
	return err
}

// SecurityEvents returns the account's events, oldest first. Events whose
// day key is already destroyed come back without IP and user agent.
func (db *DB) SecurityEvents(accountID string) ([]store.SecurityEvent, error) {
	var out []store.SecurityEvent
	err := db.securityEvents(`WHERE account_id = $1`, []any{accountID}, func(e store.SecurityEvent) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// AllSecurityEvents calls fn for every event in the log, oldest first.
func (db *DB) AllSecurityEvents(fn func(store.SecurityEvent) error) error {
	return db.securityEvents("", nil, fn)
}

func (db *DB) securityEvents(where string, args []any, fn func(store.SecurityEvent) error) error {
	ctx, cancel := db.op()
	defer cancel()
	rows, err := db.pool.Query(ctx, `SELECT id, time, kind, account_id, day, client, detail FROM security_log `+where+` ORDER BY id`, args...)
	if err != nil {
		return err
	}
	type row struct {
		id     []byte
		day    int64
		client []byte
		e      store.SecurityEvent
	}
	all, err := pgx.CollectRows(rows, func(cr pgx.CollectableRow) (row, error) {
		var r row
		err := cr.Scan(&r.id, &r.e.Time, &r.e.Kind, &r.e.AccountID, &r.day, &r.client, &r.e.Detail)
		r.e.Time = r.e.Time.UTC()
		return r, err
	})
	if err != nil {
		return err
	}
	for _, r := range all {
		if err := fn(db.openSecurity(r.id, uint64(r.day), r.client, r.e)); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) openSecurity(id []byte, day uint64, client []byte, e store.SecurityEvent) store.SecurityEvent {
	if client == nil {
		return e
	}
	key, err := db.keys.DayKey(day)
	if err != nil {
		return e
	}
	plain, err := store.Unseal(key, "seclog:"+string(id), client)
	if err != nil {
		return e
	}
	var c securityClient
	if json.Unmarshal(plain, &c) == nil {
		e.IP, e.UserAgent = c.IP, c.UserAgent
	}
	return e
}

// SweepSecurityLog deletes events older than retention and destroys the
// day keys of every UTC day that ended before the cutoff. It is idempotent
// and returns how many rows it deleted.
func (db *DB) SweepSecurityLog(retention time.Duration) (int, error) {
	cutoff := db.now().UTC().Add(-retention)
	var end [8]byte
	binary.BigEndian.PutUint64(end[:], uint64(cutoff.UnixNano()))
	ctx, cancel := db.op()
	defer cancel()
	tag, err := db.pool.Exec(ctx, `DELETE FROM security_log WHERE id < $1`, end[:])
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), db.destroyDayKeys(ctx, store.DayOf(cutoff))
}

// destroyDayKeys destroys the keys of days before until, from the first
// day not yet destroyed (remembered in meta).
func (db *DB) destroyDayKeys(ctx context.Context, until uint64) error {
	var floor uint64
	var v []byte
	err := db.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'day_keys_floor'`).Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if len(v) == 8 {
		floor = binary.BigEndian.Uint64(v)
	}
	if floor == 0 && until > 3660 {
		floor = until - 3660 // no key can predate the ten years before the cutoff
	}
	for day := floor; day < until; day++ {
		if err := db.keys.DestroyDayKey(day); err != nil {
			return err
		}
	}
	if until <= floor {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], until)
	_, err = db.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('day_keys_floor', $1)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, b[:])
	return err
}
