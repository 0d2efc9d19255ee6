package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Conditions Verify reports; a gateway answers all three with 403 and may
// tell the visitor which one it was. Only ErrSignatureExpired is returned
// for a token that is otherwise genuine.
var (
	ErrSignatureMissing = errors.New("edge: link is not signed")
	ErrSignatureInvalid = errors.New("edge: link signature is invalid")
	ErrSignatureExpired = errors.New("edge: link signature has expired")
)

const (
	// DefaultSignatureParam is the query parameter that carries the token.
	DefaultSignatureParam = "verify"
	// DefaultLinkTTL is how long a signed link stays valid.
	DefaultLinkTTL = 24 * time.Hour
	// MinKeyLen is the shortest signing key NewSigner accepts.
	MinKeyLen = 32
	// MaxClockSkew is how far in the future a token's issue time may lie,
	// for signers whose clock runs ahead of ours.
	MaxClockSkew = 60 * time.Second
)

const (
	issuedLen = 10                     // decimal Unix seconds, 2001-09-09 to 2286-11-20
	macLen    = 43                     // base64.RawURLEncoding.EncodedLen(sha256.Size)
	tokenLen  = issuedLen + 1 + macLen // "<issued>-<mac>"
)

// strictBase64 rejects encodings whose unused trailing bits are not zero,
// so that one MAC has exactly one spelling and a valid link cannot be
// varied into another one that also verifies.
var strictBase64 = base64.RawURLEncoding.Strict()

// SignerConfig configures a Signer.
type SignerConfig struct {
	// Current signs new links and verifies. At least MinKeyLen bytes, used
	// verbatim as the HMAC key (the string literal of the WAF rule).
	Current []byte
	// Previous, if set, is still accepted by Verify but never signs: the
	// key being rotated out. At least MinKeyLen bytes.
	Previous []byte
	// TTL is how long after signing a link verifies; zero means
	// DefaultLinkTTL. Whole seconds count: a link issued at t verifies
	// while now - t <= TTL.
	TTL time.Duration
	// Param names the query parameter carrying the token; empty means
	// DefaultSignatureParam. It must be letters, digits, '-', '_' or '.',
	// so that it never needs escaping.
	Param string
}

// Validate reports every problem with the configuration at once.
func (c SignerConfig) Validate() error {
	var errs []error
	if len(c.Current) < MinKeyLen {
		errs = append(errs, fmt.Errorf("edge: current signing key is %d bytes, need at least %d", len(c.Current), MinKeyLen))
	}
	if len(c.Previous) > 0 && len(c.Previous) < MinKeyLen {
		errs = append(errs, fmt.Errorf("edge: previous signing key is %d bytes, need at least %d", len(c.Previous), MinKeyLen))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("edge: link TTL %v is negative", c.TTL))
	}
	for i := 0; i < len(c.Param); i++ {
		if b := c.Param[i]; !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_' || b == '.') {
			errs = append(errs, fmt.Errorf("edge: signature parameter %q: only letters, digits, '-', '_' and '.' allowed", c.Param))
			break
		}
	}
	return errors.Join(errs...)
}

// Signer signs output paths and verifies signed links, in the form
// Cloudflare's is_timed_hmac_valid_v0 checks with flag "s" (see the package
// documentation). It is safe for concurrent use.
type Signer struct {
	current  *macKey
	previous *macKey // nil without rotation
	ttl      int64   // seconds
	sep      string  // "?" + param + "="
	param    string
	now      func() time.Time
	realtime bool // now is time.Now

	// genuine remembers links whose MAC checked out lately, so a popular
	// link (every visitor of a second gets the same one) costs one HMAC,
	// not one per request. A MAC is a pure function of the path, the
	// issue time and the keys, which never change for a Signer; the
	// expiry is still checked on every request. Direct-mapped by a seeded
	// hash of the token: a slot holds the last genuine link to land there.
	genuine     [genuineSlots]atomic.Pointer[genuineLink]
	genuineSeed maphash.Seed
}

// genuineSlots bounds the links remembered as genuine.
const genuineSlots = 256

// genuineLink is a path and token whose MAC was verified.
type genuineLink struct{ path, tok string }

// knownGenuine reports whether path and tok were verified before.
func (s *Signer) knownGenuine(path, tok string) (*atomic.Pointer[genuineLink], bool) {
	slot := &s.genuine[maphash.String(s.genuineSeed, tok)%genuineSlots]
	g := slot.Load()
	return slot, g != nil && g.path == path && constantTimeEqual(g.tok, tok)
}

// constantTimeEqual compares a token with a genuine one in time that
// depends on their lengths only, as hmac.Equal would.
func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// NewSigner returns a Signer for cfg that reads the time from now (nil
// means time.Now). now must lie between 2001 and 2286, where Unix time has
// the 10 digits the token format requires.
func NewSigner(cfg SignerConfig, now func() time.Time) (*Signer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultLinkTTL
	}
	if cfg.Param == "" {
		cfg.Param = DefaultSignatureParam
	}
	realtime := now == nil
	if now == nil {
		now = time.Now
	}
	s := &Signer{
		realtime:    realtime,
		genuineSeed: maphash.MakeSeed(),
		current:     newMACKey(cfg.Current),
		ttl:         int64(cfg.TTL / time.Second),
		sep:         "?" + cfg.Param + "=",
		param:       cfg.Param,
		now:         now,
	}
	if len(cfg.Previous) > 0 {
		s.previous = newMACKey(cfg.Previous)
	}
	return s, nil
}

// Sign returns path followed by "?<param>=<issued>-<mac>", valid for the
// configured TTL from now. path must be the URL path exactly as it will be
// requested, in normal form and without a query: "/o/<hash>.<ext>".
func (s *Signer) Sign(path string) string {
	issued := s.now().Unix()
	st := s.current.get()
	b := append(st.buf[:0], path...)
	b = append(b, s.sep...)
	ts := len(b)
	b = strconv.AppendInt(b, issued, 10)
	mac := st.mac(b[:len(path)], b[ts:])
	b = append(b, '-')
	b = base64.RawURLEncoding.AppendEncode(b, mac)
	link := string(b)
	st.buf = b
	s.current.put(st)
	return link
}

// AppendSign appends Sign(string(path)) to dst and returns the extended
// buffer: the hot path of a cache hit signs its link without allocating.
func (s *Signer) AppendSign(dst, path []byte) []byte {
	return s.AppendSignAt(dst, path, s.Issued())
}

// Issued is the issue time Sign would put in a link made now, in Unix
// seconds. Links of one path issued in the same second are identical, so
// a caller may keep one and reuse it while Issued is unchanged.
func (s *Signer) Issued() int64 { return s.now().Unix() }

// Realtime reports whether the signer reads time.Now, so a caller that
// has just read it may pass that reading to VerifyAt (or use its Unix
// seconds as Issued) instead of reading the clock again.
func (s *Signer) Realtime() bool { return s.realtime }

// AppendSignAt is AppendSign for a link issued at issued (from Issued).
func (s *Signer) AppendSignAt(dst, path []byte, issued int64) []byte {
	st := s.current.get()
	b := append(st.buf[:0], path...)
	b = append(b, s.sep...)
	ts := len(b)
	b = strconv.AppendInt(b, issued, 10)
	mac := st.mac(b[:len(path)], b[ts:])
	dst = append(dst, b...)
	dst = append(dst, '-')
	dst = base64.RawURLEncoding.AppendEncode(dst, mac)
	st.buf = b
	s.current.put(st)
	return dst
}

// Verify checks the signature of a request for path whose raw (still
// percent-encoded) query string is rawQuery. The query must consist of the
// token parameter alone, spelled exactly as Sign spells it: the token's
// alphabet needs no escaping, so a percent-encoded token is refused rather
// than decoded, keeping one spelling per link and the gateway's verdict the
// same as the CDN's. It returns nil for a link Sign made with the current or
// previous key no more than TTL ago, and otherwise an error wrapping
// ErrSignatureMissing (no token parameter), ErrSignatureExpired (a genuine
// token older than TTL) or ErrSignatureInvalid (anything else, including a
// token issued more than MaxClockSkew in the future).
func (s *Signer) Verify(path, rawQuery string) error {
	return s.verify(path, rawQuery, s.now)
}

// VerifyAt is Verify at the time now, for a Realtime signer's caller that
// read the clock already.
func (s *Signer) VerifyAt(path, rawQuery string, now time.Time) error {
	return s.verify(path, rawQuery, func() time.Time { return now })
}

func (s *Signer) verify(path, rawQuery string, clock func() time.Time) error {
	tok, ok := strings.CutPrefix(rawQuery, s.sep[1:])
	if !ok || strings.IndexByte(tok, '&') >= 0 {
		if !hasParam(rawQuery, s.param) {
			return ErrSignatureMissing
		}
		return fmt.Errorf("%w: the token must be the only query parameter", ErrSignatureInvalid)
	}
	if len(tok) != tokenLen || tok[issuedLen] != '-' {
		return fmt.Errorf("%w: malformed token", ErrSignatureInvalid)
	}
	var issued int64
	for i := 0; i < issuedLen; i++ {
		c := tok[i]
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: malformed token", ErrSignatureInvalid)
		}
		issued = issued*10 + int64(c-'0')
	}
	if slot, known := s.knownGenuine(path, tok); !known {
		var want [sha256.Size]byte
		if !decodeMAC(&want, tok[issuedLen+1:]) {
			return fmt.Errorf("%w: malformed token", ErrSignatureInvalid)
		}
		if !s.current.verify(path, tok[:issuedLen], &want) &&
			(s.previous == nil || !s.previous.verify(path, tok[:issuedLen], &want)) {
			return fmt.Errorf("%w: wrong MAC", ErrSignatureInvalid)
		}
		slot.Store(&genuineLink{path: strings.Clone(path), tok: strings.Clone(tok)})
	}
	now := clock().Unix()
	if issued > now+int64(MaxClockSkew/time.Second) {
		return fmt.Errorf("%w: issued in the future", ErrSignatureInvalid)
	}
	if now-issued > s.ttl {
		return ErrSignatureExpired
	}
	return nil
}

// hasParam reports whether rawQuery has a parameter named param, with or
// without a value.
func hasParam(rawQuery, param string) bool {
	for rawQuery != "" {
		var kv string
		kv, rawQuery, _ = strings.Cut(rawQuery, "&")
		if k, _, _ := strings.Cut(kv, "="); k == param {
			return true
		}
	}
	return false
}

// decodeMAC decodes the base64 part of a token into dst, accepting only
// the canonical URL-safe unpadded spelling of exactly sha256.Size bytes.
func decodeMAC(dst *[sha256.Size]byte, enc string) bool {
	if len(enc) != macLen {
		return false
	}
	var src [macLen]byte
	for i := 0; i < macLen; i++ {
		c := enc[i]
		// The decoder would skip CR and LF; refuse them and any
		// non-alphabet byte before it sees them.
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
		src[i] = c
	}
	n, err := strictBase64.Decode(dst[:], src[:])
	return err == nil && n == sha256.Size
}

// macKey holds one key's HMAC states for reuse: hmac.New hashes the key
// into its inner and outer pads once, and Reset restores that state, so a
// pooled state costs two SHA-256 compressions of the message and no
// allocation.
type macKey struct {
	pool sync.Pool
}

type macState struct {
	h   hash.Hash
	buf []byte // scratch: Sign's link, Verify's message
	sum [sha256.Size]byte
}

func newMACKey(key []byte) *macKey {
	key = append([]byte(nil), key...) // the caller may reuse its slice
	k := &macKey{}
	k.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, key), buf: make([]byte, 0, 256)}
	}
	return k
}

func (k *macKey) get() *macState { return k.pool.Get().(*macState) }

func (k *macKey) put(st *macState) {
	if cap(st.buf) > 64<<10 { // do not pin a buffer grown by a huge path
		st.buf = make([]byte, 0, 256)
	}
	k.pool.Put(st)
}

// mac returns HMAC(key, path || issued) in st.sum.
func (st *macState) mac(path, issued []byte) []byte {
	st.h.Reset()
	st.h.Write(path)
	st.h.Write(issued)
	return st.h.Sum(st.sum[:0])
}

// verify reports, in constant time for a given length, whether want is the
// MAC of path || issued under this key.
func (k *macKey) verify(path, issued string, want *[sha256.Size]byte) bool {
	st := k.get()
	st.buf = append(append(st.buf[:0], path...), issued...)
	ok := hmac.Equal(st.mac(st.buf[:len(path)], st.buf[len(path):]), want[:])
	k.put(st)
	return ok
}
