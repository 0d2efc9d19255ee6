package gateway

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestImagesResponseJSON(t *testing.T) {
	t.Parallel()
	for _, r := range []imagesResponse{
		{Created: 1, Data: []imageData{}},
		{Created: 1795406100, Data: []imageData{{URL: "https://cdn.example.com/o/ab.png?verify=1795406100-Xk_-", Seed: 4294967295}}},
		{Created: 7, Data: []imageData{{B64JSON: "iVBORw0KGgo=", Seed: 1}, {URL: `a"b\c<d>&e` + "\x01\n", Seed: 2}}},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(r.appendJSON(nil))); diff != "" {
			t.Errorf("encoding (-encoding/json +ours):\n%s", diff)
		}
	}
}

// FuzzAppendJSONString checks that any string encodes to JSON that decodes
// back to it, and, for ASCII, to exactly what encoding/json writes.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"b\`, "\x00\x1f<>&", "é\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		enc := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(enc, &back); err != nil || back != s {
			t.Fatalf("%q encoded as %s, decodes to %q (%v)", s, enc, back, err)
		}
		ascii := true
		for i := range len(s) {
			if s[i] >= 0x80 {
				ascii = false
			}
		}
		if want, _ := json.Marshal(s); ascii && string(want) != string(enc) {
			t.Fatalf("%q: ours %s, encoding/json %s", s, enc, want)
		}
	})
}
