package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"time"
)

// Keyring is the store's three key files, opened for another
// implementation of the store (store/postgres) so that it seals personal
// data exactly as the bbolt store does: with keys kept in files beside the
// data, never in the database, destroyed by overwriting their slots.
//
// Writes take an exclusive flock on the file, so several processes on one
// host may share a keyring as long as each slot number is handed out once
// (the database's sequence does that).
type Keyring struct {
	accounts, days, reports *keyFile
}

// OpenKeyring opens (creating if needed) path+".keys", path+".daykeys" and
// path+".reportkeys": the same files store.Open uses for Config.Path.
func OpenKeyring(path string) (_ *Keyring, err error) {
	k := &Keyring{}
	defer func() {
		if err != nil {
			k.Close()
		}
	}()
	if k.accounts, err = openKeyFile(path + ".keys"); err != nil {
		return nil, err
	}
	if k.days, err = openKeyFile(path + ".daykeys"); err != nil {
		return nil, err
	}
	if k.reports, err = openKeyFile(path + ".reportkeys"); err != nil {
		return nil, err
	}
	return k, nil
}

// Close closes the files.
func (k *Keyring) Close() error {
	var errs []error
	for _, f := range []*keyFile{k.accounts, k.days, k.reports} {
		if f != nil {
			errs = append(errs, f.close())
		}
	}
	return errors.Join(errs...)
}

// IndexKey returns the key that turns emails and Google subjects into
// lookup-index entries, creating it when the file has none.
func (k *Keyring) IndexKey() ([]byte, error) {
	return k.accounts.create(indexKeySlot, indexTag())
}

// IndexKeyAt returns the lookup-index key in slot (slot 0 is IndexKey's),
// or ErrKeyDestroyed once a rotation has destroyed it.
func (k *Keyring) IndexKeyAt(slot uint64) ([]byte, error) { return k.accounts.get(slot, indexTag()) }

// CreateIndexKey makes a fresh lookup-index key in slot (idempotent), for
// a rotation; slot comes from the account key slots.
func (k *Keyring) CreateIndexKey(slot uint64) ([]byte, error) {
	return k.accounts.create(slot, indexTag())
}

// DestroyIndexKey destroys the lookup-index key in slot, so index entries
// it made (in old pages, WAL or backups) match nothing any more.
func (k *Keyring) DestroyIndexKey(slot uint64) error { return k.accounts.destroy(slot) }

// IndexFingerprint is what a database remembers of its index key, so a
// key file that belongs to another database is refused.
func IndexFingerprint(indexKey []byte) []byte {
	sum := sha256.Sum256(indexKey)
	return sum[:8]
}

// LookupKey turns an identifier that must be findable but not readable
// (an email, a Google subject) into its index entry.
func LookupKey(indexKey []byte, kind, value string) []byte {
	m := hmac.New(sha256.New, indexKey)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return m.Sum(nil)
}

// CreateAccountKey makes the key of the account in slot (idempotent).
func (k *Keyring) CreateAccountKey(slot uint64, accountID string) ([]byte, error) {
	return k.accounts.create(slot, ownerTag(accountID))
}

// AccountKey returns the account's key, or ErrKeyDestroyed.
func (k *Keyring) AccountKey(slot uint64, accountID string) ([]byte, error) {
	return k.accounts.get(slot, ownerTag(accountID))
}

// DestroyAccountKey crypto-shreds everything sealed with slot's key.
func (k *Keyring) DestroyAccountKey(slot uint64) error { return k.accounts.destroy(slot) }

// CreateDayKey makes the security-log key of a UTC day (idempotent).
func (k *Keyring) CreateDayKey(day uint64) ([]byte, error) { return k.days.create(day, dayTag(day)) }

// DayKey returns a day's security-log key, or ErrKeyDestroyed.
func (k *Keyring) DayKey(day uint64) ([]byte, error) { return k.days.get(day, dayTag(day)) }

// DestroyDayKey destroys a day's security-log key.
func (k *Keyring) DestroyDayKey(day uint64) error { return k.days.destroy(day) }

// Seal encrypts plaintext with key (AES-256-GCM), bound to aad.
func Seal(key []byte, aad string, plaintext []byte) ([]byte, error) {
	return seal(key, aad, plaintext)
}

// Unseal reverses Seal.
func Unseal(key []byte, aad string, sealed []byte) ([]byte, error) {
	return unseal(key, aad, sealed)
}

// DayOf is the security-log day (days since the Unix epoch, UTC) of t.
func DayOf(t time.Time) uint64 { return dayOf(t) }

// NewID returns prefix followed by 128 random bits: the store's id form.
func NewID(prefix string) string { return newID(prefix) }

// NewToken returns a secret with n random bytes and the hash under which
// it is stored; the secret itself is never stored.
func NewToken(prefix string, n int) (token string, hash []byte) { return newToken(prefix, n) }

// HashToken is how secrets are stored and looked up.
func HashToken(token string) []byte { return hashToken(token) }

// CheckPartner validates (and canonicalises) a partner record before it
// is written, as CreatePartner and UpdatePartner do.
func CheckPartner(p *Partner) error { return checkPartner(p) }

// ApplyPartnerChange is UpdatePartner's change to a record, before
// CheckPartner.
func ApplyPartnerChange(p *Partner, ch PartnerChange) { applyPartnerChange(p, ch) }

// NewWebhookSecret returns a fresh whsec_ signing secret.
func NewWebhookSecret() string { return newWebhookSecret() }

// CreateDSARKey makes the key of a rights request in slot of the account
// key file (idempotent); DSARKey returns it; DestroyDSARKey destroys it.
func (k *Keyring) CreateDSARKey(slot uint64, id string) ([]byte, error) {
	return k.accounts.create(slot, dsarTag(id))
}

// DSARKey returns a rights request's key, or ErrKeyDestroyed.
func (k *Keyring) DSARKey(slot uint64, id string) ([]byte, error) {
	return k.accounts.get(slot, dsarTag(id))
}

// DestroyDSARKey destroys a rights request's key.
func (k *Keyring) DestroyDSARKey(slot uint64) error { return k.accounts.destroy(slot) }

// CreateReportKey makes the key of a report under legal hold (idempotent).
func (k *Keyring) CreateReportKey(slot uint64, id string) ([]byte, error) {
	return k.reports.create(slot, reportTag(id))
}

// ReportKey returns a report's key, or ErrKeyDestroyed.
func (k *Keyring) ReportKey(slot uint64, id string) ([]byte, error) {
	return k.reports.get(slot, reportTag(id))
}

// DestroyReportKey destroys a report's key when its hold ends.
func (k *Keyring) DestroyReportKey(slot uint64) error { return k.reports.destroy(slot) }

// UTCDay is the start of t's UTC day, the unit of rights-request dates.
func UTCDay(t time.Time) time.Time { return utcDay(t) }
