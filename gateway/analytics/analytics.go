// Package analytics owns how a counted page view is reduced to aggregate
// dimensions before anything is stored (promise: first-party, consent-gated
// analytics with no identifier): a path from a fixed allow-list
// (NormalizePath), a device class from the User-Agent (DeviceClass), a
// country from a trusted proxy's header (ParseCountry), and the visit
// cookie that measures visit length with nothing but two timestamps
// (VisitCookie, ParseVisitCookie). ParseDayRange reads the operator
// report's range.
//
// These are pure functions over untrusted strings. Whether a request may be
// counted at all (consent, GPC, opt-out), the routes and the store live in
// package gateway.
package analytics

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/store"
)

// VisitIdle ends a visit: a view this long after the previous one starts
// a new visit. It equals the analytics cookie's lifetime.
const VisitIdle = 30 * time.Minute

// VisitMax bounds one visit's length, so a forged or endlessly refreshed
// cookie cannot stretch a visit across days.
const VisitMax = 24 * time.Hour

// VisitCookie is the analytics cookie's value: the visit's start and its
// latest view, in Unix seconds. Nothing else, and nothing that tells one
// visitor from another who came at the same second.
func VisitCookie(start, last time.Time) string {
	return strconv.FormatInt(start.Unix(), 10) + "." + strconv.FormatInt(last.Unix(), 10)
}

// ParseVisitCookie reads the analytics cookie. ok is false — this view
// starts a new visit — when it is absent, malformed, idle for VisitIdle,
// longer than VisitMax, or not in order (start ≤ last ≤ now, allowing a
// minute of clock skew between gateways).
func ParseVisitCookie(v string, now time.Time) (start, last time.Time, ok bool) {
	a, b, found := strings.Cut(v, ".")
	if !found || !decimal(a) || !decimal(b) {
		return time.Time{}, time.Time{}, false
	}
	s, err1 := strconv.ParseInt(a, 10, 64)
	l, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, time.Time{}, false
	}
	start, last = time.Unix(s, 0), time.Unix(l, 0)
	if start.After(last) || last.After(now.Add(time.Minute)) || now.Sub(last) >= VisitIdle || last.Sub(start) > VisitMax {
		return time.Time{}, time.Time{}, false
	}
	if last.After(now) {
		last = now
	}
	if start.After(last) {
		start = last
	}
	return start, last, true
}

// decimal reports whether s is 1 to 12 ASCII digits (Unix seconds until
// the year 33658).
func decimal(s string) bool {
	if len(s) == 0 || len(s) > 12 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// analyticsPaths are the pages counted by path. A "*" segment stands for
// one id-like segment and is counted as the pattern, never the value, so
// no id, query or typed text reaches the counters; every other path is
// counted as "other".
var analyticsPaths = []string{
	"/", "/about", "/account", "/account/*", "/contact", "/cookies", "/docs", "/docs/*", "/edit", "/embed",
	"/explore", "/gallery", "/generate", "/help", "/history", "/images/*", "/login", "/pricing", "/privacy",
	"/reset-password", "/settings", "/signin", "/signup", "/terms", "/verify-email",
}

// maxAnalyticsPath bounds the raw path looked at; longer ones are "other".
const maxAnalyticsPath = 256

// NormalizePath maps a page's path, as the browser reports it, to its
// entry in analyticsPaths or store.AnalyticsOtherPath: the query and
// fragment are dropped, ASCII letters lower-cased, one trailing slash
// ignored; anything not plain ASCII is "other".
func NormalizePath(raw string) string {
	if len(raw) > maxAnalyticsPath {
		return store.AnalyticsOtherPath
	}
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if raw == "" || raw[0] != '/' {
		return store.AnalyticsOtherPath
	}
	if len(raw) > 1 {
		raw = strings.TrimSuffix(raw, "/")
	}
	var b [maxAnalyticsPath]byte
	p := b[:0]
	for i := range len(raw) {
		ch := raw[i]
		switch {
		case 'A' <= ch && ch <= 'Z':
			p = append(p, ch+'a'-'A')
		case 'a' <= ch && ch <= 'z', '0' <= ch && ch <= '9', ch == '/', ch == '-', ch == '_', ch == '.':
			p = append(p, ch)
		default:
			return store.AnalyticsOtherPath
		}
	}
	for _, pattern := range analyticsPaths {
		if pathMatches(pattern, string(p)) {
			return pattern
		}
	}
	return store.AnalyticsOtherPath
}

// pathMatches matches a lower-cased path against an allow-list pattern,
// segment by segment; "*" matches one non-empty segment other than "."
// and "..".
func pathMatches(pattern, path string) bool {
	for {
		ps, prest, pmore := strings.Cut(strings.TrimPrefix(pattern, "/"), "/")
		s, rest, more := strings.Cut(strings.TrimPrefix(path, "/"), "/")
		switch {
		case pmore != more:
			return false
		case ps == "*":
			if s == "" || s == "." || s == ".." {
				return false
			}
		case ps != s:
			return false
		}
		if !more {
			return true
		}
		pattern, path = "/"+prest, "/"+rest
	}
}

// maxUserAgent bounds how much of a User-Agent is inspected.
const maxUserAgent = 512

var (
	botMarkers = []string{"bot", "crawl", "spider", "slurp", "headless", "lighthouse", "preview", "monitor",
		"curl/", "wget/", "python-", "go-http-client", "okhttp", "java/", "httpclient", "facebookexternalhit"}
	tabletMarkers = []string{"ipad", "tablet", "kindle", "silk/", "playbook"}
	mobileMarkers = []string{"mobi", "iphone", "ipod", "android", "windows phone", "blackberry", "opera mini"}
)

// DeviceClass tells desktop, mobile, tablet and bot apart from the
// User-Agent (and the Sec-CH-UA-Mobile client hint). The User-Agent is
// read here and dropped: only the class is kept. An empty User-Agent is
// not a browser.
func DeviceClass(ua, chMobile string) string {
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
	}
	u := strings.ToLower(ua)
	has := func(markers []string) bool {
		for _, m := range markers {
			if strings.Contains(u, m) {
				return true
			}
		}
		return false
	}
	switch {
	case strings.TrimSpace(u) == "" || has(botMarkers):
		return store.DeviceBot
	case chMobile == "?1":
		return store.DeviceMobile
	case has(tabletMarkers) || (strings.Contains(u, "android") && !strings.Contains(u, "mobile")):
		return store.DeviceTablet
	case has(mobileMarkers):
		return store.DeviceMobile
	}
	return store.DeviceDesktop
}

// ParseCountry accepts an ISO 3166-1 alpha-2 code in either case. "XX"
// (Cloudflare: unknown) and "T1" (Tor) are unknown.
func ParseCountry(v string) string {
	if len(v) != 2 {
		return store.AnalyticsUnknownCountry
	}
	up := strings.ToUpper(v)
	if up[0] < 'A' || up[0] > 'Z' || up[1] < 'A' || up[1] > 'Z' || up == "XX" {
		return store.AnalyticsUnknownCountry
	}
	return up
}

// MaxRange bounds one report, in days.
const MaxRange = 366

// ParseDayRange reads an inclusive range of UTC days. Empty to is today,
// empty from 29 days before to; the range may not be reversed or longer
// than MaxRange days.
func ParseDayRange(fromQ, toQ string, now time.Time) (from, to time.Time, err error) {
	day := func(name, v string, def time.Time) (time.Time, error) {
		if v == "" {
			return def, nil
		}
		t, err := time.Parse(time.DateOnly, v)
		if err != nil || len(v) != len(time.DateOnly) {
			return time.Time{}, apierror.BadRequest("invalid_date", name+": expected YYYY-MM-DD")
		}
		return t, nil
	}
	today := now.UTC().Truncate(24 * time.Hour)
	if to, err = day("to", toQ, today); err != nil {
		return
	}
	if from, err = day("from", fromQ, to.AddDate(0, 0, -29)); err != nil {
		return
	}
	switch {
	case from.After(to):
		err = apierror.BadRequest("invalid_range", "from: must not be after to")
	case to.Sub(from) >= MaxRange*24*time.Hour:
		err = apierror.BadRequest("invalid_range", fmt.Sprintf("the range may span at most %d days", MaxRange))
	}
	return
}
