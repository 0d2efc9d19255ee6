package store

import (
	"strings"
	"testing"
)

var originCases = []struct {
	in, want string // want "" means refused
}{
	{"https://shop.example", "https://shop.example"},
	{"HTTPS://Shop.Example", "https://shop.example"},
	{"https://shop.example/", "https://shop.example"},
	{"https://shop.example:443", "https://shop.example"},
	{"http://shop.example:80", "http://shop.example"},
	{"http://127.0.0.2:8080", "http://127.0.0.2:8080"},
	{"https://[::1]:8443", "https://[::1]:8443"},
	{"https://xn--bcher-kva.example", "https://xn--bcher-kva.example"},
	{"https://shop.example:8443", "https://shop.example:8443"},
	{"", ""},
	{"null", ""},
	{"*", ""},
	{"https://*.example", ""},
	{"shop.example", ""},
	{"ftp://shop.example", ""},
	{"javascript:alert(1)", ""},
	{"https://shop.example/path", ""},
	{"https://shop.example?x=1", ""},
	{"https://shop.example#top", ""},
	{"https://user:pw@shop.example", ""},
	{"https://shop.example:", ""},
	{"https://shop.example:0", ""},
	{"https://shop.example:65536", ""},
	{"https://shop.example:080", ""},
	{"https://bücher.example", ""},
	{"https://-bad.example", ""},
	{"https://a..example", ""},
	{"https://", ""},
	{"https://shop.example; script-src *", ""},
	{"https://shop.example\r\nX: y", ""},
}

func TestParseOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range originCases {
		got, err := ParseOrigin(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseOrigin(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseOrigin(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseOrigin checks that whatever ParseOrigin accepts is canonical
// (parsing it again gives itself) and can go into a CSP source list and a
// header unchanged.
func FuzzParseOrigin(f *testing.F) {
	for _, tc := range originCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOrigin(s)
		if err != nil {
			return
		}
		again, err := ParseOrigin(o)
		if err != nil || again != o {
			t.Fatalf("ParseOrigin(%q) = %q, which parses to %q, %v", s, o, again, err)
		}
		if strings.ContainsAny(o, " ;,'\"\r\n\t*") || !(strings.HasPrefix(o, "https://") || strings.HasPrefix(o, "http://")) {
			t.Fatalf("ParseOrigin(%q) = %q: unsafe in a CSP source list", s, o)
		}
	})
}
