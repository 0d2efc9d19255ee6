// Package consent owns imagegate's cookie consent: the registry of every
// cookie the gateway may set (name, category, purpose, lifetime and the
// attributes they imply), the cookie-policy revision a choice answers, and
// the rules that decide what a visitor's choice allows — reading the
// consent cookie, staleness against the revision in force, the Global
// Privacy Control veto on analytics, and the proof-of-consent record a
// choice leaves in the store (promises K1, K2, K5, K6).
//
// It is plain Go: package gateway reads the cookie and Sec-GPC from the
// request, asks a State what it allows, filters Set-Cookie headers and
// serves the consent routes.
package consent

import (
	"crypto/rand"
	"encoding/base32"
	"strconv"
	"strings"

	"github.com/imagegate/imagegate/store"
)

// State is the visitor's cookie choice as it applies to one request
// (promises K1, K2, K5).
type State struct {
	Visitor string // random id from the consent cookie; empty before one is set
	// Revision is the cookie-policy revision the stored choice answered.
	Revision    int
	Decided     bool // the visitor answered (any revision)
	Preferences bool
	Analytics   bool
	GPC         bool // this request carries Sec-GPC: 1
	GPCRecorded bool // a GPC opt-out is already recorded for this visitor
}

// Current reports whether the choice answers the policy in force; a
// choice for an older revision is stale and the visitor is asked again.
func (s State) Current(revision int) bool { return s.Decided && s.Revision == revision }

// AllowedBy reports whether a category may be set under this state at the
// given policy revision. GPC always vetoes analytics.
func (s State) AllowedBy(cat Category, revision int) bool {
	switch cat {
	case Necessary:
		return true
	case Preferences:
		return s.Current(revision) && s.Preferences
	case Analytics:
		return s.Current(revision) && s.Analytics && !s.GPC
	}
	return false
}

// Decide records the visitor's answer to the policy at revision: analytics
// stay off while the request carries GPC, and a GPC signal present now
// counts as recorded by this choice.
func (s State) Decide(preferences, analytics bool, revision int) State {
	s.Decided, s.Revision = true, revision
	s.Preferences, s.Analytics = preferences, analytics && !s.GPC
	s.GPCRecorded = s.GPCRecorded || s.GPC
	return s
}

// Proof is the proof-of-consent record of what this state allows at
// revision, kept under subject (the account when signed in, else the
// visitor) with the choice's source (store.ConsentBanner, ConsentSettings
// or ConsentGPC).
func (s State) Proof(subject string, revision int, source string) store.Consent {
	return store.Consent{
		Subject: subject, Visitor: s.Visitor, Revision: revision,
		Preferences: s.AllowedBy(Preferences, revision), Analytics: s.AllowedBy(Analytics, revision),
		Source: source,
	}
}

// ParseCookie reads the consent cookie's value. The cookie is
// "<visitor>.<revision>.<flags>": flags are letters d (decided),
// p (preferences), a (analytics), g (GPC opt-out recorded), or "-" for
// none. Anything malformed counts as no choice. GPC is never read from the
// cookie: it is the request's own signal.
func ParseCookie(v string) State {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || !ValidVisitor(parts[0]) {
		return State{}
	}
	rev, err := strconv.Atoi(parts[1])
	if err != nil || rev < 0 || rev > 1_000_000 {
		return State{}
	}
	s := State{Visitor: parts[0], Revision: rev}
	for _, f := range parts[2] {
		switch f {
		case 'd':
			s.Decided = true
		case 'p':
			s.Preferences = true
		case 'a':
			s.Analytics = true
		case 'g':
			s.GPCRecorded = true
		case '-':
		default:
			return State{}
		}
	}
	return s
}

// CookieValue is the consent cookie's value that ParseCookie reads back.
func (s State) CookieValue() string {
	flags := ""
	for _, f := range []struct {
		on bool
		c  string
	}{{s.Decided, "d"}, {s.Preferences, "p"}, {s.Analytics, "a"}, {s.GPCRecorded, "g"}} {
		if f.on {
			flags += f.c
		}
	}
	if flags == "" {
		flags = "-"
	}
	return s.Visitor + "." + strconv.Itoa(s.Revision) + "." + flags
}

var visitorEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewVisitorID returns a fresh random visitor id: "v" and 128 random bits.
func NewVisitorID() string {
	var b [16]byte
	rand.Read(b[:])
	return "v" + visitorEncoding.EncodeToString(b[:])
}

// ValidVisitor reports whether v is shaped like a NewVisitorID id.
func ValidVisitor(v string) bool {
	if len(v) != 27 || v[0] != 'v' {
		return false
	}
	_, err := visitorEncoding.DecodeString(v[1:])
	return err == nil
}

// View is the body of GET and PUT /v1/consent.
type View struct {
	// Revision is the cookie policy in force; Decided says whether the
	// visitor answered it (false: show the banner).
	Revision    int  `json:"revision"`
	Decided     bool `json:"decided"`
	Stale       bool `json:"stale"`
	Preferences bool `json:"preferences"`
	Analytics   bool `json:"analytics"`
	GPC         bool `json:"gpc"`
	// Updated is when the cookie policy last changed (YYYY-MM-DD).
	Updated string `json:"updated"`
}

// View is what the visitor is told about this state under the policy at
// revision, last changed on updated.
func (s State) View(revision int, updated string) View {
	cur := s.Current(revision)
	return View{
		Revision: revision, Decided: cur, Stale: s.Decided && !cur,
		Preferences: cur && s.Preferences, Analytics: cur && s.Analytics && !s.GPC,
		GPC: s.GPC, Updated: updated,
	}
}
