package store

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Key prefixes of partner credentials, recognisable to secret scanners.
// The publishable key is public by design (it sits in the partner's page
// source) and works only from the partner's origins; the secret key is for
// the partner's servers and is stored only as its SHA-256.
const (
	PublishableKeyPrefix = "pk_"
	PartnerSecretPrefix  = "psk_"
	// WebhookSecretPrefix starts the Standard Webhooks signing secret:
	// whsec_ followed by the base64 of the HMAC key.
	WebhookSecretPrefix = "whsec_"
)

// Limits on a partner record, so one bad admin request cannot make the
// CSP header or the record unbounded.
const (
	MaxPartnerOrigins   = 20
	maxPartnerNameBytes = 100
	maxOriginBytes      = 256
	maxWebhookURLBytes  = 2048
)

// ErrPartnerQuota reports a reservation that would take a partner over
// its monthly image quota.
var ErrPartnerQuota = errors.New("store: partner monthly quota exceeded")

// ErrInvalidPartner reports a partner record that fails validation; the
// wrapped message names the field.
var ErrInvalidPartner = errors.New("store: invalid partner")

// Partner is a site that embeds the generator.
type Partner struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Origins are the exact origins (scheme://host[:port], canonical
	// form, see ParseOrigin) allowed to use the publishable key and to
	// frame the embed widget.
	Origins []string `json:"origins"`
	// MonthlyQuota is how many images the partner's visitors may generate
	// per calendar month (UTC).
	MonthlyQuota int `json:"monthly_quota"`
	// RateLimit is how many generation requests per minute the partner's
	// keys may make, all visitors together.
	RateLimit int `json:"rate_limit"`
	// Plan names the plan whose limits (largest size) apply to the
	// partner's images.
	Plan     string `json:"plan"`
	Disabled bool   `json:"disabled"`
	// PublishableKey is public: it is shown in the page source.
	PublishableKey string `json:"publishable_key"`
	// SecretHint is the start of the secret key, to tell keys apart.
	SecretHint string `json:"secret_hint"`
	// WebhookURL receives signed completion callbacks; empty: none.
	// WebhookSecret is the whsec_ signing secret (kept: the gateway signs
	// with it).
	WebhookURL    string    `json:"webhook_url,omitempty"`
	WebhookSecret string    `json:"webhook_secret,omitempty"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
}

// NewPartner is what creating a partner needs.
type NewPartner struct {
	Name         string
	Origins      []string
	MonthlyQuota int
	RateLimit    int
	Plan         string
	WebhookURL   string
}

// PartnerChange is a partial update: nil fields stay as they are.
type PartnerChange struct {
	Name         *string
	Origins      []string // nil: unchanged; set replaces the list
	MonthlyQuota *int
	RateLimit    *int
	Plan         *string
	Disabled     *bool
	WebhookURL   *string
}

// PartnerUsage is one partner's images on one UTC day.
type PartnerUsage struct {
	Day    string `json:"day"` // YYYY-MM-DD
	Images int    `json:"images"`
}

// ParseOrigin checks that s is one exact web origin and returns its
// canonical form: lowercase scheme and host, the default port dropped, as
// browsers send it in the Origin header. Paths, queries, fragments,
// credentials, wildcards and "null" are refused: an allowed origin must
// name one site.
func ParseOrigin(s string) (string, error) {
	if s == "" || len(s) > maxOriginBytes {
		return "", fmt.Errorf("origin %q: want scheme://host[:port]", s)
	}
	if strings.ContainsAny(s, "*\\ \t\r\n") {
		return "", fmt.Errorf("origin %q: wildcards, spaces and backslashes are not allowed", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("origin %q: %w", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", fmt.Errorf("origin %q: scheme must be https or http", s)
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return "", fmt.Errorf("origin %q: only scheme://host[:port], no path, query, fragment or user", s)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", fmt.Errorf("origin %q: host is missing", s)
	}
	if ip := net.ParseIP(host); ip != nil {
		if strings.Contains(host, ":") {
			host = "[" + ip.String() + "]"
		} else if ip.To4() != nil && strings.Count(host, ".") == 3 {
			host = ip.String()
		}
	} else if !validHostname(host) {
		return "", fmt.Errorf("origin %q: host must be an ASCII (punycode) domain name or an IP address", s)
	}
	port := u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return "", fmt.Errorf("origin %q: empty port", s)
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '0' {
			return "", fmt.Errorf("origin %q: port must be 1-65535", s)
		}
		if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
			port = ""
		}
	}
	out := scheme + "://" + host
	if port != "" {
		out += ":" + port
	}
	return out, nil
}

// validHostname accepts LDH labels separated by dots (no empty labels).
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ParseOrigins canonicalises a list of origins (see ParseOrigin),
// dropping duplicates; at least one and at most MaxPartnerOrigins.
func ParseOrigins(list []string) ([]string, error) {
	if len(list) == 0 {
		return nil, errors.New("origins: at least one origin is required")
	}
	if len(list) > MaxPartnerOrigins {
		return nil, fmt.Errorf("origins: at most %d", MaxPartnerOrigins)
	}
	out := make([]string, 0, len(list))
	var errs []error
	for _, s := range list {
		o, err := ParseOrigin(strings.TrimSpace(s))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("origins: %w", err)
	}
	return out, nil
}

// checkPartner validates a record before it is written.
func checkPartner(p *Partner) error {
	var errs []error
	p.Name = strings.TrimSpace(p.Name)
	if p.Name == "" || len(p.Name) > maxPartnerNameBytes {
		errs = append(errs, fmt.Errorf("name: 1 to %d bytes", maxPartnerNameBytes))
	}
	origins, err := ParseOrigins(p.Origins)
	if err != nil {
		errs = append(errs, err)
	}
	p.Origins = origins
	if p.MonthlyQuota < 1 || p.MonthlyQuota > 100_000_000 {
		errs = append(errs, errors.New("monthly_quota: 1 to 100000000 images"))
	}
	if p.RateLimit < 1 || p.RateLimit > 1_000_000 {
		errs = append(errs, errors.New("rate_limit: 1 to 1000000 requests a minute"))
	}
	if p.Plan == "" {
		errs = append(errs, errors.New("plan: required"))
	}
	if p.WebhookURL != "" {
		u, err := url.Parse(p.WebhookURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || len(p.WebhookURL) > maxWebhookURLBytes {
			errs = append(errs, errors.New("webhook_url: an http(s) URL without credentials"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPartner, err)
	}
	return nil
}

// CreatePartner validates and stores a partner with fresh keys. It returns
// the secret key, which is not kept and cannot be shown again.
func (db *DB) CreatePartner(n NewPartner) (Partner, string, error) {
	now := db.now().UTC()
	p := Partner{
		ID: newID("ptr_"), Name: n.Name, Origins: n.Origins, MonthlyQuota: n.MonthlyQuota,
		RateLimit: n.RateLimit, Plan: n.Plan, WebhookURL: n.WebhookURL, Created: now, Updated: now,
	}
	if err := checkPartner(&p); err != nil {
		return Partner{}, "", err
	}
	p.PublishableKey, _ = newToken(PublishableKeyPrefix, 18)
	secret, hash := newToken(PartnerSecretPrefix, 24)
	p.SecretHint = secret[:len(PartnerSecretPrefix)+4]
	if p.WebhookURL != "" {
		p.WebhookSecret = newWebhookSecret()
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		if err := putJSON(tx.Bucket(bucketPartners), []byte(p.ID), p); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPartnerPK).Put([]byte(p.PublishableKey), []byte(p.ID)); err != nil {
			return err
		}
		return tx.Bucket(bucketPartnerSecrets).Put(hash, []byte(p.ID))
	})
	if err != nil {
		return Partner{}, "", err
	}
	return p, secret, nil
}

// newWebhookSecret is whsec_ and the base64 of 32 random bytes.
func newWebhookSecret() string {
	var b [32]byte
	rand.Read(b[:])
	return WebhookSecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// Partner returns one partner.
func (db *DB) Partner(id string) (Partner, error) {
	var p Partner
	err := db.bolt.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketPartners), []byte(id), &p) })
	return p, err
}

// Partners lists every partner, oldest first.
func (db *DB) Partners() ([]Partner, error) {
	var out []Partner
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPartners).ForEach(func(_, v []byte) error {
			var p Partner
			if err := decodeRecord(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Partner) int { return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID)) })
	return out, err
}

// PartnerByPublishableKey returns the partner whose publishable key is
// pk, disabled or not (the caller decides), or ErrNotFound.
func (db *DB) PartnerByPublishableKey(pk string) (Partner, error) {
	return db.partnerByIndex(bucketPartnerPK, []byte(pk))
}

// PartnerBySecret returns the partner whose secret key is secret, or
// ErrNotFound.
func (db *DB) PartnerBySecret(secret string) (Partner, error) {
	return db.partnerByIndex(bucketPartnerSecrets, hashToken(secret))
}

func (db *DB) partnerByIndex(index, key []byte) (Partner, error) {
	var p Partner
	err := db.bolt.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(index).Get(key)
		if id == nil {
			return ErrNotFound
		}
		return getJSON(tx.Bucket(bucketPartners), id, &p)
	})
	return p, err
}

// UpdatePartner applies ch to partner id after validating the result; a
// webhook URL set for the first time gets a signing secret.
func (db *DB) UpdatePartner(id string, ch PartnerChange) (Partner, error) {
	var p Partner
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPartners)
		if err := getJSON(b, []byte(id), &p); err != nil {
			return err
		}
		applyPartnerChange(&p, ch)
		if err := checkPartner(&p); err != nil {
			return err
		}
		p.Updated = db.now().UTC()
		return putJSON(b, []byte(id), p)
	})
	if err != nil {
		return Partner{}, err
	}
	return p, nil
}

// applyPartnerChange sets ch's fields on p; a webhook URL set for the
// first time gets a signing secret, and removing it drops the secret.
func applyPartnerChange(p *Partner, ch PartnerChange) {
	if ch.Name != nil {
		p.Name = *ch.Name
	}
	if ch.Origins != nil {
		p.Origins = ch.Origins
	}
	if ch.MonthlyQuota != nil {
		p.MonthlyQuota = *ch.MonthlyQuota
	}
	if ch.RateLimit != nil {
		p.RateLimit = *ch.RateLimit
	}
	if ch.Plan != nil {
		p.Plan = *ch.Plan
	}
	if ch.Disabled != nil {
		p.Disabled = *ch.Disabled
	}
	if ch.WebhookURL != nil {
		p.WebhookURL = *ch.WebhookURL
		switch {
		case p.WebhookURL == "":
			p.WebhookSecret = ""
		case p.WebhookSecret == "":
			p.WebhookSecret = newWebhookSecret()
		}
	}
}

func usageKey(id string, day time.Time) []byte {
	return compositeKey([]byte(id), []byte(day.UTC().Format(time.DateOnly)))
}

// ReservePartnerImages adds n images to the partner's count for day's UTC
// day, refusing with ErrPartnerQuota when the calendar month's total would
// exceed the partner's monthly quota. A negative n gives images back (a
// failed generation) and never fails on the quota. Check and count happen
// in one transaction, so concurrent requests cannot overshoot.
func (db *DB) ReservePartnerImages(id string, day time.Time, n int) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		var p Partner
		if err := getJSON(tx.Bucket(bucketPartners), []byte(id), &p); err != nil {
			return err
		}
		b := tx.Bucket(bucketPartnerUsage)
		if n > 0 {
			if month := monthUsage(b, id, day); month+n > p.MonthlyQuota {
				return ErrPartnerQuota
			}
		}
		k := usageKey(id, day)
		count := int64(readCount(b.Get(k))) + int64(n)
		if count <= 0 {
			return b.Delete(k)
		}
		return b.Put(k, u64(uint64(count)))
	})
}

func readCount(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// monthUsage sums the partner's images in day's UTC calendar month.
func monthUsage(b *bolt.Bucket, id string, day time.Time) int {
	prefix := compositeKey([]byte(id), []byte(day.UTC().Format("2006-01")))
	total := 0
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
		total += int(readCount(v))
	}
	return total
}

// PartnerMonthUsage is the partner's image count in month's UTC calendar
// month.
func (db *DB) PartnerMonthUsage(id string, month time.Time) (int, error) {
	var n int
	err := db.bolt.View(func(tx *bolt.Tx) error {
		n = monthUsage(tx.Bucket(bucketPartnerUsage), id, month)
		return nil
	})
	return n, err
}

// PartnerUsageDays lists the partner's images per UTC day from from to to
// (inclusive days), oldest first; days without images are left out.
func (db *DB) PartnerUsageDays(id string, from, to time.Time) ([]PartnerUsage, error) {
	lo, hi := from.UTC().Format(time.DateOnly), to.UTC().Format(time.DateOnly)
	var out []PartnerUsage
	err := db.bolt.View(func(tx *bolt.Tx) error {
		prefix := compositeKey([]byte(id), nil)
		c := tx.Bucket(bucketPartnerUsage).Cursor()
		for k, v := c.Seek(compositeKey([]byte(id), []byte(lo))); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
			day := string(k[len(prefix):])
			if day > hi {
				break
			}
			out = append(out, PartnerUsage{Day: day, Images: int(readCount(v))})
		}
		return nil
	})
	return out, err
}
