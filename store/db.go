package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound reports a missing record.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict reports a uniqueness violation, such as an email address
	// already registered. Callers must not reveal it to the public when it
	// would tell whether an address has an account.
	ErrConflict = errors.New("store: conflict")
	// ErrExpired reports a token or session past its lifetime.
	ErrExpired = errors.New("store: expired")
	// ErrInsufficientCredits reports a reservation larger than the
	// account's available balance.
	ErrInsufficientCredits = errors.New("store: insufficient credits")
	// ErrAccountInactive reports an account that is suspended or being
	// erased.
	ErrAccountInactive = errors.New("store: account inactive")
)

// schemaVersion is bumped when a bucket's encoding changes incompatibly.
const schemaVersion = 1

var (
	bucketMeta            = []byte("meta")
	bucketAccounts        = []byte("accounts")
	bucketAccountEmails   = []byte("account_emails")
	bucketAccountGoogle   = []byte("account_google")
	bucketSessions        = []byte("sessions")
	bucketAccountSessions = []byte("account_sessions")
	bucketAPIKeys         = []byte("api_keys")
	bucketAccountAPIKeys  = []byte("account_api_keys")
	bucketResets          = []byte("email_tokens")
	bucketLedger          = []byte("ledger")
	bucketLedgerRefs      = []byte("ledger_refs")
	bucketHolds           = []byte("credit_holds")
	bucketConsents        = []byte("consents")
	bucketSecurityLog     = []byte("security_log")
	bucketAccountSecurity = []byte("account_security_log")
	// Billing (store/billing.go): per-account Stripe state, the customer
	// id index, processed webhook event ids, and flagged clawbacks.
	bucketBilling         = []byte("billing")
	bucketStripeCustomers = []byte("stripe_customers")
	bucketWebhookEvents   = []byte("webhook_events")
	bucketBillingFlags    = []byte("billing_flags")
	// Generations and output ownership (store/generations.go).
	bucketGenerations    = []byte("generations")
	bucketGenerationKeys = []byte("generation_keys")
	bucketExpiry         = []byte("generation_expiry")
	bucketObjects        = []byte("objects")
	bucketObjectRefs     = []byte("object_refs")
	bucketDoomed         = []byte("doomed_objects")
	// Erasure jobs (store/erasure.go).
	bucketErasures = []byte("erasures")
	// Profiles (store/profile.go) and first-party analytics aggregates
	// (store/analytics.go).
	bucketProfiles  = []byte("profiles")
	bucketAnalytics = []byte("analytics")
	// Reports of apparent CSAM under legal hold (store/reports.go).
	bucketReports = []byte("reports")
	// Rights requests received by email (store/dsar.go) and incident
	// notification jobs with their per-recipient progress (store/notify.go).
	bucketDSAR             = []byte("dsar_requests")
	bucketNotifyJobs       = []byte("notify_jobs")
	bucketNotifyRecipients = []byte("notify_recipients")
	// Partners (store/partners.go): records, the publishable-key and
	// hashed-secret indexes, images per partner per UTC day.
	bucketPartners       = []byte("partners")
	bucketPartnerPK      = []byte("partner_publishable")
	bucketPartnerSecrets = []byte("partner_secrets")
	bucketPartnerUsage   = []byte("partner_usage")

	// Asynchronous generation jobs (jobs.go).
	bucketJobs      = []byte("jobs")
	bucketJobOwners = []byte("job_owners")
	bucketJobIdem   = []byte("job_idempotency")

	allBuckets = [][]byte{
		bucketMeta, bucketAccounts, bucketAccountEmails, bucketAccountGoogle,
		bucketSessions, bucketAccountSessions, bucketAPIKeys, bucketAccountAPIKeys,
		bucketResets, bucketLedger, bucketLedgerRefs, bucketHolds, bucketConsents,
		bucketSecurityLog, bucketAccountSecurity,
		bucketBilling, bucketStripeCustomers, bucketWebhookEvents, bucketBillingFlags,
		bucketGenerations, bucketGenerationKeys, bucketExpiry, bucketObjects, bucketObjectRefs, bucketDoomed,
		bucketErasures, bucketProfiles, bucketAnalytics,
		bucketReports,
		bucketDSAR, bucketNotifyJobs, bucketNotifyRecipients,
		bucketPartners, bucketPartnerPK, bucketPartnerSecrets, bucketPartnerUsage,
		bucketJobs, bucketJobOwners, bucketJobIdem,
	}

	keySchema = []byte("schema")
	keyModels = []byte("models")
)

// indexKeySlot is the account key file's slot for the key that turns
// emails and Google subjects into lookup-index entries. Account slots
// start at 1 (bbolt sequences do).
const indexKeySlot = 0

// Config says where the store lives and how it tells time.
type Config struct {
	// Path of the bbolt file. Three key files sit beside it: Path+".keys"
	// (per-account keys), Path+".daykeys" (security-log day keys) and
	// Path+".reportkeys" (one key per report under legal hold).
	Path string
	// Now is the clock (time.Now). Tests pass a fake one.
	Now func() time.Time
	// LockTimeout bounds the wait for another process's file lock (1 s).
	LockTimeout time.Duration
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = time.Second
	}
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("store: path is required"))
	}
	if c.LockTimeout < 0 {
		errs = append(errs, errors.New("store: lock timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// DB is the embedded store. It is safe for concurrent use.
type DB struct {
	bolt       *bolt.DB
	keys       *keyFile // per-account keys
	dayKeys    *keyFile // security-log keys, one per UTC day
	reportKeys *keyFile // one key per report under legal hold
	// indexKeys holds the lookup-index key of each slot in use (slot →
	// []byte): the current one, and the previous one while a rotation
	// commits. Transactions read the current slot from meta.
	indexKeys sync.Map
	now       func() time.Time
	// jobHolder names this opening of the file in job leases: bbolt's
	// exclusive lock means a lease of any other holder is a dead process's.
	jobHolder string
}

// Open opens (creating if needed) the store described by cfg. It fails
// after cfg.LockTimeout if another process holds the file.
func Open(cfg Config) (_ *DB, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: cfg.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	db := &DB{bolt: b, now: cfg.Now, jobHolder: newID("holder_")}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	// The key files are opened only once bbolt's lock is held, so two
	// processes never write them at once.
	if db.keys, err = openKeyFile(cfg.Path + ".keys"); err != nil {
		return nil, err
	}
	if db.dayKeys, err = openKeyFile(cfg.Path + ".daykeys"); err != nil {
		return nil, err
	}
	if db.reportKeys, err = openKeyFile(cfg.Path + ".reportkeys"); err != nil {
		return nil, err
	}
	if err := db.migrate(); err != nil {
		return nil, err
	}
	if err := db.openIndexKey(cfg.Path); err != nil {
		return nil, err
	}
	return db, nil
}

func (db *DB) migrate() error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			var got int
			if err := json.Unmarshal(v, &got); err != nil {
				return fmt.Errorf("store: read schema version: %w", err)
			}
			if got > schemaVersion {
				return fmt.Errorf("store: file has schema %d, this binary knows %d: refusing to downgrade", got, schemaVersion)
			}
		}
		v, _ := json.Marshal(schemaVersion)
		return meta.Put(keySchema, v)
	})
}

var (
	keyIndexFingerprint = []byte("index_key_fingerprint")
	// keyIndexSlot names the key-file slot of the current lookup-index key
	// (absent: indexKeySlot); keyIndexRetired one a rotation replaced and
	// has yet to destroy.
	keyIndexSlot    = []byte("index_key_slot")
	keyIndexRetired = []byte("index_key_retired")
)

// indexTag labels every lookup-index key in the key file.
func indexTag() [tagLen]byte {
	var tag [tagLen]byte
	copy(tag[:], "lookup-index-key")
	return tag
}

// openIndexKey loads the lookup-index key from the key file, creating it
// for a new store. The store remembers a fingerprint of it: a key file
// that is missing or belongs to another store (a restore of the bbolt file
// alone) is refused, rather than silently keyed afresh — which would lose
// every account's lookup and key. A key retired by a rotation that was
// cut short is destroyed now.
func (db *DB) openIndexKey(path string) error {
	var want []byte
	slot, retired := uint64(indexKeySlot), uint64(0)
	hasRetired := false
	if err := db.bolt.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		want = append([]byte(nil), meta.Get(keyIndexFingerprint)...)
		if v := meta.Get(keyIndexSlot); len(v) == 8 {
			slot = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyIndexRetired); len(v) == 8 {
			retired, hasRetired = binary.BigEndian.Uint64(v), true
		}
		return nil
	}); err != nil {
		return err
	}
	if len(want) > 0 {
		key, err := db.keys.get(slot, indexTag())
		if err != nil {
			return fmt.Errorf("store: the key file %s.keys is missing or damaged (%w); restore it with the database", path, err)
		}
		if got := sha256.Sum256(key); !hmac.Equal(got[:8], want) {
			return fmt.Errorf("store: the key file %s.keys belongs to another database; restore the matching one", path)
		}
		db.indexKeys.Store(slot, key)
		if hasRetired {
			return db.destroyRetiredIndexKey(retired)
		}
		return nil
	}
	key, err := db.keys.create(indexKeySlot, indexTag())
	if err != nil {
		return err
	}
	db.indexKeys.Store(uint64(indexKeySlot), key)
	sum := sha256.Sum256(key)
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyIndexFingerprint, sum[:8])
	})
}

// indexSlot is the current lookup-index key's slot as tx sees it.
func indexSlot(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyIndexSlot); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return indexKeySlot
}

// Close releases the files.
func (db *DB) Close() error {
	var errs []error
	if db.keys != nil {
		errs = append(errs, db.keys.close())
	}
	if db.dayKeys != nil {
		errs = append(errs, db.dayKeys.close())
	}
	if db.reportKeys != nil {
		errs = append(errs, db.reportKeys.close())
	}
	return errors.Join(append(errs, db.bolt.Close())...)
}

// lookupKey turns an identifier that must be findable but not readable
// from the file (an email, a Google subject) into its index key, under the
// lookup-index key current in tx.
func (db *DB) lookupKey(tx *bolt.Tx, kind, value string) ([]byte, error) {
	k, ok := db.indexKeys.Load(indexSlot(tx))
	if !ok {
		return nil, errors.New("store: lookup-index key not loaded")
	}
	return lookupKeyWith(k.([]byte), kind, value), nil
}

func lookupKeyWith(key []byte, kind, value string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return m.Sum(nil)
}

// RotateIndexKey re-keys the lookup indexes (emails and Google subjects)
// under a fresh key and destroys the old one. Index entries of erased
// accounts linger in bbolt's freed pages, and with the key that made them
// anyone holding the files could test an address against them ("did this
// email ever have an account?"); once that key is destroyed the leftovers
// match nothing. It runs after every erasure and reads every account, in
// one transaction: a crash leaves either the old index and key, or the new
// ones with the old key destroyed at the next Open.
func (db *DB) RotateIndexKey() error {
	slot, err := db.reserveSlot(bucketAccounts)
	if err != nil {
		return err
	}
	key, err := db.keys.create(slot, indexTag())
	if err != nil {
		return err
	}
	db.indexKeys.Store(slot, key)
	var old uint64
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		old = indexSlot(tx)
		for _, name := range [][]byte{bucketAccountEmails, bucketAccountGoogle} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		emails, google := tx.Bucket(bucketAccountEmails), tx.Bucket(bucketAccountGoogle)
		accounts := tx.Bucket(bucketAccounts)
		var recs []accountRecord
		if err := accounts.ForEach(func(_, v []byte) error {
			var rec accountRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			recs = append(recs, rec)
			return nil
		}); err != nil {
			return err
		}
		for _, rec := range recs {
			acctKey, err := db.keys.get(rec.Slot, ownerTag(rec.ID))
			if err != nil {
				return fmt.Errorf("store: rotate index: account %s: %w", rec.ID, err)
			}
			email, err := unseal(acctKey, "email:"+rec.ID, rec.EmailSealed)
			if err != nil {
				return fmt.Errorf("store: rotate index: account %s: %w", rec.ID, err)
			}
			rec.EmailIndex = lookupKeyWith(key, "email", string(email))
			if err := emails.Put(rec.EmailIndex, []byte(rec.ID)); err != nil {
				return err
			}
			if rec.GoogleIndex != nil {
				subject, err := unseal(acctKey, "google:"+rec.ID, rec.GoogleSealed)
				if err != nil {
					return fmt.Errorf("store: rotate index: account %s: %w", rec.ID, err)
				}
				rec.GoogleIndex = lookupKeyWith(key, "google", string(subject))
				if err := google.Put(rec.GoogleIndex, []byte(rec.ID)); err != nil {
					return err
				}
			}
			if err := putJSON(accounts, []byte(rec.ID), rec); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		sum := sha256.Sum256(key)
		if err := meta.Put(keyIndexFingerprint, sum[:8]); err != nil {
			return err
		}
		if err := meta.Put(keyIndexRetired, u64(old)); err != nil {
			return err
		}
		return meta.Put(keyIndexSlot, u64(slot))
	})
	if err != nil {
		db.indexKeys.Delete(slot)
		return errors.Join(err, db.keys.destroy(slot))
	}
	return db.destroyRetiredIndexKey(old)
}

// destroyRetiredIndexKey destroys the lookup-index key a rotation
// replaced, then forgets that it has to.
func (db *DB) destroyRetiredIndexKey(slot uint64) error {
	if err := db.keys.destroy(slot); err != nil {
		return err
	}
	db.indexKeys.Delete(slot)
	return db.bolt.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Delete(keyIndexRetired)
	})
}

// putJSON encodes v under key in bucket b.
func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", b, err)
	}
	return b.Put(key, data)
}

// getJSON decodes the value under key in bucket b into v, or returns
// ErrNotFound. json.Unmarshal copies, so nothing outlives the transaction.
func getJSON(b *bolt.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return ErrNotFound
	}
	return decodeRecord(data, v)
}

// decodeRecord decodes a stored JSON value. json.Unmarshal copies, so the
// result may outlive the transaction the bytes came from.
func decodeRecord(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("store: decode record: %w", err)
	}
	return nil
}

// compositeKey joins parts with a NUL separator; ids never contain NUL.
func compositeKey(parts ...[]byte) []byte {
	n := len(parts) - 1
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, p...)
	}
	return k
}

// prefixKeys returns copies of the keys in b that start with prefix.
func prefixKeys(b *bolt.Bucket, prefix []byte) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	return keys
}
