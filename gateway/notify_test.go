package gateway

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

var loopbackSiteCases = []struct {
	host string
	ok   bool
}{
	{"localhost", true},
	{"LOCALHOST:8080", true},
	{"127.0.0.1", true},
	{"127.0.0.1:65535", true},
	{"127.8.9.10:80", true},
	{"[::1]", true},
	{"[::1]:8080", true},
	{"localhost:x.evil.example", false},
	{"127.0.0.1:80.evil.example", false},
	{"[::1]:evil.example", false},
	{"localhost:", false},
	{"localhost:0", false},
	{"localhost:65536", false},
	{"localhost:08080", false},
	{"localhost:+80", false},
	{"localhost:80:81", false},
	{"localhost.evil.example", false},
	{"evil.example", false},
	{"evil.example:8080", false},
	{"127.0.0.1.evil.example", false},
	{"::1", false},
	{"[::1%eth0]:80", false},
	{"[fe80::1]:80", false},
	{"10.0.0.1:8080", false},
	{"", false},
}

func TestLoopbackSite(t *testing.T) {
	t.Parallel()
	for _, tc := range loopbackSiteCases {
		site, ok := loopbackSite(tc.host)
		if ok != tc.ok || (ok && site != "http://"+tc.host) || (!ok && site != "") {
			t.Errorf("loopbackSite(%q) = %q, %v; want ok=%v", tc.host, site, ok, tc.ok)
		}
	}
}

func FuzzLoopbackSite(f *testing.F) {
	for _, tc := range loopbackSiteCases {
		f.Add(tc.host)
	}
	f.Fuzz(func(t *testing.T, host string) {
		site, ok := loopbackSite(host)
		if !ok {
			return
		}
		// Whatever is accepted names a loopback host and, if any, a
		// decimal port: nothing after the host but digits.
		name := strings.ToLower(host)
		if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.HasSuffix(name, "]") {
			for _, r := range name[i+1:] {
				if r < '0' || r > '9' {
					t.Fatalf("accepted %q with a port that is not a number", host)
				}
			}
			name = name[:i]
		}
		if name != "localhost" && !strings.HasPrefix(name, "127.") && name != "[::1]" && !strings.HasPrefix(name, "[0:0:0:0:0:0:0:1") && !strings.HasPrefix(name, "[::") {
			t.Fatalf("accepted the non-loopback host %q", host)
		}
		if site != "http://"+host {
			t.Fatalf("site %q for %q", site, host)
		}
	})
}

// siteURL judges the Host header itself: a Host whose "port" is another
// host's name is refused even if the HTTP server hands it over as is.
func TestSiteURLRefusesANonNumericPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		host string
		want string
	}{
		{"localhost:x.evil.example", ""},
		{"127.0.0.1:80.evil.example", ""},
		{"[::1]:evil.example", ""},
		{"localhost:8080", "http://localhost:8080"},
	} {
		rc := &fasthttp.RequestCtx{}
		rc.Request.Header.SetHost(tc.host)
		c := e.gw.App().AcquireCtx(rc)
		site, err := e.gw.siteURL(c)
		e.gw.App().ReleaseCtx(c)
		if site != tc.want || (tc.want == "" && !errors.Is(err, errNoPublicURL)) {
			t.Errorf("siteURL with Host %q = %q, %v; want %q", tc.host, site, err, tc.want)
		}
	}
}

var cutUserAgentCases = []struct{ in, want string }{
	{"", ""},
	{"Mozilla/5.0", "Mozilla/5.0"},
	{strings.Repeat("a", 256), strings.Repeat("a", 256)},
	{strings.Repeat("a", 300), strings.Repeat("a", 256)},
	{strings.Repeat("a", 255) + "é tail", strings.Repeat("a", 255)},
	{strings.Repeat("a", 254) + "é tail", strings.Repeat("a", 254) + "é"},
	{strings.Repeat("a", 253) + "😀", strings.Repeat("a", 253)},
	{strings.Repeat("日", 100), strings.Repeat("日", 85)},
	{"bad \xff byte", "bad \uFFFD byte"},
}

func TestCutUserAgent(t *testing.T) {
	t.Parallel()
	for _, tc := range cutUserAgentCases {
		if got := cutUserAgent(tc.in); got != tc.want {
			t.Errorf("cutUserAgent(%.40q…) = %.40q… (%d bytes), want %.40q… (%d bytes)", tc.in, got, len(got), tc.want, len(tc.want))
		}
	}
}

func FuzzCutUserAgent(f *testing.F) {
	for _, tc := range cutUserAgentCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		got := cutUserAgent(ua)
		if !utf8.ValidString(got) || len(got) > securityLogUA {
			t.Fatalf("cutUserAgent(%q) = %q: invalid or too long", ua, got)
		}
		if valid := strings.ToValidUTF8(ua, "\uFFFD"); !strings.HasPrefix(valid, got) || (len(valid) <= securityLogUA && got != valid) {
			t.Fatalf("cutUserAgent(%q) = %q: not the longest valid prefix", ua, got)
		}
		if len(got) < securityLogUA-utf8.UTFMax && len(got) < len(strings.ToValidUTF8(ua, "\uFFFD")) {
			t.Fatalf("cutUserAgent(%q) cut %d bytes short", ua, len(got))
		}
	})
}

// The security log keeps a user agent cut on a character boundary.
func TestSecurityLogCutsUserAgentOnACharacterBoundary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	_, acct := e.signedIn("ua@example.com")
	ua := strings.Repeat("a", 255) + "é/1.0"
	b := e.browser()
	b.header.Set("User-Agent", ua)
	want(t, b.call("POST", "/v1/auth/login", `{"email":"ua@example.com","password":"`+testPassword+`"}`, nil), 200)
	events, err := e.db.SecurityEvents(acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range events {
		if !strings.HasPrefix(ev.UserAgent, "aaaa") {
			continue
		}
		found = true
		if !utf8.ValidString(ev.UserAgent) || ev.UserAgent != strings.Repeat("a", 255) {
			t.Errorf("security log kept user agent %q (%d bytes), want the 255 whole characters", ev.UserAgent, len(ev.UserAgent))
		}
	}
	if !found {
		t.Fatal("no security event carries the user agent")
	}
}
