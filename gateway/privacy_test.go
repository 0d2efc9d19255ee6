package gateway

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

// TestInferenceRequestCarriesNoIdentity checks promise X1: what crosses to
// the GPU tier is generation parameters and transient inputs, and the tier's
// code cannot reach who asked because it does not import the packages that
// know.
func TestInferenceRequestCarriesNoIdentity(t *testing.T) {
	t.Parallel()
	fields := (&inferencev1.GenerateRequest{}).ProtoReflect().Descriptor().Fields()
	var got []string
	for i := range fields.Len() {
		got = append(got, string(fields.Get(i).Name()))
	}
	slices.Sort(got)
	want := []string{"guidance", "height", "model", "negative_prompt", "output_format", "prompt", "reference_image", "seed", "steps", "strength", "style", "width"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GenerateRequest fields changed (-want +got); a new field must not identify the requester:\n%s", diff)
	}

	forbidden := []string{"/gateway", "/store", "/cache"}
	err := filepath.Walk("../inference", func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if strings.HasPrefix(path, "github.com/imagegate/imagegate"+bad) {
					t.Errorf("%s imports %s: the inference tier must not learn who asked", p, path)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
