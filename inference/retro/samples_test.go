//go:build retrosamples

package retro

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/inference"
)

// TestWriteSamples renders a gallery for eyeballing the art into the
// directory RETRO_SAMPLES names; RETRO_SAMPLE_REF may name a reference
// image for edit samples. It is a tool, not a check, so it is built only
// with its tag (`make test` fails on any skip):
//
//	RETRO_SAMPLES=/tmp/retro go test -tags retrosamples -run TestWriteSamples ./inference/retro/
func TestWriteSamples(t *testing.T) {
	dir := os.Getenv("RETRO_SAMPLES")
	if dir == "" {
		t.Fatal("set RETRO_SAMPLES=/some/dir to write sample images")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := New()
	cases := []struct {
		name string
		req  inference.Request
	}{
		{"synthwave-default", inference.Request{Prompt: "neon sunset", Style: "synthwave", Seed: 1}},
		{"synthwave-city-ocean", inference.Request{Prompt: "city by the ocean at sunset with palms", Style: "synthwave", Seed: 2}},
		{"synthwave-night", inference.Request{Prompt: "night mountains grid clouds", Style: "synthwave", Seed: 3}},
		{"synthwave-ice", inference.Request{Prompt: "ice mountains sun grid stars", Style: "synthwave", Seed: 4}},
		{"synthwave-green", inference.Request{Prompt: "green matrix grid sun mountains", Style: "synthwave", Seed: 5}},
		{"vaporwave-default", inference.Request{Prompt: "aesthetic", Style: "vaporwave", Seed: 1}},
		{"vaporwave-ocean", inference.Request{Prompt: "pastel ocean sunset palms spheres", Style: "vaporwave", Seed: 2}},
		{"skyline-night", inference.Request{Prompt: "pixel city at night", Style: "pixel-skyline", Seed: 1}},
		{"skyline-sunset-water", inference.Request{Prompt: "city skyline at sunset over the water", Style: "pixel-skyline", Seed: 2}},
		{"skyline-neon", inference.Request{Prompt: "neon cyberpunk city clouds", Style: "pixel-skyline", Seed: 3}},
		{"gameboy-default", inference.Request{Prompt: "forest and mountains", Style: "gameboy", Seed: 1}},
		{"gameboy-lake", inference.Request{Prompt: "lake at night with moon and trees", Style: "gameboy", Seed: 2}},
		{"cga-default", inference.Request{Prompt: "mountains trees clouds sun", Style: "cga", Seed: 1}},
		{"cga-warm", inference.Request{Prompt: "amber sunset lake", Style: "cga", Seed: 2}},
		{"blueprint-default", inference.Request{Prompt: "blueprint", Style: "blueprint", Seed: 1}},
		{"blueprint-ocean", inference.Request{Prompt: "palm ocean moon stars clouds", Style: "blueprint", Seed: 2}},
		{"auto-crt", inference.Request{Prompt: "outrun crt sunset palms", Style: "auto", Seed: 9}},
		{"wide-synthwave", inference.Request{Prompt: "neon grid sunset mountains", Style: "synthwave", Seed: 7, Width: 1024, Height: 512}},
		{"tall-skyline", inference.Request{Prompt: "pixel city night", Style: "pixel-skyline", Seed: 7, Width: 512, Height: 1024}},
	}
	ref := os.Getenv("RETRO_SAMPLE_REF")
	var refData []byte
	if ref != "" {
		var err error
		if refData, err = os.ReadFile(ref); err != nil {
			t.Fatal(err)
		}
		for _, st := range styleNames[1:] {
			cases = append(cases, struct {
				name string
				req  inference.Request
			}{"edit-" + st, inference.Request{Prompt: "x", Style: st, Reference: refData, Strength: 1}})
		}
		cases = append(cases, struct {
			name string
			req  inference.Request
		}{"edit-half", inference.Request{Prompt: "x", Style: "gameboy", Reference: refData, Strength: 0.5}},
			struct {
				name string
				req  inference.Request
			}{"edit-amber-crt", inference.Request{Prompt: "amber crt", Style: "synthwave", Reference: refData, Strength: 1}},
		)
	}
	for _, c := range cases {
		if c.req.Width == 0 {
			c.req.Width, c.req.Height = 512, 512
		}
		res, err := b.Generate(t.Context(), c.req, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		name := strings.ReplaceAll(c.name, "/", "_") + ".png"
		if err := os.WriteFile(filepath.Join(dir, name), res.Image, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", name, len(res.Image))
	}
}
