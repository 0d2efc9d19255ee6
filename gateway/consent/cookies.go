package consent

import (
	"slices"
	"time"
)

// Category is a consent category (promise K1).
type Category string

// The consent categories. Necessary cookies need no consent; the others
// need the visitor's current choice.
const (
	Necessary   Category = "necessary"
	Preferences Category = "preferences"
	Analytics   Category = "analytics"
)

// Cookie names.
const (
	CookieSession   = "__Host-imagegate_session"
	CookieOAuth     = "__Host-imagegate_oauth"
	CookieAdmin     = "__Host-imagegate_admin"
	CookieConsent   = "__Host-imagegate_consent"
	CookiePrefs     = "__Host-imagegate_prefs"
	CookieAnalytics = "__Host-imagegate_visit"
)

// AdminSessionTTL is how long an operator's dashboard session lasts, and
// so the Max-Age of its cookie.
const AdminSessionTTL = 30 * time.Minute

// Spec declares a cookie the gateway may set. The cookie policy
// (GET /cookies, GET /v1/cookies) is rendered from these declarations, and
// the consent filter drops any Set-Cookie whose name is not declared here
// or whose category the visitor has not allowed (promises K1, K6). Only
// the exported fields are part of the published policy (its JSON).
type Spec struct {
	Name     string   `json:"name"`
	Category Category `json:"category"`
	Purpose  string   `json:"purpose"`
	Lifetime string   `json:"lifetime"`
	// maxAge is the cookie's Max-Age; zero makes a browser-session cookie.
	maxAge time.Duration
	// script marks a cookie the site's own pages may read (no HttpOnly).
	script bool
	// strict sends the cookie with same-site navigations only
	// (SameSite=Strict) instead of Lax.
	strict bool
}

// MaxAge is the cookie's Max-Age; zero means a browser-session cookie.
func (s Spec) MaxAge() time.Duration { return s.maxAge }

// Script reports whether the site's own pages may read the cookie, so it
// is set without HttpOnly.
func (s Spec) Script() bool { return s.script }

// Strict reports whether the cookie is SameSite=Strict rather than Lax.
func (s Spec) Strict() bool { return s.strict }

// registry is every cookie imagegate can set. All are first-party,
// host-only (__Host-), Secure and SameSite=Lax unless strict.
var registry = []Spec{
	{Name: CookieSession, Category: Necessary,
		Purpose: "Keeps you signed in. Holds a random session token; the server stores only its hash.",
		// The session itself ends earlier on inactivity or sign-out.
		Lifetime: "30 days at most (ends at sign-out or after 7 days without use)", maxAge: 30 * 24 * time.Hour},
	{Name: CookieOAuth, Category: Necessary,
		Purpose:  "Protects Sign in with Google against forged requests (state and PKCE verifier).",
		Lifetime: "10 minutes", maxAge: 10 * time.Minute},
	{Name: CookieAdmin, Category: Necessary,
		Purpose:  "Keeps an operator signed in to the dashboard at /admin (operators only; SameSite=Strict).",
		Lifetime: "30 minutes", maxAge: AdminSessionTTL, strict: true},
	{Name: CookieConsent, Category: Necessary,
		Purpose:  "Remembers your cookie choice and the policy revision you answered, so we do not ask again.",
		Lifetime: "1 year", maxAge: 365 * 24 * time.Hour},
	{Name: CookiePrefs, Category: Preferences,
		Purpose:  "Remembers your default image size, style and output format.",
		Lifetime: "1 year", maxAge: 365 * 24 * time.Hour, script: true},
	{Name: CookieAnalytics, Category: Analytics,
		Purpose:  "First-party, aggregated analytics: holds only when your visit started and when you were last active, to measure visit length. No identifier, never shared.",
		Lifetime: "30 minutes after your last page view", maxAge: 30 * time.Minute},
}

// Cookies returns every declared cookie, in the policy's order. The slice
// is the caller's own.
func Cookies() []Spec { return slices.Clone(registry) }

// Lookup returns the declaration of the named cookie.
func Lookup(name string) (Spec, bool) {
	for _, s := range registry {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}
