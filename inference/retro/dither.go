package retro

import (
	"context"
	"image"
	"image/color"
)

// bayer8 is the 8×8 ordered-dither threshold matrix.
var bayer8 = [64]uint8{
	0, 32, 8, 40, 2, 34, 10, 42,
	48, 16, 56, 24, 50, 18, 58, 26,
	12, 44, 4, 36, 14, 46, 6, 38,
	60, 28, 52, 20, 62, 30, 54, 22,
	3, 35, 11, 43, 1, 33, 9, 41,
	51, 19, 59, 27, 49, 17, 57, 25,
	15, 47, 7, 39, 13, 45, 5, 37,
	63, 31, 55, 23, 61, 29, 53, 21,
}

// rowCheck is how many rows a loop runs between looks at ctx.
const rowCheck = 32

// quantizer maps colours to the nearest palette entry through a lazily
// filled 15-bit lookup table, so a megapixel costs a table read per pixel
// rather than a palette scan.
type quantizer struct {
	pal []rgb
	out color.Palette
	lut []uint8 // 1<<15 entries; 0xff means not computed yet
}

func newQuantizer(pal []rgb) *quantizer {
	q := &quantizer{pal: pal, out: make(color.Palette, len(pal)), lut: make([]uint8, 1<<15)}
	for i, c := range pal {
		q.out[i] = c.rgba()
	}
	for i := range q.lut {
		q.lut[i] = 0xff
	}
	return q
}

func (q *quantizer) index(r, g, b int32) uint8 {
	r, g, b = min(max(r, 0), 255), min(max(g, 0), 255), min(max(b, 0), 255)
	k := r>>3<<10 | g>>3<<5 | b>>3
	if v := q.lut[k]; v != 0xff {
		return v
	}
	c := rgb{float32(r>>3<<3 + 4), float32(g>>3<<3 + 4), float32(b>>3<<3 + 4)}
	best, bd := 0, float32(-1)
	for i, p := range q.pal {
		if d := c.dist(p); bd < 0 || d < bd {
			best, bd = i, d
		}
	}
	q.lut[k] = uint8(best)
	return uint8(best)
}

// ordered quantizes cv with Bayer dithering. spread is the amplitude of
// the threshold offset in channel units: about the gap between
// neighbouring palette colours gives smooth gradients; size is 4 or 8.
func ordered(ctx context.Context, cv *canvas, q *quantizer, spread float32, size int) (*image.Paletted, error) {
	img := image.NewPaletted(image.Rect(0, 0, cv.w, cv.h), q.out)
	var off [64]int32
	for i, t := range bayer8 {
		v, half := float32(t), float32(0.5)
		if size == 4 {
			// The top-left 4×4 of bayer8 is the 4×4 matrix times four.
			x, y := i%8, i/8
			v, half = float32(bayer8[(y%4)*8+x%4]), 2
		}
		off[i] = int32((v+half)/64*spread - spread/2)
	}
	for y := range cv.h {
		if y%rowCheck == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		src := cv.pix[y*cv.w*3 : (y+1)*cv.w*3]
		dst := img.Pix[y*img.Stride : y*img.Stride+cv.w]
		row := off[(y&7)*8 : (y&7)*8+8]
		for x := range dst {
			o := row[x&7]
			dst[x] = q.index(int32(src[3*x])+o, int32(src[3*x+1])+o, int32(src[3*x+2])+o)
		}
	}
	return img, nil
}

// floyd quantizes cv with serpentine Floyd–Steinberg error diffusion.
func floyd(ctx context.Context, cv *canvas, q *quantizer) (*image.Paletted, error) {
	img := image.NewPaletted(image.Rect(0, 0, cv.w, cv.h), q.out)
	w := cv.w
	cur := make([]float32, (w+2)*3)
	next := make([]float32, (w+2)*3)
	for y := range cv.h {
		if y%rowCheck == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		clear(next)
		ltr := y%2 == 0
		for i := range w {
			x := i
			dir := 1
			if !ltr {
				x = w - 1 - i
				dir = -1
			}
			si := (y*w + x) * 3
			e := (x + 1) * 3
			r := float32(cv.pix[si]) + cur[e]
			g := float32(cv.pix[si+1]) + cur[e+1]
			b := float32(cv.pix[si+2]) + cur[e+2]
			k := q.index(int32(r+0.5), int32(g+0.5), int32(b+0.5))
			img.Pix[y*img.Stride+x] = k
			p := q.pal[k]
			er, eg, eb := r-p.r, g-p.g, b-p.b
			// Clamp the carried error so one saturated pixel cannot
			// streak across the row.
			er, eg, eb = min(max(er, -96), 96), min(max(eg, -96), 96), min(max(eb, -96), 96)
			f := e + dir*3 // ahead in scan order
			bk := e - dir*3
			cur[f] += er * 7 / 16
			cur[f+1] += eg * 7 / 16
			cur[f+2] += eb * 7 / 16
			next[bk] += er * 3 / 16
			next[bk+1] += eg * 3 / 16
			next[bk+2] += eb * 3 / 16
			next[e] += er * 5 / 16
			next[e+1] += eg * 5 / 16
			next[e+2] += eb * 5 / 16
			next[f] += er / 16
			next[f+1] += eg / 16
			next[f+2] += eb / 16
		}
		cur, next = next, cur
	}
	return img, nil
}

// gradientMap replaces every pixel by the ramp colour at its luma, after
// stretching luma from [lo, hi] to [0, 1].
func gradientMap(cv *canvas, r ramp, lo, hi float32) {
	var lut [256]rgb
	for i := range lut {
		lut[i] = r.at(clamp01((float32(i) - lo) / (hi - lo)))
	}
	p := cv.pix
	for i := 0; i+2 < len(p); i += 3 {
		l := (299*int(p[i]) + 587*int(p[i+1]) + 114*int(p[i+2]) + 500) / 1000
		c := lut[l]
		p[i], p[i+1], p[i+2] = clamp8(c.r), clamp8(c.g), clamp8(c.b)
	}
}

// upscale enlarges a paletted image by an integer factor, nearest
// neighbour, so each logical pixel becomes a k×k block.
func upscale(src *image.Paletted, k int) *image.Paletted {
	if k == 1 {
		return src
	}
	sw, sh := src.Rect.Dx(), src.Rect.Dy()
	dst := image.NewPaletted(image.Rect(0, 0, sw*k, sh*k), src.Palette)
	for y := range sh {
		srow := src.Pix[y*src.Stride : y*src.Stride+sw]
		drow := dst.Pix[y*k*dst.Stride : y*k*dst.Stride+sw*k]
		for x, v := range srow {
			for j := range k {
				drow[x*k+j] = v
			}
		}
		for j := 1; j < k; j++ {
			copy(dst.Pix[(y*k+j)*dst.Stride:], drow)
		}
	}
	return dst
}

// scanlines darkens every period-th pair of rows the way a CRT's gaps
// between lines would. It appends a darker twin of every palette colour
// and points the dark rows at those twins, so the image stays paletted.
// The palette must have at most 128 colours.
func scanlines(img *image.Paletted, period int, depth float32) {
	n := len(img.Palette)
	pal := make(color.Palette, 2*n)
	copy(pal, img.Palette)
	for i, c := range img.Palette {
		r, g, b, _ := c.RGBA()
		k := 1 - depth
		pal[n+i] = color.RGBA{uint8(float32(r>>8) * k), uint8(float32(g>>8) * k), uint8(float32(b>>8) * k), 0xff}
	}
	img.Palette = pal
	w, h := img.Rect.Dx(), img.Rect.Dy()
	half := max(period/2, 1)
	for y := range h {
		if y%period < period-half {
			continue
		}
		row := img.Pix[y*img.Stride : y*img.Stride+w]
		for x := range row {
			row[x] += uint8(n)
		}
	}
}
