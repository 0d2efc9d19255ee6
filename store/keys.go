package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

// KeyFile names one of a keyring's three files of key slots.
type KeyFile string

// The keyring's files: KeyPath+".keys" (accounts, rights requests and the
// lookup-index keys), ".daykeys" (security-log days) and ".reportkeys"
// (reports under legal hold).
const (
	AccountKeys KeyFile = "accounts"
	DayKeys     KeyFile = "days"
	ReportKeys  KeyFile = "reports"
)

// KeyTag labels a key slot with its owner; a read naming another owner's
// tag is refused (ErrKeyOwner).
type KeyTag [tagLen]byte

// KeyBackend keeps a keyring's slots: the key files themselves (KeyFiles)
// or a key service in front of them (store/keyservice). Every operation is
// idempotent: CreateKey returns the key already in the slot when it has
// the same tag, DestroyKey of an empty slot does nothing.
type KeyBackend interface {
	// CreateKey makes a fresh random key in slot of f labelled tag, durable
	// before it returns, or returns the key already there for tag.
	CreateKey(f KeyFile, slot uint64, tag KeyTag) ([]byte, error)
	// Key returns the key in slot of f, ErrKeyDestroyed when the slot is
	// empty (destroyed or never made), ErrKeyOwner when tag differs.
	Key(f KeyFile, slot uint64, tag KeyTag) ([]byte, error)
	// DestroyKey overwrites slot of f with zeros, durably.
	DestroyKey(f KeyFile, slot uint64) error
	Close() error
}

// KeyFiles is the local KeyBackend: the three key files of one path
// prefix. Writes take an exclusive flock on the file, so several processes
// on one host may share the files as long as each slot number is handed
// out once (the database's sequence does that).
type KeyFiles struct {
	accounts, days, reports *keyFile
}

// OpenKeyFiles opens (creating if needed) path+".keys", path+".daykeys"
// and path+".reportkeys": the same files store.Open uses for Config.Path.
func OpenKeyFiles(path string) (_ *KeyFiles, err error) {
	k := &KeyFiles{}
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
func (k *KeyFiles) Close() error {
	var errs []error
	for _, f := range []*keyFile{k.accounts, k.days, k.reports} {
		if f != nil {
			errs = append(errs, f.close())
		}
	}
	return errors.Join(errs...)
}

func (k *KeyFiles) file(f KeyFile) (*keyFile, error) {
	switch f {
	case AccountKeys:
		return k.accounts, nil
	case DayKeys:
		return k.days, nil
	case ReportKeys:
		return k.reports, nil
	}
	return nil, fmt.Errorf("store: no key file %q", f)
}

// CreateKey is KeyBackend.CreateKey.
func (k *KeyFiles) CreateKey(f KeyFile, slot uint64, tag KeyTag) ([]byte, error) {
	kf, err := k.file(f)
	if err != nil {
		return nil, err
	}
	return kf.create(slot, tag)
}

// Key is KeyBackend.Key.
func (k *KeyFiles) Key(f KeyFile, slot uint64, tag KeyTag) ([]byte, error) {
	kf, err := k.file(f)
	if err != nil {
		return nil, err
	}
	return kf.get(slot, tag)
}

// DestroyKey is KeyBackend.DestroyKey.
func (k *KeyFiles) DestroyKey(f KeyFile, slot uint64) error {
	kf, err := k.file(f)
	if err != nil {
		return err
	}
	return kf.destroy(slot)
}

// Keyring is the store's three key files, for another implementation of
// the store (store/postgres) so that it seals personal data exactly as the
// bbolt store does: with keys kept outside the database, destroyed by
// overwriting their slots. The slots live in a KeyBackend: the files on
// this host (OpenKeyring) or a key service that keeps them for a fleet
// (NewKeyring with a store/keyservice client).
type Keyring struct {
	b KeyBackend
}

// NewKeyring is a keyring over b; closing it closes b.
func NewKeyring(b KeyBackend) *Keyring { return &Keyring{b: b} }

// OpenKeyring opens the key files of path (OpenKeyFiles) as a keyring.
func OpenKeyring(path string) (*Keyring, error) {
	f, err := OpenKeyFiles(path)
	if err != nil {
		return nil, err
	}
	return NewKeyring(f), nil
}

// Close closes the backend.
func (k *Keyring) Close() error { return k.b.Close() }

// IndexKey returns the key that turns emails and Google subjects into
// lookup-index entries, creating it when the file has none.
func (k *Keyring) IndexKey() ([]byte, error) {
	return k.b.CreateKey(AccountKeys, indexKeySlot, indexTag())
}

// IndexKeyAt returns the lookup-index key in slot (slot 0 is IndexKey's),
// or ErrKeyDestroyed once a rotation has destroyed it.
func (k *Keyring) IndexKeyAt(slot uint64) ([]byte, error) {
	return k.b.Key(AccountKeys, slot, indexTag())
}

// CreateIndexKey makes a fresh lookup-index key in slot (idempotent), for
// a rotation; slot comes from the account key slots.
func (k *Keyring) CreateIndexKey(slot uint64) ([]byte, error) {
	return k.b.CreateKey(AccountKeys, slot, indexTag())
}

// DestroyIndexKey destroys the lookup-index key in slot, so index entries
// it made (in old pages, WAL or backups) match nothing any more.
func (k *Keyring) DestroyIndexKey(slot uint64) error { return k.b.DestroyKey(AccountKeys, slot) }

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
	return k.b.CreateKey(AccountKeys, slot, ownerTag(accountID))
}

// AccountKey returns the account's key, or ErrKeyDestroyed.
func (k *Keyring) AccountKey(slot uint64, accountID string) ([]byte, error) {
	return k.b.Key(AccountKeys, slot, ownerTag(accountID))
}

// DestroyAccountKey crypto-shreds everything sealed with slot's key.
func (k *Keyring) DestroyAccountKey(slot uint64) error { return k.b.DestroyKey(AccountKeys, slot) }

// CreateDayKey makes the security-log key of a UTC day (idempotent).
func (k *Keyring) CreateDayKey(day uint64) ([]byte, error) {
	return k.b.CreateKey(DayKeys, day, dayTag(day))
}

// DayKey returns a day's security-log key, or ErrKeyDestroyed.
func (k *Keyring) DayKey(day uint64) ([]byte, error) { return k.b.Key(DayKeys, day, dayTag(day)) }

// DestroyDayKey destroys a day's security-log key.
func (k *Keyring) DestroyDayKey(day uint64) error { return k.b.DestroyKey(DayKeys, day) }

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
	return k.b.CreateKey(AccountKeys, slot, dsarTag(id))
}

// DSARKey returns a rights request's key, or ErrKeyDestroyed.
func (k *Keyring) DSARKey(slot uint64, id string) ([]byte, error) {
	return k.b.Key(AccountKeys, slot, dsarTag(id))
}

// DestroyDSARKey destroys a rights request's key.
func (k *Keyring) DestroyDSARKey(slot uint64) error { return k.b.DestroyKey(AccountKeys, slot) }

// CreateReportKey makes the key of a report under legal hold (idempotent).
func (k *Keyring) CreateReportKey(slot uint64, id string) ([]byte, error) {
	return k.b.CreateKey(ReportKeys, slot, reportTag(id))
}

// ReportKey returns a report's key, or ErrKeyDestroyed.
func (k *Keyring) ReportKey(slot uint64, id string) ([]byte, error) {
	return k.b.Key(ReportKeys, slot, reportTag(id))
}

// DestroyReportKey destroys a report's key when its hold ends.
func (k *Keyring) DestroyReportKey(slot uint64) error { return k.b.DestroyKey(ReportKeys, slot) }

// UTCDay is the start of t's UTC day, the unit of rights-request dates.
func UTCDay(t time.Time) time.Time { return utcDay(t) }
