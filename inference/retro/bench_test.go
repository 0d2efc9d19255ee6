package retro

import (
	"fmt"
	"testing"

	"github.com/imagegate/imagegate/inference"
)

func BenchmarkGenerate(b *testing.B) {
	be := New()
	for _, style := range []string{"synthwave", "vaporwave", "pixel-skyline", "blueprint"} {
		for _, size := range []int{256, 512, 1024} {
			b.Run(fmt.Sprintf("%s/%d", style, size), func(b *testing.B) {
				req := inference.Request{Prompt: "neon sunset city ocean palms stars", Style: style,
					Width: size, Height: size, Seed: 42, Steps: 30, Guidance: 7.5}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := be.Generate(b.Context(), req, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkEdit(b *testing.B) {
	be := New()
	ref := testPNG(b, 1600, 1200)
	for _, c := range []struct {
		style    string
		size     int
		strength float32
	}{
		{"gameboy", 512, 1}, {"vaporwave", 512, 1}, {"synthwave", 1024, 1}, {"cga", 1024, 0.6},
	} {
		b.Run(fmt.Sprintf("%s/%d/s%.1f", c.style, c.size, c.strength), func(b *testing.B) {
			req := inference.Request{Prompt: "crt", Style: c.style, Width: c.size, Height: c.size,
				Reference: ref, Strength: c.strength}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := be.Generate(b.Context(), req, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
