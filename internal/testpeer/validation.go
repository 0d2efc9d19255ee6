package testpeer

import (
	"strings"
	"testing"
)

// CheckValidation fails t unless err is what a Validate call owes: nil when
// want is empty, else an error mentioning every string of want. It reports
// whether the config was valid. Config packages under gateway/ share it.
func CheckValidation(t testing.TB, err error, want []string) bool {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		return true
	}
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	return false
}
