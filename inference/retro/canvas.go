package retro

import "math"

// canvas is an 8-bit RGB working surface. Scenes paint on it at their
// logical resolution; quantization turns it into the palette image.
type canvas struct {
	w, h int
	pix  []uint8 // RGB, row-major, 3 bytes per pixel
	// hard snaps anti-aliased coverage to 0 or 1, for pixel art where
	// in-between colours would smear into dither noise.
	hard bool
	// clip limits drawing to [cx0, cx1) × [cy0, cy1).
	cx0, cy0, cx1, cy1 int
}

func newCanvas(w, h int) *canvas {
	return &canvas{w: w, h: h, pix: make([]uint8, w*h*3), cx1: w, cy1: h}
}

func (c *canvas) setClip(x0, y0, x1, y1 int) {
	c.cx0, c.cy0 = max(0, x0), max(0, y0)
	c.cx1, c.cy1 = min(c.w, x1), min(c.h, y1)
}

func (c *canvas) resetClip() { c.setClip(0, 0, c.w, c.h) }

func (c *canvas) inside(x, y int) bool {
	return x >= c.cx0 && x < c.cx1 && y >= c.cy0 && y < c.cy1
}

func (c *canvas) at(x, y int) rgb {
	x = min(max(x, 0), c.w-1)
	y = min(max(y, 0), c.h-1)
	i := (y*c.w + x) * 3
	return rgb{float32(c.pix[i]), float32(c.pix[i+1]), float32(c.pix[i+2])}
}

func (c *canvas) set(x, y int, col rgb) {
	if !c.inside(x, y) {
		return
	}
	i := (y*c.w + x) * 3
	c.pix[i], c.pix[i+1], c.pix[i+2] = clamp8(col.r), clamp8(col.g), clamp8(col.b)
}

// cover turns a coverage value into an alpha, honouring hard mode.
func (c *canvas) cover(a float32) float32 {
	if c.hard {
		if a >= 0.5 {
			return 1
		}
		return 0
	}
	return clamp01(a)
}

// blend paints col over the pixel with alpha a.
func (c *canvas) blend(x, y int, col rgb, a float32) {
	if a <= 0 || !c.inside(x, y) {
		return
	}
	if a >= 1 {
		c.set(x, y, col)
		return
	}
	i := (y*c.w + x) * 3
	p := c.pix[i : i+3 : i+3]
	p[0] = clamp8(float32(p[0]) + (col.r-float32(p[0]))*a)
	p[1] = clamp8(float32(p[1]) + (col.g-float32(p[1]))*a)
	p[2] = clamp8(float32(p[2]) + (col.b-float32(p[2]))*a)
}

// glowAt adds light: a*col on top of the pixel, saturating.
func (c *canvas) glowAt(x, y int, col rgb, a float32) {
	if a <= 0 || !c.inside(x, y) {
		return
	}
	i := (y*c.w + x) * 3
	p := c.pix[i : i+3 : i+3]
	p[0] = clamp8(float32(p[0]) + col.r*a)
	p[1] = clamp8(float32(p[1]) + col.g*a)
	p[2] = clamp8(float32(p[2]) + col.b*a)
}

// fillRect fills [x0, x1) × [y0, y1).
func (c *canvas) fillRect(x0, y0, x1, y1 int, col rgb) {
	x0, y0 = max(x0, c.cx0), max(y0, c.cy0)
	x1, y1 = min(x1, c.cx1), min(y1, c.cy1)
	if x0 >= x1 || y0 >= y1 {
		return
	}
	r, g, b := clamp8(col.r), clamp8(col.g), clamp8(col.b)
	for y := y0; y < y1; y++ {
		row := c.pix[(y*c.w+x0)*3 : (y*c.w+x1)*3]
		for i := 0; i < len(row); i += 3 {
			row[i], row[i+1], row[i+2] = r, g, b
		}
	}
}

func (c *canvas) blendRect(x0, y0, x1, y1 int, col rgb, a float32) {
	for y := max(y0, c.cy0); y < min(y1, c.cy1); y++ {
		for x := max(x0, c.cx0); x < min(x1, c.cx1); x++ {
			c.blend(x, y, col, a)
		}
	}
}

// vgradient fills rows [y0, y1) with the ramp spread over that band.
func (c *canvas) vgradient(y0, y1 int, r ramp) {
	span := float32(max(y1-y0, 1))
	for y := max(y0, c.cy0); y < min(y1, c.cy1); y++ {
		c.fillRect(c.cx0, y, c.cx1, y+1, r.at((float32(y-y0)+0.5)/span))
	}
}

// disc paints an anti-aliased filled circle.
func (c *canvas) disc(cx, cy, r float32, col rgb, a float32) {
	if r <= 0 {
		return
	}
	for y := int(math.Floor(float64(cy - r - 1))); y <= int(cy+r+1); y++ {
		dy := float32(y) + 0.5 - cy
		hc2 := (r+1)*(r+1) - dy*dy
		if hc2 <= 0 {
			continue
		}
		hc := float32(math.Sqrt(float64(hc2)))
		for x := int(math.Floor(float64(cx - hc))); x <= int(cx+hc); x++ {
			dx := float32(x) + 0.5 - cx
			d := float32(math.Sqrt(float64(dx*dx + dy*dy)))
			c.blend(x, y, col, a*c.cover(r-d+0.5))
		}
	}
}

// ring paints a circle outline of the given stroke width.
func (c *canvas) ring(cx, cy, r, w float32, col rgb, a float32) {
	ro := r + w/2 + 1
	ri := r - w/2 - 1
	for y := int(math.Floor(float64(cy - ro))); y <= int(cy+ro); y++ {
		dy := float32(y) + 0.5 - cy
		if dy*dy > ro*ro {
			continue
		}
		xo := float32(math.Sqrt(float64(ro*ro - dy*dy)))
		xi := float32(0)
		if ri > 0 && dy*dy < ri*ri {
			xi = float32(math.Sqrt(float64(ri*ri - dy*dy)))
		}
		paint := func(xa, xb float32) {
			for x := int(math.Floor(float64(xa))); x <= int(xb); x++ {
				dx := float32(x) + 0.5 - cx
				d := float32(math.Sqrt(float64(dx*dx+dy*dy))) - r
				if d < 0 {
					d = -d
				}
				c.blend(x, y, col, a*c.cover(w/2-d+0.5))
			}
		}
		paint(cx-xo, cx-xi)
		paint(cx+xi, cx+xo)
	}
}

// glow adds a soft radial light that falls to zero at radius.
func (c *canvas) glow(cx, cy, radius float32, col rgb, strength float32) {
	x0, x1 := max(int(cx-radius), c.cx0), min(int(cx+radius)+1, c.cx1)
	y0, y1 := max(int(cy-radius), c.cy0), min(int(cy+radius)+1, c.cy1)
	inv := 1 / (radius * radius)
	for y := y0; y < y1; y++ {
		dy := float32(y) + 0.5 - cy
		for x := x0; x < x1; x++ {
			dx := float32(x) + 0.5 - cx
			f := 1 - (dx*dx+dy*dy)*inv
			if f > 0 {
				c.glowAt(x, y, col, strength*f*f*f)
			}
		}
	}
}

// line paints an anti-aliased segment of width w with round caps.
func (c *canvas) line(x0, y0, x1, y1, w float32, col rgb, a float32) {
	dx, dy := x1-x0, y1-y0
	l2 := dx*dx + dy*dy
	r := w / 2
	if l2 < 1e-6 {
		c.disc(x0, y0, r, col, a)
		return
	}
	seg := func(px, py float32) float32 {
		t := clamp01(((px-x0)*dx + (py-y0)*dy) / l2)
		ex, ey := px-(x0+t*dx), py-(y0+t*dy)
		return float32(math.Sqrt(float64(ex*ex + ey*ey)))
	}
	reach := r*1.5 + 2
	if abs32(dx) >= abs32(dy) {
		xa, xb := min(x0, x1)-r-1, max(x0, x1)+r+1
		for x := int(math.Floor(float64(xa))); x <= int(xb); x++ {
			px := float32(x) + 0.5
			t := clamp01((px - x0) / dx)
			yc := y0 + t*dy
			for y := int(math.Floor(float64(yc - reach))); y <= int(yc+reach); y++ {
				c.blend(x, y, col, a*c.cover(r+0.5-seg(px, float32(y)+0.5)))
			}
		}
		return
	}
	ya, yb := min(y0, y1)-r-1, max(y0, y1)+r+1
	for y := int(math.Floor(float64(ya))); y <= int(yb); y++ {
		py := float32(y) + 0.5
		t := clamp01((py - y0) / dy)
		xc := x0 + t*dx
		for x := int(math.Floor(float64(xc - reach))); x <= int(xc+reach); x++ {
			c.blend(x, y, col, a*c.cover(r+0.5-seg(float32(x)+0.5, py)))
		}
	}
}

// pt is a point in canvas coordinates.
type pt struct{ x, y float32 }

// stroke paints a polyline whose width tapers linearly from w0 to w1.
func (c *canvas) stroke(ps []pt, w0, w1 float32, col rgb, a float32) {
	n := len(ps) - 1
	for i := range n {
		w := w0 + (w1-w0)*float32(i)/float32(max(n, 1))
		c.line(ps[i].x, ps[i].y, ps[i+1].x, ps[i+1].y, w, col, a)
	}
}

// fillPoly fills a simple polygon with the even-odd rule, sampling pixel
// centres (no anti-aliasing; used for flat shapes).
func (c *canvas) fillPoly(ps []pt, col rgb, a float32) {
	if len(ps) < 3 {
		return
	}
	ymin, ymax := ps[0].y, ps[0].y
	for _, p := range ps {
		ymin, ymax = min(ymin, p.y), max(ymax, p.y)
	}
	xs := make([]float32, 0, 8)
	for y := max(int(ymin), c.cy0); y <= min(int(ymax), c.cy1-1); y++ {
		py := float32(y) + 0.5
		xs = xs[:0]
		for i := range ps {
			p, q := ps[i], ps[(i+1)%len(ps)]
			if (p.y <= py) != (q.y <= py) {
				xs = append(xs, p.x+(py-p.y)/(q.y-p.y)*(q.x-p.x))
			}
		}
		for i := 1; i < len(xs); i++ {
			for j := i; j > 0 && xs[j] < xs[j-1]; j-- {
				xs[j], xs[j-1] = xs[j-1], xs[j]
			}
		}
		for i := 0; i+1 < len(xs); i += 2 {
			for x := int(math.Ceil(float64(xs[i] - 0.5))); float32(x)+0.5 < xs[i+1]; x++ {
				c.blend(x, y, col, a)
			}
		}
	}
}

func abs32(f float32) float32 {
	if f < 0 {
		return -f
	}
	return f
}

func sqrt32(f float32) float32 { return float32(math.Sqrt(float64(f))) }
