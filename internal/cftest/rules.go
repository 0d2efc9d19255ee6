package cftest

import (
	"fmt"
	"net/url"
	"strings"
)

// Limits Cloudflare documents for purge requests.
const (
	// MaxItems is the most files, tags, hosts or prefixes one request may
	// list on the Free, Pro and Business plans.
	MaxItems = 100
	// MaxTagLen is the longest cache-tag a purge request may name.
	MaxTagLen = 1024
	// MaxPrefixSeparators is the most '/' a purge prefix may contain.
	MaxPrefixSeparators = 31
)

// CheckFile reports why Cloudflare would refuse url as an entry of a purge
// request's "files", or nil: it must be an absolute http or https URL with
// a host.
func CheckFile(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("file %q is not a valid URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("file %q is not an absolute http or https URL", s)
	}
	return nil
}

// CheckTag reports why Cloudflare would refuse tag in a purge request's
// "tags", or nil: 1 to MaxTagLen bytes of printable ASCII, no space and no
// comma (the Cache-Tag header's separator, so such a tag can match
// nothing).
func CheckTag(tag string) error {
	if tag == "" || len(tag) > MaxTagLen {
		return fmt.Errorf("tag %q must be 1 to %d characters long", tag, MaxTagLen)
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; c <= ' ' || c > '~' || c == ',' {
			return fmt.Errorf("tag %q contains a character that is not printable ASCII, or a space or comma", tag)
		}
	}
	return nil
}

// CheckHost reports why Cloudflare would refuse host in a purge request's
// "hosts", or nil: a bare hostname, without scheme, port or path.
func CheckHost(host string) error {
	if !isHostname(host) {
		return fmt.Errorf("host %q is not a bare hostname", host)
	}
	return nil
}

// CheckPrefix reports why Cloudflare would refuse prefix in a purge
// request's "prefixes", or nil: "host/path" without a scheme, without a
// query string or fragment, with at most MaxPrefixSeparators slashes.
func CheckPrefix(prefix string) error {
	if strings.Contains(prefix, "://") {
		return fmt.Errorf("prefix %q must not include a scheme", prefix)
	}
	if strings.ContainsAny(prefix, "?#") {
		return fmt.Errorf("prefix %q must not include a query string or fragment", prefix)
	}
	if n := strings.Count(prefix, "/"); n > MaxPrefixSeparators {
		return fmt.Errorf("prefix %q has %d path separators, at most %d are allowed", prefix, n, MaxPrefixSeparators)
	}
	host, _, _ := strings.Cut(prefix, "/")
	if !isHostname(host) {
		return fmt.Errorf("prefix %q does not start with a hostname", prefix)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("prefix %q contains a space or control character", prefix)
		}
	}
	return nil
}

// isHostname reports whether s is a DNS name: dot-separated labels of
// letters, digits, '-' and '_', 1 to 63 bytes each, not starting or ending
// with '-', 253 bytes at most.
func isHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
