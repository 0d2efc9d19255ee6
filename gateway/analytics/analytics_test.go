package analytics

import (
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imagegate/imagegate/store"
)

func TestParseDayRange(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 15, 4, 5, 0, time.UTC)
	day := func(s string) time.Time { d, _ := time.Parse(time.DateOnly, s); return d }
	for _, tc := range []struct {
		from, to         string
		wantFrom, wantTo string
		ok               bool
	}{
		{"", "", "2026-11-02", "2026-12-01", true},
		{"2026-11-30", "", "2026-11-30", "2026-12-01", true},
		{"", "2026-06-30", "2026-06-01", "2026-06-30", true},
		{"2025-12-01", "2026-12-01", "2025-12-01", "2026-12-01", true},
		{"2025-11-30", "2026-12-01", "", "", false},
		{"2026-12-02", "2026-12-01", "", "", false},
		{"2026-2-01", "", "", "", false},
		{"2026-12-01T00:00:00Z", "", "", "", false},
	} {
		from, to, err := ParseDayRange(tc.from, tc.to, now)
		if (err == nil) != tc.ok {
			t.Errorf("ParseDayRange(%q, %q): err %v, want ok=%v", tc.from, tc.to, err, tc.ok)
			continue
		}
		if tc.ok && (!from.Equal(day(tc.wantFrom)) || !to.Equal(day(tc.wantTo))) {
			t.Errorf("ParseDayRange(%q, %q) = %s..%s, want %s..%s", tc.from, tc.to, from, to, tc.wantFrom, tc.wantTo)
		}
	}
}

var normalizePathCases = []struct{ in, want string }{
	{"/", "/"},
	{"", "other"},
	{"pricing", "other"},
	{"/pricing", "/pricing"},
	{"/pricing/", "/pricing"},
	{"/PRICING", "/pricing"},
	{"/pricing?utm_source=newsletter&email=a@b.c", "/pricing"},
	{"/pricing#plans", "/pricing"},
	{"/images/abc123", "/images/*"},
	{"/images/abc123/", "/images/*"},
	{"/images", "other"},
	{"/images/", "other"},
	{"/images/..", "other"},
	{"/images/a/b", "other"},
	{"/docs", "/docs"},
	{"/docs/getting-started", "/docs/*"},
	{"/account/settings", "/account/*"},
	{"//pricing", "other"},
	{"/pricing//", "other"},
	{"/a%20b", "other"},
	{"/search/my secret prompt", "other"},
	{"/gallery/ünïcode", "other"},
	{"/users/ada@example.com", "other"},
	{"https://example.com/pricing", "other"},
	{"/" + strings.Repeat("a", 300), "other"},
	{"/pricing\x00", "other"},
}

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	for _, tc := range normalizePathCases {
		if got := NormalizePath(tc.in); got != tc.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Every allow-listed page is reachable as itself.
	for _, p := range analyticsPaths {
		in := strings.ReplaceAll(p, "*", "x1")
		if got := NormalizePath(in); got != p {
			t.Errorf("NormalizePath(%q) = %q, want the allow-list entry %q", in, got, p)
		}
	}
}

// storedPath is the shape store.RecordPageView accepts for a path.
var storedPath = regexp.MustCompile(`^(other|/[a-z0-9/*._-]{0,63})$`)

// FuzzNormalizePath checks that whatever a browser (or anyone) sends, the
// counted path is an allow-list entry or "other": never free text.
func FuzzNormalizePath(f *testing.F) {
	for _, tc := range normalizePathCases {
		f.Add(tc.in)
	}
	allowed := map[string]bool{store.AnalyticsOtherPath: true}
	for _, p := range analyticsPaths {
		allowed[p] = true
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := NormalizePath(in)
		if !allowed[got] || !storedPath.MatchString(got) {
			t.Fatalf("NormalizePath(%q) = %q: not an allow-list entry", in, got)
		}
		if got != store.AnalyticsOtherPath && NormalizePath(got) != got && !strings.Contains(got, "*") {
			t.Fatalf("NormalizePath is not idempotent on %q", got)
		}
	})
}

var deviceClassCases = []struct{ ua, chMobile, want string }{
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36", "?0", store.DeviceDesktop},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15", "", store.DeviceDesktop},
	{"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "", store.DeviceDesktop},
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "", store.DeviceMobile},
	{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36", "?1", store.DeviceMobile},
	{"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", "?1", store.DeviceMobile},
	{"Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", "?0", store.DeviceTablet},
	{"Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "", store.DeviceTablet},
	{"Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1) Mobile", "", store.DeviceMobile},
	{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "", store.DeviceBot},
	{"Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Mobile Safari/537.36 (compatible; Googlebot/2.1)", "?1", store.DeviceBot},
	{"Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/131.0 Safari/537.36", "", store.DeviceBot},
	{"curl/8.5.0", "", store.DeviceBot},
	{"Go-http-client/1.1", "", store.DeviceBot},
	{"", "", store.DeviceBot},
	{"   ", "?1", store.DeviceBot},
}

func TestDeviceClass(t *testing.T) {
	t.Parallel()
	for _, tc := range deviceClassCases {
		if got := DeviceClass(tc.ua, tc.chMobile); got != tc.want {
			t.Errorf("DeviceClass(%q, %q) = %q, want %q", tc.ua, tc.chMobile, got, tc.want)
		}
	}
}

var parseCountryCases = []struct{ in, want string }{
	{"IS", "IS"}, {"de", "DE"}, {"Fr", "FR"}, {"XX", "unknown"}, {"T1", "unknown"}, {"", "unknown"},
	{"USA", "unknown"}, {"1A", "unknown"}, {"é", "unknown"}, {"203.0.113.9", "unknown"},
}

func TestParseCountry(t *testing.T) {
	t.Parallel()
	for _, tc := range parseCountryCases {
		if got := ParseCountry(tc.in); got != tc.want {
			t.Errorf("ParseCountry(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzDeviceAndCountry checks that the User-Agent and the country header
// only ever become one of the fixed classes or a two-letter code.
func FuzzDeviceAndCountry(f *testing.F) {
	for _, tc := range deviceClassCases {
		f.Add(tc.ua, tc.chMobile)
	}
	for _, tc := range parseCountryCases {
		f.Add(tc.in, "")
	}
	country := regexp.MustCompile(`^([A-Z]{2}|unknown)$`)
	f.Fuzz(func(t *testing.T, ua, hint string) {
		switch d := DeviceClass(ua, hint); d {
		case store.DeviceDesktop, store.DeviceMobile, store.DeviceTablet, store.DeviceBot:
		default:
			t.Fatalf("DeviceClass(%q) = %q", ua, d)
		}
		if c := ParseCountry(ua); !country.MatchString(c) || c == "XX" {
			t.Fatalf("ParseCountry(%q) = %q", ua, c)
		}
	})
}

var visitCookieCases = []struct {
	name, value string
	ok          bool
	start, last int64 // offsets from now in seconds, when ok
}{
	{"fresh", "", false, 0, 0},
	{"continuing", "1764583200.1764583800", true, -900, -300},
	{"just now", "1764583800.1764584100", true, -300, 0},
	{"skew clamps to now", "1764584100.1764584130", true, 0, 0},
	{"too far ahead", "1764584100.1764584200", false, 0, 0},
	{"idle too long", "1764580000.1764582300", false, 0, 0},
	{"longer than a day", "1764490000.1764584000", false, 0, 0},
	{"reversed", "1764584000.1764583000", false, 0, 0},
	{"negative", "-1.1764584000", false, 0, 0},
	{"extra part", "1764583200.1764583800.1", false, 0, 0},
	{"spaces", " 1764583200.1764583800", false, 0, 0},
	{"too many digits", "0000000000001764583200.1764583800", false, 0, 0},
	{"letters", "abc.def", false, 0, 0},
	{"identifier smuggled", "1764583200.1764583800-vabcdef", false, 0, 0},
}

func TestParseVisitCookie(t *testing.T) {
	t.Parallel()
	now := time.Unix(1764584100, 0)
	for _, tc := range visitCookieCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start, last, ok := ParseVisitCookie(tc.value, now)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && (start.Unix()-now.Unix() != tc.start || last.Unix()-now.Unix() != tc.last) {
				t.Errorf("start %+d s, last %+d s; want %+d, %+d", start.Unix()-now.Unix(), last.Unix()-now.Unix(), tc.start, tc.last)
			}
		})
	}
}

// FuzzVisitCookie checks that any cookie value either starts a new visit
// or yields an ordered visit no longer than VisitMax, last seen within
// VisitIdle, never in the future — so the store is never handed times it
// would misattribute.
func FuzzVisitCookie(f *testing.F) {
	for _, tc := range visitCookieCases {
		f.Add(tc.value)
	}
	now := time.Unix(1764584100, 0)
	f.Fuzz(func(t *testing.T, v string) {
		start, last, ok := ParseVisitCookie(v, now)
		if !ok {
			return
		}
		if start.After(last) || last.After(now) || now.Sub(last) >= VisitIdle || last.Sub(start) > VisitMax {
			t.Fatalf("ParseVisitCookie(%q) = %v, %v: out of bounds", v, start, last)
		}
		if !utf8.ValidString(v) || strings.Count(v, ".") != 1 {
			t.Fatalf("accepted a malformed cookie %q", v)
		}
		s2, l2, ok2 := ParseVisitCookie(VisitCookie(start, last), now)
		if !ok2 || !s2.Equal(start) || !l2.Equal(last) {
			t.Fatalf("the cookie written for %q does not read back: %v %v %v", v, s2, l2, ok2)
		}
	})
}

func BenchmarkPageViewDimensions(b *testing.B) {
	ua := deviceClassCases[4].ua
	b.ReportAllocs()
	for b.Loop() {
		NormalizePath("/images/abc123?ref=home")
		DeviceClass(ua, "")
		ParseCountry("de")
	}
}
