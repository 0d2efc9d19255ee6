package gateway

import (
	"strings"
	"testing"
)

// FuzzJobHeaders feeds the Prefer and Idempotency-Key parsers arbitrary
// header values: they never panic, respond-async is found wherever it
// stands as a preference, and an accepted key is printable ASCII within
// the length limit.
func FuzzJobHeaders(f *testing.F) {
	for _, s := range []string{"respond-async", "wait=10, respond-async", "RESPOND-ASYNC; x=1", "return=minimal", "", ",,,", "respond-async-not", "k-1", strings.Repeat("a", 256), "ключ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := prefersAsync(v)
		if !prefersAsync(v + ", Respond-Async") {
			t.Errorf("respond-async appended to %q not found", v)
		}
		if got && !strings.Contains(strings.ToLower(v), "respond-async") {
			t.Errorf("%q taken for respond-async", v)
		}
		if validIdempotencyKey(v) {
			if len(v) == 0 || len(v) > 255 {
				t.Errorf("key of %d bytes accepted", len(v))
			}
			for i := 0; i < len(v); i++ {
				if v[i] < 0x21 || v[i] > 0x7e {
					t.Errorf("key %q with byte %#x accepted", v, v[i])
				}
			}
		}
	})
}
