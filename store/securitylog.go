package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SecurityEvent is one row of the security log (promise S1): the only
// place imagegate keeps IP addresses and user agents, and only for the
// retention period.
type SecurityEvent struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	AccountID string    `json:"account,omitempty"`
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	// Detail is free text for operators; never a secret or an email.
	Detail string `json:"detail,omitempty"`
}

// securityRecord is an event as stored: IP and user agent are sealed with
// the key of the event's UTC day, which the sweeper destroys when the day
// leaves the retention period. Deleted rows linger in bbolt's freed pages;
// without their day key they are noise.
type securityRecord struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	AccountID string    `json:"account,omitempty"`
	Day       uint64    `json:"day"`
	Client    []byte    `json:"client,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

type securityClient struct {
	IP        string `json:"ip,omitempty"`
	UserAgent string `json:"ua,omitempty"`
}

var keyDayKeysFloor = []byte("day_keys_floor")

func dayOf(t time.Time) uint64 { return uint64(t.Unix() / 86400) }

// LogSecurityEvent appends e to the security log, stamping its time.
func (db *DB) LogSecurityEvent(e SecurityEvent) error {
	if e.Kind == "" {
		return errors.New("store: security event needs a kind")
	}
	now := db.now().UTC()
	day := dayOf(now)
	rec := securityRecord{Time: now, Kind: e.Kind, AccountID: e.AccountID, Day: day, Detail: e.Detail}
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], uint64(now.UnixNano()))
	rand.Read(k[8:])
	if e.IP != "" || e.UserAgent != "" {
		key, err := db.dayKeys.create(day, dayTag(day))
		if err != nil {
			return err
		}
		plain, _ := json.Marshal(securityClient{IP: e.IP, UserAgent: e.UserAgent})
		if rec.Client, err = seal(key, "seclog:"+string(k[:]), plain); err != nil {
			return err
		}
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx.Bucket(bucketSecurityLog), k[:], rec); err != nil {
			return err
		}
		if e.AccountID == "" {
			return nil
		}
		return tx.Bucket(bucketAccountSecurity).Put(compositeKey([]byte(e.AccountID), k[:]), nil)
	})
}

// SecurityEvents returns the account's events, oldest first. Events whose
// day key is already destroyed come back without IP and user agent.
func (db *DB) SecurityEvents(accountID string) ([]SecurityEvent, error) {
	var out []SecurityEvent
	err := db.bolt.View(func(tx *bolt.Tx) error {
		prefix := compositeKey([]byte(accountID), nil)
		log := tx.Bucket(bucketSecurityLog)
		for _, ik := range prefixKeys(tx.Bucket(bucketAccountSecurity), prefix) {
			var rec securityRecord
			k := ik[len(prefix):]
			if err := getJSON(log, k, &rec); err != nil {
				if errors.Is(err, ErrNotFound) {
					continue
				}
				return err
			}
			out = append(out, db.openSecurity(k, rec))
		}
		return nil
	})
	return out, err
}

// AllSecurityEvents calls fn for every event in the log, oldest first; for
// operators and tests.
func (db *DB) AllSecurityEvents(fn func(SecurityEvent) error) error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSecurityLog).ForEach(func(k, v []byte) error {
			var rec securityRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			return fn(db.openSecurity(k, rec))
		})
	})
}

func (db *DB) openSecurity(k []byte, rec securityRecord) SecurityEvent {
	e := SecurityEvent{Time: rec.Time, Kind: rec.Kind, AccountID: rec.AccountID, Detail: rec.Detail}
	if rec.Client == nil {
		return e
	}
	key, err := db.dayKeys.get(rec.Day, dayTag(rec.Day))
	if err != nil {
		return e
	}
	plain, err := unseal(key, "seclog:"+string(k), rec.Client)
	if err != nil {
		return e
	}
	var c securityClient
	if json.Unmarshal(plain, &c) == nil {
		e.IP, e.UserAgent = c.IP, c.UserAgent
	}
	return e
}

// sweepBatch bounds the rows one write transaction deletes, so sweeps
// never hold bbolt's writer lock for long.
const sweepBatch = 1000

// SweepSecurityLog deletes events older than retention and destroys the
// day keys of every UTC day that ended before the cutoff. It is idempotent
// and returns how many rows it deleted.
func (db *DB) SweepSecurityLog(retention time.Duration) (int, error) {
	cutoff := db.now().UTC().Add(-retention)
	var end [8]byte
	binary.BigEndian.PutUint64(end[:], uint64(cutoff.UnixNano()))
	total := 0
	for {
		n := 0
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			log := tx.Bucket(bucketSecurityLog)
			idx := tx.Bucket(bucketAccountSecurity)
			c := log.Cursor()
			var doomed [][]byte
			var accounts []string
			for k, v := c.First(); k != nil && bytes.Compare(k[:8], end[:]) < 0 && len(doomed) < sweepBatch; k, v = c.Next() {
				var rec securityRecord
				if err := decodeRecord(v, &rec); err != nil {
					return err
				}
				doomed = append(doomed, append([]byte(nil), k...))
				accounts = append(accounts, rec.AccountID)
			}
			for i, k := range doomed {
				if err := log.Delete(k); err != nil {
					return err
				}
				if accounts[i] != "" {
					if err := idx.Delete(compositeKey([]byte(accounts[i]), k)); err != nil {
						return err
					}
				}
			}
			n = len(doomed)
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < sweepBatch {
			break
		}
	}
	return total, db.destroyDayKeys(dayOf(cutoff))
}

// destroyDayKeys destroys the keys of days before until, starting from the
// first day not yet destroyed.
func (db *DB) destroyDayKeys(until uint64) error {
	var floor uint64
	err := db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyDayKeysFloor); len(v) == 8 {
			floor = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if floor == 0 && until > 3660 {
		// First sweep: no key can predate the ten years before the cutoff.
		floor = until - 3660
	}
	for day := floor; day < until; day++ {
		if err := db.dayKeys.destroy(day); err != nil {
			return err
		}
	}
	if until <= floor {
		return nil
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyDayKeysFloor, u64(until))
	})
}
