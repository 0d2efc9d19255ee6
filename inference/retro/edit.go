package retro

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"slices"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// decoder is one supported reference format.
type decoder struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

// sniff picks the decoder by magic bytes. Formats are dispatched here
// rather than through image.Decode so that only these four are ever
// parsed, whatever else a binary happens to register.
func sniff(data []byte) (decoder, bool) {
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return decoder{png.DecodeConfig, png.Decode}, true
	case bytes.HasPrefix(data, []byte("\xff\xd8")):
		return decoder{jpeg.DecodeConfig, jpeg.Decode}, true
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return decoder{gif.DecodeConfig, gif.Decode}, true
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return decoder{webp.DecodeConfig, webp.Decode}, true
	}
	return decoder{}, false
}

// decodeReference decodes an untrusted image. It reads the header first
// and refuses empty or oversized images before allocating pixels, and it
// turns a decoder panic into an invalid-argument error.
func decodeReference(data []byte) (image.Image, error) {
	dec, ok := sniff(data)
	if !ok {
		return nil, invalid("reference image: not PNG, JPEG, GIF or WebP")
	}
	return decodeWith(dec, data)
}

func decodeWith(dec decoder, data []byte) (img image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, invalid("reference image: malformed")
		}
	}()
	cfg, err := dec.config(bytes.NewReader(data))
	if err != nil {
		return nil, invalid("reference image: %v", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxReferencePixels {
		return nil, invalid("reference image: %dx%d is empty or above %d pixels", cfg.Width, cfg.Height, maxReferencePixels)
	}
	img, err = dec.decode(bytes.NewReader(data))
	if err != nil {
		return nil, invalid("reference image: %v", err)
	}
	if b := img.Bounds(); b.Empty() || int64(b.Dx())*int64(b.Dy()) > maxReferencePixels {
		return nil, invalid("reference image: bad bounds")
	}
	return img, nil
}

// coverResize scales src to fill w×h, cropping the overflow evenly from
// both sides, and composites it over white so the result is opaque.
func coverResize(src image.Image, w, h int) *image.RGBA {
	sb := src.Bounds()
	sw, sh := int64(sb.Dx()), int64(sb.Dy())
	sr := sb
	if sw*int64(h) > sh*int64(w) { // wider than the target: crop the sides
		cw := max(sh*int64(w)/int64(h), 1)
		x0 := sb.Min.X + int((sw-cw)/2)
		sr = image.Rect(x0, sb.Min.Y, x0+int(cw), sb.Max.Y)
	} else {
		ch := max(sw*int64(h)/int64(w), 1)
		y0 := sb.Min.Y + int((sh-ch)/2)
		sr = image.Rect(sb.Min.X, y0, sb.Max.X, y0+int(ch))
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range dst.Pix {
		dst.Pix[i] = 0xff
	}
	draw.BiLinear.Scale(dst, dst.Bounds(), src, sr, draw.Over, nil)
	return dst
}

// treatment is the retro processing an edit applies.
type treatment struct {
	px      int     // pixelation block size
	pal     []rgb   // target palette
	grad    ramp    // luma gradient map applied first, if set
	mix     float32 // how much of the gradient map to keep (1 = all)
	diffuse bool    // Floyd–Steinberg instead of ordered dithering
	bayer   int
	spread  float32
	scan    bool
	edges   bool // blueprint: ink the edges on gridded paper
}

// PICO-8's sixteen colours: a well-loved pixel-art palette.
var pico8 = []rgb{
	hex(0x000000), hex(0x1d2b53), hex(0x7e2553), hex(0x008751), hex(0xab5236), hex(0x5f574f),
	hex(0xc2c3c7), hex(0xfff1e8), hex(0xff004d), hex(0xffa300), hex(0xffec27), hex(0x00e436),
	hex(0x29adff), hex(0x83769c), hex(0xff77a8), hex(0xffccaa),
}

var (
	mapNeon   = even(0x0a0320, 0x2b0b4f, 0x7a1a7a, 0xd8267f, 0xff5a6e, 0xffa05c, 0xfff06a)
	mapPastel = even(0x3b1f6b, 0x8a5cf6, 0xff71ce, 0x7fd8ff, 0xfffbd0)
	mapIce    = even(0x020b1f, 0x0b2a5b, 0x1f6fa8, 0x7fd3f0, 0xe0fbff)
	mapFire   = even(0x0d0000, 0x5a0a02, 0xb82a05, 0xff6a00, 0xffcc33, 0xfff3b0)
)

func familyRamp(f family) ramp {
	switch f {
	case famNeon:
		return mapNeon
	case famPastel:
		return mapPastel
	case famIce:
		return mapIce
	case famFire:
		return mapFire
	}
	return monoRamp(f)
}

func pickTreatment(p *params) treatment {
	w, h := p.width, p.height
	r := p.reading
	var t treatment
	switch p.style {
	case "synthwave":
		t = treatment{px: 1, grad: mapNeon, mix: 1, bayer: 8, spread: 44, scan: true}
	case "vaporwave":
		t = treatment{px: 1, grad: mapPastel, mix: 0.6, diffuse: true,
			pal: buildPalette(themePastel().colors(), 16)}
	case "gameboy":
		t = treatment{px: pixel128(w, h), grad: rampGB, mix: 1, pal: gameboyPalette, bayer: 4, spread: 64}
	case "cga":
		t = treatment{px: pixel256(w, h), pal: cgaPalette1, bayer: 4, spread: 150}
		if r.fam == famFire || r.fam == famAmber {
			t.pal = cgaPalette0
		}
	case "blueprint":
		t = treatment{px: 1, edges: true, pal: blueprintPalette(), bayer: 8, spread: 24}
	default: // pixel-skyline: plain pixel art
		t = treatment{px: pixel128(w, h), pal: pico8, bayer: 4, spread: 28}
	}
	if g := familyRamp(r.fam); g != nil && (p.style == "synthwave" || p.style == "vaporwave" || p.style == "pixel-skyline") {
		t.grad, t.mix, t.pal, t.diffuse = g, 1, nil, false
		t.bayer, t.spread = 8, 255/float32(len(g)-1)
		if p.style == "pixel-skyline" {
			t.bayer = 4
		}
	}
	if t.grad != nil && t.pal == nil {
		t.pal = t.grad.colors()
	}
	if r.crt {
		t.scan = true
	}
	if r.pixel {
		t.px = max(t.px, pixel128(w, h))
	}
	if r.diffuse {
		t.diffuse = true
	}
	return t
}

// edit treats the reference image and blends the result with the resized
// original by strength.
func edit(ctx context.Context, p *params, ref []byte, rep *reporter) (image.Image, error) {
	src, err := decodeReference(ref)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	full := coverResize(src, p.width, p.height)
	src = nil // drop the decoded reference as soon as it is resized (promise C2)
	rep.report(0.1, "layout")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.strength == 0 {
		rep.report(0.8, "dither")
		return full, nil
	}
	t := pickTreatment(p)
	cv := shrink(full, t.px)
	if t.grad != nil {
		mapped := &canvas{w: cv.w, h: cv.h, pix: slices.Clone(cv.pix)}
		lo, hi := lumaRange(cv)
		gradientMap(mapped, t.grad, lo, hi)
		mixInto(cv, mapped, t.mix)
	}
	if t.edges {
		ink(ctx, cv)
	}
	rep.report(0.5, "render")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q := newQuantizer(t.pal)
	var img *image.Paletted
	if t.diffuse {
		img, err = floyd(ctx, cv, q)
	} else {
		img, err = ordered(ctx, cv, q, t.spread*p.spread, t.bayer)
	}
	if err != nil {
		return nil, err
	}
	img = upscale(img, t.px)
	if t.scan {
		scanlines(img, max(2, min(p.width, p.height)/128), 0.35)
	}
	rep.report(0.8, "dither")
	if p.strength >= 1 {
		return img, nil
	}
	return blend(full, img, p.strength), nil
}

// shrink box-averages an RGBA image by an integer factor into a canvas.
func shrink(src *image.RGBA, k int) *canvas {
	w, h := src.Rect.Dx()/k, src.Rect.Dy()/k
	cv := newCanvas(w, h)
	n := uint32(k * k)
	for y := range h {
		for x := range w {
			var r, g, b uint32
			for j := range k {
				row := src.Pix[(y*k+j)*src.Stride+x*k*4:]
				for i := range k {
					r += uint32(row[4*i])
					g += uint32(row[4*i+1])
					b += uint32(row[4*i+2])
				}
			}
			o := (y*w + x) * 3
			cv.pix[o], cv.pix[o+1], cv.pix[o+2] = uint8((r+n/2)/n), uint8((g+n/2)/n), uint8((b+n/2)/n)
		}
	}
	return cv
}

// lumaRange returns the 2nd and 98th percentile of luma, widened to at
// least 32 apart, so gradient maps use their whole ramp on dull photos.
func lumaRange(cv *canvas) (lo, hi float32) {
	var hist [256]int
	p := cv.pix
	for i := 0; i+2 < len(p); i += 3 {
		hist[(299*int(p[i])+587*int(p[i+1])+114*int(p[i+2])+500)/1000]++
	}
	total := len(p) / 3
	cut := total / 50
	l, hgh, acc := 0, 255, 0
	for l = 0; l < 255; l++ {
		if acc += hist[l]; acc > cut {
			break
		}
	}
	acc = 0
	for hgh = 255; hgh > 0; hgh-- {
		if acc += hist[hgh]; acc > cut {
			break
		}
	}
	lo, hi = float32(l), float32(hgh)
	if hi-lo < 32 {
		mid := (lo + hi) / 2
		lo, hi = mid-16, mid+16
	}
	return lo, hi
}

// mixInto sets dst to dst + (src - dst)·k.
func mixInto(dst, src *canvas, k float32) {
	for i, v := range src.pix {
		d := float32(dst.pix[i])
		dst.pix[i] = clamp8(d + (float32(v)-d)*k)
	}
}

// blend returns orig + (treated - orig)·s as an opaque RGBA image.
func blend(orig *image.RGBA, treated *image.Paletted, s float32) *image.RGBA {
	out := image.NewRGBA(orig.Rect)
	pal := make([][3]float32, len(treated.Palette))
	for i, c := range treated.Palette {
		cc := color.RGBAModel.Convert(c).(color.RGBA)
		pal[i] = [3]float32{float32(cc.R), float32(cc.G), float32(cc.B)}
	}
	w, h := orig.Rect.Dx(), orig.Rect.Dy()
	for y := range h {
		o := orig.Pix[y*orig.Stride : y*orig.Stride+4*w]
		d := out.Pix[y*out.Stride : y*out.Stride+4*w]
		t := treated.Pix[y*treated.Stride : y*treated.Stride+w]
		for x := range w {
			c := pal[t[x]]
			for j := range 3 {
				v := float32(o[4*x+j])
				d[4*x+j] = clamp8(v + (c[j]-v)*s)
			}
			d[4*x+3] = 0xff
		}
	}
	return out
}

// ink turns the canvas into a blueprint: its edges (Sobel on a blurred
// luma) drawn in white on gridded blue paper.
func ink(ctx context.Context, cv *canvas) {
	w, h := cv.w, cv.h
	l := make([]float32, w*h)
	for i := range l {
		l[i] = float32(299*int(cv.pix[3*i])+587*int(cv.pix[3*i+1])+114*int(cv.pix[3*i+2])) / 1000
	}
	bl := make([]float32, w*h)
	at := func(s []float32, x, y int) float32 {
		return s[min(max(y, 0), h-1)*w+min(max(x, 0), w-1)]
	}
	for y := range h {
		for x := range w {
			var sum float32
			for j := -1; j <= 1; j++ {
				for i := -1; i <= 1; i++ {
					sum += at(l, x+i, y+j)
				}
			}
			bl[y*w+x] = sum / 9
		}
	}
	s := &scene{w: w, h: h, fw: float32(w), fh: float32(h), u: float32(min(w, h)) / 512}
	s.paper(cv)
	for y := range h {
		if y%rowCheck == 0 && ctx.Err() != nil {
			return
		}
		for x := range w {
			gx := at(bl, x+1, y-1) + 2*at(bl, x+1, y) + at(bl, x+1, y+1) -
				at(bl, x-1, y-1) - 2*at(bl, x-1, y) - at(bl, x-1, y+1)
			gy := at(bl, x-1, y+1) + 2*at(bl, x, y+1) + at(bl, x+1, y+1) -
				at(bl, x-1, y-1) - 2*at(bl, x, y-1) - at(bl, x+1, y-1)
			m := sqrt32(gx*gx + gy*gy)
			if a := smoothstep(18, 70, m); a > 0 {
				cv.blend(x, y, bpInk, a)
			}
		}
	}
}
