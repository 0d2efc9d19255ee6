package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// keyTag is the first field of every canonical form. Changing anything about
// the canonical encoding or the normalisation rules requires a new tag (and a
// new Key.String prefix), so old and new keys can never collide.
const keyTag = "imagegate-key/v1"

// keyPrefix is the Key.String prefix that names the canonical form's version.
const keyPrefix = "v1-"

// ErrInvalidKey reports a string that is not a Key in its String form.
var ErrInvalidKey = errors.New("cache: invalid key")

// Request is everything that determines a generated image, and nothing else:
// never who asked, a filename or the time. Two requests with equal keys must
// be served the same bytes, so every field a backend reads must be here.
type Request struct {
	// Model and ModelVersion name the backend exactly; a new version is a
	// new key space.
	Model, ModelVersion string
	// CaseInsensitive says the model's tokenizer ignores case, so prompts
	// are lowercased before hashing. Set it only from the model's own
	// description: folding case for a model that sees it would serve one
	// prompt's image for another.
	CaseInsensitive bool
	Prompt          string
	NegativePrompt  string
	Width, Height   int
	Seed            uint64
	Steps           int
	// Guidance must not be NaN (reject it upstream); -0 equals 0.
	Guidance float32
	// Style is the resolved style name. The gateway must resolve "" to the
	// model's default before building a Request, or a request naming the
	// default and one leaving it out get different keys for one image.
	// Compared trimmed and lowercased.
	Style string
	// Format is the output format ("png"), compared trimmed and lowercased.
	Format string
	// ReferenceSHA256 is the lowercase hex SHA-256 of the decoded reference
	// image for image-to-image, or "" for text-to-image.
	ReferenceSHA256 string
	// Strength counts only when ReferenceSHA256 is set.
	Strength float32
	// Scope namespaces the key: "" is the shared space; anything else (an
	// account, a private request) is a space of its own.
	Scope string
}

// Key identifies one generated image: a SHA-256 over the request's canonical
// form. Equal keys mean "the same image"; see Request.
type Key [32]byte

// String returns "v1-" followed by the key in lowercase hex. It is safe to
// put in object names, URLs and logs (it reveals nothing short of guessing
// the whole request).
func (k Key) String() string {
	var b [len(keyPrefix) + 2*len(k)]byte
	copy(b[:], keyPrefix)
	hex.Encode(b[len(keyPrefix):], k[:])
	return string(b[:])
}

// ParseKey parses the String form of a Key. It accepts exactly that form:
// the "v1-" prefix and 64 lowercase hex digits.
func ParseKey(s string) (Key, error) {
	var k Key
	if len(s) != len(keyPrefix)+2*len(k) || !strings.HasPrefix(s, keyPrefix) || !isLowerHex(s[len(keyPrefix):]) {
		return Key{}, ErrInvalidKey
	}
	if _, err := hex.Decode(k[:], []byte(s[len(keyPrefix):])); err != nil {
		return Key{}, ErrInvalidKey
	}
	return k, nil
}

// Key returns the request's content key: SHA-256 over the canonical form
// (see CanonicalPrompt for the prompt rules).
func (r Request) Key() Key {
	var buf [512]byte
	return sha256.Sum256(r.appendCanonical(buf[:0], false))
}

// DeriveSeed returns the seed to use when the request names none: a hash of
// the canonical form with the seed replaced by a fixed "auto" marker, so it
// ignores r.Seed and repeated prompts get the same image (and the same key).
// It also ignores r.Scope: privacy decides who may see an image, not what it
// looks like. The result is below 1<<32 so that it survives clients and
// backends that keep 32-bit seeds.
func DeriveSeed(r Request) uint64 {
	var buf [512]byte
	sum := sha256.Sum256(r.appendCanonical(buf[:0], true))
	return uint64(binary.BigEndian.Uint32(sum[:4]))
}

// CanonicalPrompt returns the form of a prompt that the key hashes: Unicode
// NFC, whitespace runs (any Unicode space) collapsed to one ASCII space,
// trimmed, and lowercased with simple per-character mapping when
// caseInsensitive. Case is lowered, not folded (ß and ss stay distinct),
// because that is what case-insensitive tokenizers do; folding further would
// merge prompts the model tells apart. Each run of invalid UTF-8 becomes
// U+FFFD (the gateway refuses such prompts before they get here, so this
// only keeps the form total). Backends of models that are sent the raw
// prompt must treat prompts with equal canonical forms identically.
func CanonicalPrompt(s string, caseInsensitive bool) string {
	var buf [256]byte
	b := appendCanonicalText(buf[:0], s, caseInsensitive)
	if string(b) == s {
		return s // already canonical, the usual case: no copy
	}
	return string(b)
}

// appendCanonical appends the unambiguous canonical encoding of r: a version
// tag, then every field in a fixed order, strings length-prefixed and
// numbers fixed-width. With seedless it writes the "auto" seed marker and
// leaves the scope out, for DeriveSeed.
func (r Request) appendCanonical(b []byte, seedless bool) []byte {
	b = appendField(b, keyTag)
	b = appendField(b, r.Model)
	b = appendField(b, r.ModelVersion)
	b = appendBool(b, r.CaseInsensitive)
	b = appendText(b, r.Prompt, r.CaseInsensitive)
	b = appendText(b, r.NegativePrompt, r.CaseInsensitive)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(r.Width)))
	b = binary.BigEndian.AppendUint64(b, uint64(int64(r.Height)))
	if seedless {
		b = append(b, 'A')
		b = appendField(b, "auto")
	} else {
		b = append(b, 'S')
		b = binary.BigEndian.AppendUint64(b, r.Seed)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(int64(r.Steps)))
	b = binary.BigEndian.AppendUint32(b, canonicalFloat(r.Guidance))
	b = appendLowerTrimmed(b, r.Style)
	b = appendLowerTrimmed(b, r.Format)
	ref := strings.TrimSpace(r.ReferenceSHA256)
	if ref == "" {
		b = appendBool(b, false)
	} else {
		b = appendBool(b, true)
		b = appendLowerTrimmed(b, ref)
		b = binary.BigEndian.AppendUint32(b, canonicalFloat(r.Strength))
	}
	if seedless {
		b = appendBool(b, false)
	} else {
		b = appendBool(b, true)
		b = appendField(b, r.Scope)
	}
	return b
}

// canonicalFloat returns bits that are equal exactly when the values are
// equal: -0 is 0, and every NaN is one NaN (callers reject NaN, but the key
// must still be deterministic if one slips through).
func canonicalFloat(f float32) uint32 {
	switch {
	case f == 0:
		return 0
	case f != f:
		return 0x7fc00000
	}
	return math.Float32bits(f)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendField appends s with a 4-byte big-endian length prefix.
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// appendLowerTrimmed appends the trimmed, lowercased s length-prefixed.
func appendLowerTrimmed(b []byte, s string) []byte {
	s = strings.TrimSpace(s)
	at := len(b)
	b = binary.BigEndian.AppendUint32(b, 0)
	start := len(b)
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			b = append(b[:start], strings.ToLower(s)...)
			binary.BigEndian.PutUint32(b[at:], uint32(len(b)-start))
			return b
		}
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-start))
	return b
}

// appendText appends the canonical form of a prompt, length-prefixed.
func appendText(b []byte, s string, fold bool) []byte {
	at := len(b)
	b = binary.BigEndian.AppendUint32(b, 0)
	start := len(b)
	b = appendCanonicalText(b, s, fold)
	binary.BigEndian.PutUint32(b[at:], uint32(len(b)-start))
	return b
}

// appendCanonicalText appends CanonicalPrompt(s, fold) to b. ASCII input,
// the common case, is always NFC and takes a byte loop that does not
// allocate (b never reaches the norm package, which would move it to the
// heap).
func appendCanonicalText(b []byte, s string, fold bool) []byte {
	if isASCII(s) {
		return appendCanonicalASCII(b, s, fold)
	}
	return append(b, canonicalUnicode(s, fold)...)
}

// canonicalUnicode is the general form of appendCanonicalText.
func canonicalUnicode(s string, fold bool) []byte {
	// Replace invalid bytes before normalising: norm passes them through,
	// and the marks after them would otherwise be normalised only on a
	// second pass.
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if !norm.NFC.IsNormalString(s) {
		s = norm.NFC.String(s)
	}
	b := make([]byte, 0, len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = len(b) > 0
			continue
		}
		if space {
			b = append(b, ' ')
			space = false
		}
		if fold {
			r = unicode.ToLower(r)
		}
		b = utf8.AppendRune(b, r)
	}
	if fold && !norm.NFC.IsNormal(b) {
		// Lowercasing can, in principle, leave a sequence that composes
		// differently; normalise again so the form is a fixed point.
		b = norm.NFC.Bytes(b)
	}
	return b
}

func appendCanonicalASCII(b []byte, s string, fold bool) []byte {
	start := len(b)
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t', '\n', '\v', '\f', '\r':
			space = len(b) > start
			continue
		}
		if space {
			b = append(b, ' ')
			space = false
		}
		if fold && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
