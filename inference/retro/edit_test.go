package retro

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"slices"
	"testing"

	"github.com/imagegate/imagegate/inference"
)

// testImage is a smooth picture with some structure: two gradients and a
// disc, so treatments have something to work on.
func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.NRGBA{uint8(255 * x / w), uint8(255 * y / h), 160, 255}
			dx, dy := x-w/2, y-h/2
			if dx*dx+dy*dy < w*h/12 {
				c = color.NRGBA{240, 200, uint8(255 * x / w), 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, testImage(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngHeader is a PNG signature and an IHDR chunk (with a correct CRC)
// claiming w×h truecolour pixels, and nothing else: a decompression-bomb
// header.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := make([]byte, 0, 17)
	chunk = append(chunk, "IHDR"...)
	chunk = binary.BigEndian.AppendUint32(chunk, w)
	chunk = binary.BigEndian.AppendUint32(chunk, h)
	chunk = append(chunk, 8, 2, 0, 0, 0) // depth 8, RGB, deflate, no filter, no interlace
	_ = binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestPNGHeaderIsWellFormed(t *testing.T) {
	t.Parallel()
	// The bomb must be refused by our size check, not by a CRC error.
	cfg, err := png.DecodeConfig(bytes.NewReader(pngHeader(100000, 100000)))
	if err != nil {
		t.Fatalf("crafted header does not parse: %v", err)
	}
	if cfg.Width != 100000 || cfg.Height != 100000 {
		t.Fatalf("crafted header says %dx%d", cfg.Width, cfg.Height)
	}
}

// meanAbsDiff compares two same-sized images channel by channel, in
// 8-bit units.
func meanAbsDiff(t *testing.T, a, b image.Image) float64 {
	t.Helper()
	if a.Bounds().Size() != b.Bounds().Size() {
		t.Fatalf("sizes differ: %v vs %v", a.Bounds(), b.Bounds())
	}
	var sum, n float64
	ba, bb := a.Bounds(), b.Bounds()
	for y := range ba.Dy() {
		for x := range ba.Dx() {
			r1, g1, b1, _ := a.At(ba.Min.X+x, ba.Min.Y+y).RGBA()
			r2, g2, b2, _ := b.At(bb.Min.X+x, bb.Min.Y+y).RGBA()
			for _, d := range [3]int{int(r1>>8) - int(r2>>8), int(g1>>8) - int(g2>>8), int(b1>>8) - int(b2>>8)} {
				sum += float64(max(d, -d))
			}
			n += 3
		}
	}
	return sum / n
}

func TestStrength(t *testing.T) {
	t.Parallel()
	src := testImage(256, 256)
	var buf bytes.Buffer
	if err := png.Encode(&buf, src); err != nil {
		t.Fatal(err)
	}
	for _, style := range styleNames {
		t.Run(style, func(t *testing.T) {
			t.Parallel()
			out := map[float32]image.Image{}
			raw := map[float32][]byte{}
			for _, s := range []float32{0, 0.5, 1} {
				data := generate(t, inference.Request{Prompt: "x", Style: style, Width: 256, Height: 256,
					Reference: buf.Bytes(), Strength: s})
				img, err := png.Decode(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				out[s], raw[s] = img, data
			}
			if bytes.Equal(raw[0], raw[1]) {
				t.Fatal("strength 0 and 1 produced identical bytes")
			}
			d0, dh, d1 := meanAbsDiff(t, src, out[0]), meanAbsDiff(t, src, out[0.5]), meanAbsDiff(t, src, out[1])
			if d0 > 2 {
				t.Errorf("strength 0 differs from the input by %.1f per channel, want ≈ 0", d0)
			}
			if d1 < 10 {
				t.Errorf("strength 1 differs from the input by only %.1f per channel", d1)
			}
			if !(d0 < dh && dh < d1) {
				t.Errorf("difference from input not increasing with strength: %.1f, %.1f, %.1f", d0, dh, d1)
			}
		})
	}
}

func TestCoverResizeCropsCentre(t *testing.T) {
	t.Parallel()
	// A wide image: left third red, middle green, right third blue. The
	// square crop must keep only the green middle.
	src := image.NewRGBA(image.Rect(0, 0, 300, 100))
	for y := range 100 {
		for x := range 300 {
			c := color.RGBA{0, 255, 0, 255}
			if x < 100 {
				c = color.RGBA{255, 0, 0, 255}
			} else if x >= 200 {
				c = color.RGBA{0, 0, 255, 255}
			}
			src.SetRGBA(x, y, c)
		}
	}
	dst := coverResize(src, 256, 256)
	for _, p := range []image.Point{{8, 8}, {128, 128}, {247, 247}} {
		if c := dst.RGBAAt(p.X, p.Y); c.G < 200 || c.R > 50 || c.B > 50 {
			t.Errorf("pixel %v = %v, want green", p, c)
		}
	}
}

func TestReferenceFormats(t *testing.T) {
	t.Parallel()
	src := testImage(96, 64)
	enc := map[string]func() ([]byte, error){
		"png": func() ([]byte, error) {
			var b bytes.Buffer
			err := png.Encode(&b, src)
			return b.Bytes(), err
		},
		"jpeg": func() ([]byte, error) {
			var b bytes.Buffer
			err := jpeg.Encode(&b, src, &jpeg.Options{Quality: 90})
			return b.Bytes(), err
		},
		"gif": func() ([]byte, error) {
			var b bytes.Buffer
			err := gif.Encode(&b, src, nil)
			return b.Bytes(), err
		},
		"webp": func() ([]byte, error) { return os.ReadFile("testdata/blue-purple-pink.lossy.webp") },
	}
	for name, f := range enc {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := f()
			if err != nil {
				t.Fatal(err)
			}
			orig := slices.Clone(data)
			res, err := New().Generate(t.Context(), inference.Request{Prompt: "crt", Style: "cga",
				Width: 512, Height: 256, Reference: data, Strength: 0.8}, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := png.DecodeConfig(bytes.NewReader(res.Image))
			if err != nil || cfg.Width != 512 || cfg.Height != 256 {
				t.Errorf("output %dx%d, %v; want a 512x256 PNG", cfg.Width, cfg.Height, err)
			}
			if !bytes.Equal(data, orig) {
				t.Error("Generate modified the caller's reference bytes")
			}
		})
	}
}

func TestDecoderPanicBecomesInvalidArgument(t *testing.T) {
	t.Parallel()
	ok := func(io.Reader) (image.Config, error) { return image.Config{Width: 4, Height: 4}, nil }
	cases := map[string]decoder{
		"config panics": {
			config: func(io.Reader) (image.Config, error) { panic("boom") },
			decode: func(io.Reader) (image.Image, error) { return nil, nil },
		},
		"decode panics": {
			config: ok,
			decode: func(io.Reader) (image.Image, error) { panic(errors.New("index out of range")) },
		},
		"bounds disagree with header": {
			config: ok,
			decode: func(io.Reader) (image.Image, error) { return image.NewGray(image.Rect(0, 0, 0, 0)), nil },
		},
	}
	for name, dec := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := decodeWith(dec, []byte("x")); !errors.Is(err, inference.ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestGIFFrameOutsideScreen(t *testing.T) {
	t.Parallel()
	// The logical screen is 1x1 but the first frame claims 255x255.
	data := []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\xff\x00\xff\x00\x00\x02\x02D\x01\x00;")
	if _, err := decodeReference(data); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("err = %v, want ErrInvalidArgument", err)
	}
}

// FuzzEditReference feeds arbitrary bytes as a reference image: Generate
// must never panic, and must return either a PNG of the requested size or
// ErrInvalidArgument.
func FuzzEditReference(f *testing.F) {
	valid := testPNG(f, 8, 6)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add(pngHeader(100000, 100000))
	f.Add(pngHeader(0, 7))
	f.Add([]byte("not an image at all"))
	f.Add([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\xff\x00\xff\x00\x00\x02\x02D\x01\x00;"))
	f.Add([]byte("RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"))
	f.Add([]byte{0xff, 0xd8, 0xff, 0xe0})
	b := New()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return // empty means "no reference": text-to-image
		}
		res, err := b.Generate(t.Context(), inference.Request{Prompt: "fuzz", Style: "gameboy",
			Width: 256, Height: 256, Reference: data, Strength: 1}, nil)
		if err != nil {
			if !errors.Is(err, inference.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(res.Image))
		if err != nil || cfg.Width != 256 || cfg.Height != 256 {
			t.Fatalf("accepted reference gave %dx%d, %v", cfg.Width, cfg.Height, err)
		}
	})
}
