package retro

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/imagegate/imagegate/inference"
)

func generate(t testing.TB, req inference.Request) []byte {
	t.Helper()
	res, err := New().Generate(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("Generate(%q, %s, %dx%d): %v", req.Prompt, req.Style, req.Width, req.Height, err)
	}
	return res.Image
}

func req256(prompt, style string, seed uint64) inference.Request {
	return inference.Request{Prompt: prompt, Style: style, Seed: seed, Width: 256, Height: 256, Steps: 30, Guidance: 7.5}
}

func TestInfo(t *testing.T) {
	t.Parallel()
	got := New().Info()
	want := inference.ModelInfo{
		Name: "retro", Version: "1", Kind: "procedural",
		Styles:        []string{"auto", "synthwave", "vaporwave", "pixel-skyline", "gameboy", "cga", "blueprint"},
		Sizes:         []int{256, 512, 1024},
		SupportsEdits: true, CaseInsensitive: true,
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(inference.ModelInfo{}, "Description")); diff != "" {
		t.Errorf("Info() mismatch (-want +got):\n%s", diff)
	}
	d := strings.ToLower(got.Description)
	for _, s := range []string{"procedural", "not a neural model", "deterministic"} {
		if !strings.Contains(d, s) {
			t.Errorf("Description %q does not say %q", got.Description, s)
		}
	}
	// Callers get their own copy of the style list.
	got.Styles[0] = "changed"
	if New().Info().Styles[0] != "auto" {
		t.Error("Info().Styles aliases package state")
	}
}

func TestEveryStyleRenders(t *testing.T) {
	t.Parallel()
	for _, style := range New().Info().Styles {
		t.Run(style, func(t *testing.T) {
			t.Parallel()
			data := generate(t, req256("neon sunset over the city with palms and mountains", style, 7))
			img, err := png.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("output is not a PNG: %v", err)
			}
			if _, ok := img.(*image.Paletted); !ok {
				t.Errorf("output decodes as %T, want a paletted PNG", img)
			}
			if n := distinctColors(img); n < 3 {
				t.Errorf("output has %d colours; a picture needs more", n)
			}
		})
	}
}

func distinctColors(img image.Image) int {
	seen := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bb, _ := img.At(x, y).RGBA()
			seen[[3]uint32{r, g, bb}] = true
		}
	}
	return len(seen)
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	ref := testPNG(t, 200, 150)
	reqs := []inference.Request{
		req256("synthwave sunset grid", "synthwave", 1),
		req256("pixel city at night", "pixel-skyline", 2),
		req256("gameboy forest", "gameboy", 3),
		req256("blueprint of a city", "auto", 4),
		{Prompt: "crt", Style: "cga", Width: 256, Height: 512, Reference: ref, Strength: 0.7},
		{Prompt: "neon", Style: "synthwave", Width: 256, Height: 256, Reference: ref, Strength: 1},
	}
	b := New()
	for i, req := range reqs {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			want := generate(t, req)
			// Many goroutines on one Backend must all produce the same bytes.
			const n = 6
			outs := make([][]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for j := range n {
				wg.Go(func() {
					res, err := b.Generate(t.Context(), req, nil)
					outs[j], errs[j] = res.Image, err
				})
			}
			wg.Wait()
			for j := range n {
				if errs[j] != nil {
					t.Fatalf("concurrent call %d: %v", j, errs[j])
				}
				if !bytes.Equal(outs[j], want) {
					t.Errorf("concurrent call %d produced different bytes", j)
				}
			}
		})
	}
}

func TestDifferentRequestsDiffer(t *testing.T) {
	t.Parallel()
	base := req256("neon sunset", "synthwave", 1)
	variants := map[string]inference.Request{}
	add := func(name string, f func(r *inference.Request)) {
		r := base
		f(&r)
		variants[name] = r
	}
	add("base", func(*inference.Request) {})
	add("prompt", func(r *inference.Request) { r.Prompt = "ocean palms" })
	add("seed", func(r *inference.Request) { r.Seed = 2 })
	add("style", func(r *inference.Request) { r.Style = "vaporwave" })
	add("negative", func(r *inference.Request) { r.NegativePrompt = "mountains" })
	add("steps", func(r *inference.Request) { r.Steps = 100 })
	add("guidance", func(r *inference.Request) { r.Guidance = 20 })
	for _, s := range []string{"pixel-skyline", "gameboy", "cga", "blueprint"} {
		add(s, func(r *inference.Request) { r.Style = s })
	}
	seen := map[string]string{}
	for name, r := range variants {
		data := string(generate(t, r))
		if other, ok := seen[data]; ok {
			t.Errorf("%s and %s produced identical images", name, other)
		}
		seen[data] = name
	}
}

func TestCaseAndSpacingInsensitive(t *testing.T) {
	t.Parallel()
	want := generate(t, req256("neon sunset", "auto", 5))
	for _, p := range []string{"Neon SUNSET", "  neon\tsunset ", "NEON  Sunset"} {
		if got := generate(t, req256(p, "auto", 5)); !bytes.Equal(got, want) {
			t.Errorf("prompt %q renders differently from %q", p, "neon sunset")
		}
	}
	neg := req256("city", "synthwave", 5)
	neg.NegativePrompt = "Mountains"
	want = generate(t, neg)
	neg.NegativePrompt = "mountains"
	if got := generate(t, neg); !bytes.Equal(got, want) {
		t.Error("negative prompt is case-sensitive")
	}
}

func TestSizes(t *testing.T) {
	t.Parallel()
	sizes := []int{256, 512, 1024}
	styles := styleNames[1:]
	i := 0
	for _, w := range sizes {
		for _, h := range sizes {
			style := styles[i%len(styles)]
			i++
			t.Run(fmt.Sprintf("%dx%d-%s", w, h, style), func(t *testing.T) {
				t.Parallel()
				req := req256("stars city ocean palms", style, 3)
				req.Width, req.Height = w, h
				res, err := New().Generate(t.Context(), req, nil)
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := png.DecodeConfig(bytes.NewReader(res.Image))
				if err != nil {
					t.Fatal(err)
				}
				got := [4]int{cfg.Width, cfg.Height, res.Width, res.Height}
				if diff := cmp.Diff([4]int{w, h, w, h}, got); diff != "" {
					t.Errorf("size (-want +got):\n%s", diff)
				}
				if res.ContentType != "image/png" {
					t.Errorf("ContentType = %q", res.ContentType)
				}
			})
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	ok := req256("sunset", "synthwave", 1)
	ref := testPNG(t, 64, 64)
	cases := map[string]func(r *inference.Request){
		"width 0":          func(r *inference.Request) { r.Width = 0 },
		"width 300":        func(r *inference.Request) { r.Width = 300 },
		"height 2048":      func(r *inference.Request) { r.Height = 2048 },
		"negative size":    func(r *inference.Request) { r.Width, r.Height = -256, -256 },
		"unknown style":    func(r *inference.Request) { r.Style = "impressionist" },
		"style wrong case": func(r *inference.Request) { r.Style = "Synthwave" },
		"strength < 0":     func(r *inference.Request) { r.Reference, r.Strength = ref, -0.1 },
		"strength > 1":     func(r *inference.Request) { r.Reference, r.Strength = ref, 1.01 },
		"strength NaN":     func(r *inference.Request) { r.Reference, r.Strength = ref, float32(math.NaN()) },
		"guidance NaN":     func(r *inference.Request) { r.Guidance = float32(math.NaN()) },
		"guidance -1":      func(r *inference.Request) { r.Guidance = -1 },
		"steps -1":         func(r *inference.Request) { r.Steps = -1 },
		"not an image":     func(r *inference.Request) { r.Reference = []byte("definitely not an image") },
		"truncated png":    func(r *inference.Request) { r.Reference = ref[:len(ref)/2] },
		"png bomb":         func(r *inference.Request) { r.Reference = pngHeader(100000, 100000) },
		"just over limit":  func(r *inference.Request) { r.Reference = pngHeader(8000, 5001) },
		"zero width png":   func(r *inference.Request) { r.Reference = pngHeader(0, 10) },
		"jpeg magic only":  func(r *inference.Request) { r.Reference = []byte{0xff, 0xd8, 0xff} },
		"gif magic only":   func(r *inference.Request) { r.Reference = []byte("GIF89a") },
		"webp magic only":  func(r *inference.Request) { r.Reference = []byte("RIFF\x04\x00\x00\x00WEBP") },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := ok
			mutate(&r)
			r.Reference = slices.Clone(r.Reference)
			res, err := New().Generate(t.Context(), r, nil)
			if !errors.Is(err, inference.ErrInvalidArgument) {
				t.Fatalf("Generate error = %v, want ErrInvalidArgument", err)
			}
			if res.Image != nil {
				t.Error("an error came with image bytes")
			}
		})
	}
}

func TestContextCancelled(t *testing.T) {
	t.Parallel()
	ref := testPNG(t, 64, 64)
	reqs := map[string]inference.Request{
		"text": req256("sunset grid", "synthwave", 1),
		"edit": {Prompt: "x", Style: "gameboy", Width: 256, Height: 256, Reference: ref, Strength: 1},
	}
	for name, req := range reqs {
		t.Run(name+"/before", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if _, err := New().Generate(ctx, req, nil); !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
		})
		// Cancel from inside the first progress report: the backend must
		// notice between stages and stop.
		t.Run(name+"/during", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var stages []string
			_, err := New().Generate(ctx, req, func(_ float32, stage string) {
				stages = append(stages, stage)
				cancel()
			})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			if len(stages) != 1 {
				t.Errorf("progress after cancellation: %v", stages)
			}
		})
	}
}

func TestProgress(t *testing.T) {
	t.Parallel()
	ref := testPNG(t, 64, 64)
	for name, req := range map[string]inference.Request{
		"text":    req256("city", "pixel-skyline", 1),
		"edit":    {Prompt: "x", Style: "vaporwave", Width: 256, Height: 256, Reference: ref, Strength: 0.5},
		"edit s0": {Prompt: "x", Style: "vaporwave", Width: 256, Height: 256, Reference: ref, Strength: 0},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var fs []float32
			var stages []string
			if _, err := New().Generate(t.Context(), req, func(f float32, stage string) {
				fs = append(fs, f)
				stages = append(stages, stage)
			}); err != nil {
				t.Fatal(err)
			}
			if len(fs) < 3 {
				t.Fatalf("only %d progress reports", len(fs))
			}
			for i := 1; i < len(fs); i++ {
				if fs[i] <= fs[i-1] {
					t.Errorf("progress not increasing: %v", fs)
				}
			}
			if fs[len(fs)-1] != 1 {
				t.Errorf("last progress = %v, want 1", fs[len(fs)-1])
			}
			for _, s := range stages {
				if !slices.Contains([]string{"layout", "render", "dither", "encode"}, s) {
					t.Errorf("unknown stage %q", s)
				}
			}
			if stages[len(stages)-1] != "encode" {
				t.Errorf("last stage = %q, want encode", stages[len(stages)-1])
			}
		})
	}
}

func TestCompose(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, style, prompt, negative string
		has, hasNot                   motif
		light                         lighting
	}{
		{"defaults", "synthwave", "", "", mSun | mGrid | mMountains | mStars, mCity, lightDefault},
		{"prompt adds", "synthwave", "city by the ocean", "", mCity | mOcean | mSun, 0, lightDefault},
		{"negative removes", "synthwave", "", "mountains, stars", mSun | mGrid, mMountains | mStars, lightDefault},
		{"negative beats prompt", "synthwave", "palms", "palm", 0, mPalms, lightDefault},
		{"night sets the sun", "gameboy", "forest at night", "", mMoon | mStars | mTrees, mSun, lightNight},
		{"night keeps an asked sun", "synthwave", "sun at night", "", mSun | mMoon, 0, lightNight},
		{"daylight hides stars", "pixel-skyline", "city at sunset", "", mCity | mSun, mStars | mMoon, lightSunset},
		{"skyline sun means sunset", "pixel-skyline", "sun", "", mSun, 0, lightSunset},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m, l := compose(c.style, read(canonical(c.prompt), canonical(c.negative)))
			if m&c.has != c.has {
				t.Errorf("motifs %b lack %b", m, c.has&^m)
			}
			if m&c.hasNot != 0 {
				t.Errorf("motifs %b include %b", m, m&c.hasNot)
			}
			if l != c.light {
				t.Errorf("light = %d, want %d", l, c.light)
			}
		})
	}
}

func TestAutoStyle(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"":                               "synthwave",
		"outrun sunset":                  "synthwave",
		"Game Boy forest":                "gameboy",
		"an 8-bit city":                  "pixel-skyline",
		"city at night":                  "pixel-skyline",
		"CGA castle":                     "cga",
		"technical drawing of a tower":   "blueprint",
		"pastel dreams":                  "vaporwave",
		"vaporwave, then blueprint":      "vaporwave",
		"clouds over the trees":          "gameboy",
		"neon grid city (with the grid)": "synthwave",
	}
	for prompt, want := range cases {
		if got := read(canonical(prompt), "").autoStyle(); got != want {
			t.Errorf("auto style for %q = %q, want %q", prompt, got, want)
		}
	}
}
