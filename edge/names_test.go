package edge

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testHash = "f35078415e97ca521f0bb4f9b08d2f2cd9bcaf68a7606a41fcecf9d83885daea"

var nameCases = []struct {
	name  string
	valid bool
}{
	{"o/" + testHash + ".png", true},
	{"k/v1-0123abcd.json", true},
	{"a", true},
	{"a/b/c/d_e-f.g.bin", true},
	{"a..b/c", true}, // dots inside a segment are harmless
	{strings.Repeat("a", 255), true},
	{strings.Repeat("a/", 255) + "aa", true}, // 512 bytes
	{"", false},
	{"/o/x.png", false},
	{"o/x.png/", false},
	{"o//x.png", false},
	{"..", false},
	{"../x", false},
	{"o/../x", false},
	{"o/./x", false},
	{".", false},
	{".hidden", false},
	{"o/.tmp-0123456789abcdef", false},
	{`o\x.png`, false},
	{"o/x\x00.png", false},
	{"O/X.PNG", false},
	{"o/x y.png", false},
	{"o/x.png?v=1", false},
	{"c:/x", false},
	{"o/é.png", false},
	{strings.Repeat("a", 256), false},
	{strings.Repeat("a/", 256) + "a", false}, // 513 bytes
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tc := range nameCases {
		t.Run(strings.ReplaceAll(tc.name, "/", "|"), func(t *testing.T) {
			t.Parallel()
			err := validateName(tc.name)
			if tc.valid && err != nil {
				t.Fatalf("validateName: %v, want nil", err)
			}
			if !tc.valid && !errors.Is(err, ErrInvalidName) {
				t.Fatalf("validateName = %v, want ErrInvalidName", err)
			}
		})
	}
}

// FuzzValidateName checks that whatever validateName lets through cannot
// leave the store's directory or touch a temporary file.
func FuzzValidateName(f *testing.F) {
	for _, tc := range nameCases {
		f.Add(tc.name)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if validateName(name) != nil {
			return
		}
		if len(name) > maxNameLen || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
			t.Fatalf("accepted %q", name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == "" || seg[0] == '.' || strings.HasPrefix(seg, tempPrefix) {
				t.Fatalf("accepted %q with segment %q", name, seg)
			}
		}
	})
}

func TestHashHexAndOutputName(t *testing.T) {
	t.Parallel()
	// printf abc | sha256sum
	const abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := HashHex([]byte("abc")); got != abc {
		t.Errorf("HashHex(abc) = %s, want %s", got, abc)
	}
	name := OutputName(abc, "png")
	if want := "o/" + abc + ".png"; name != want {
		t.Errorf("OutputName = %q, want %q", name, want)
	}
	if err := validateName(name); err != nil {
		t.Errorf("OutputName is not a valid object name: %v", err)
	}
	hash, ext, ok := ParseOutputPath("/" + name)
	if diff := cmp.Diff([]any{abc, "png", true}, []any{hash, ext, ok}); diff != "" {
		t.Errorf("ParseOutputPath(/OutputName) (-want +got):\n%s", diff)
	}
}

var outputPathCases = []struct {
	path      string
	hash, ext string
	ok        bool
}{
	{"/o/" + testHash + ".png", testHash, "png", true},
	{"/o/" + testHash + ".jpg", testHash, "jpg", true},
	{"/o/" + testHash + ".webp", testHash, "webp", true},
	{"/o/" + testHash + ".gif", testHash, "gif", true},
	{"/o/" + testHash + ".jpeg", "", "", false},
	{"/o/" + testHash + ".json", "", "", false},
	{"/o/" + testHash + ".PNG", "", "", false},
	{"/o/" + testHash + ".png?verify=1", "", "", false},
	{"/o/" + testHash + ".png/", "", "", false},
	{"/o/" + testHash + ".", "", "", false},
	{"/o/" + testHash + "png", "", "", false},
	{"/o/" + testHash, "", "", false},
	{"/o/" + strings.ToUpper(testHash) + ".png", "", "", false},
	{"/o/" + testHash[:63] + ".png", "", "", false},
	{"/o/" + testHash + "0.png", "", "", false},
	{"/o/" + testHash[:63] + "g.png", "", "", false},
	{"o/" + testHash + ".png", "", "", false},
	{"//o/" + testHash + ".png", "", "", false},
	{"/O/" + testHash + ".png", "", "", false},
	{"/o/../" + testHash[6:] + ".png", "", "", false},
	{"/o/%66" + testHash[1:] + ".png", "", "", false},
	{"", "", "", false},
	{"/o/", "", "", false},
}

func TestParseOutputPath(t *testing.T) {
	t.Parallel()
	for _, tc := range outputPathCases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			hash, ext, ok := ParseOutputPath(tc.path)
			if diff := cmp.Diff([]any{tc.hash, tc.ext, tc.ok}, []any{hash, ext, ok}); diff != "" {
				t.Errorf("ParseOutputPath(%q) (-want +got):\n%s", tc.path, diff)
			}
		})
	}
}

// FuzzParseOutputPath checks that every accepted path is exactly the
// public form of an output name, so nothing else reaches the store.
func FuzzParseOutputPath(f *testing.F) {
	for _, tc := range outputPathCases {
		f.Add(tc.path)
	}
	f.Fuzz(func(t *testing.T, path string) {
		hash, ext, ok := ParseOutputPath(path)
		if !ok {
			if hash != "" || ext != "" {
				t.Fatalf("ParseOutputPath(%q) = %q, %q, false; want empty results", path, hash, ext)
			}
			return
		}
		if got := "/" + OutputName(hash, ext); got != path {
			t.Fatalf("ParseOutputPath(%q) = %q, %q; they name %q", path, hash, ext, got)
		}
		if err := validateName(OutputName(hash, ext)); err != nil {
			t.Fatalf("ParseOutputPath(%q) accepted an invalid object name: %v", path, err)
		}
	})
}

func TestContentTypeForExt(t *testing.T) {
	t.Parallel()
	for ext, want := range map[string]string{
		"png": "image/png", ".png": "image/png", "PNG": "image/png",
		"jpg": "image/jpeg", "jpeg": "image/jpeg", ".JPG": "image/jpeg",
		"webp": "image/webp", "gif": "image/gif", ".json": "application/json",
		"": "application/octet-stream", "bin": "application/octet-stream", "png.exe": "application/octet-stream",
	} {
		if got := ContentTypeForExt(ext); got != want {
			t.Errorf("ContentTypeForExt(%q) = %q, want %q", ext, got, want)
		}
	}
}
