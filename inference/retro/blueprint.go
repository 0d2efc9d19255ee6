package retro

import (
	"context"
	"math"
)

// Blueprint colours: paper, a darker vignette, the two grid weights and
// the ink.
var (
	bpPaper = hex(0x0f4080)
	bpDeep  = hex(0x082a5c)
	bpMinor = hex(0x2a5c9e)
	bpMajor = hex(0x4a7fc4)
	bpInk   = hex(0xeef5ff)
	bpFaint = hex(0x9cc0ec)
)

func blueprintPalette() []rgb {
	return []rgb{bpDeep, hex(0x0b3570), bpPaper, bpMinor, bpMajor, bpFaint, bpInk}
}

// blueprint: the scene's motifs as a technical drawing in white ink on
// gridded blue paper, with a frame, dimension lines and a title block.
func (s *scene) blueprint(ctx context.Context, cv *canvas) error {
	W, H := s.fw, s.fh
	u := max(s.u, 0.5)
	s.paper(cv)
	if err := ctx.Err(); err != nil {
		return err
	}
	m := 18 * u
	cv.line(m, m, W-m, m, 2*u, bpInk, 1)
	cv.line(W-m, m, W-m, H-m, 2*u, bpInk, 1)
	cv.line(W-m, H-m, m, H-m, 2*u, bpInk, 1)
	cv.line(m, H-m, m, m, 2*u, bpInk, 1)
	in := m + 6*u
	cv.setClip(int(in), int(in), int(W-in), int(H-in))
	defer cv.resetClip()
	ink := max(1.2, 1.6*u)
	thin := max(1, 1.0*u)

	hor := float32(math.Round(float64(H * s.rf(0.56, 0.64))))
	cv.line(0, hor, W, hor, ink, bpInk, 1)
	sunR := min(W, H) * s.rf(0.16, 0.22)
	sunX := W*0.5 + s.rf(-0.15, 0.15)*W
	sunY := hor - sunR*s.rf(0.2, 0.5)
	if s.has(mCity) { // lift the sun clear of the towers
		sunR *= 0.7
		sunY = hor - H*0.26 - sunR*1.1
	}

	if s.has(mStars) {
		for range int(40 * s.detail * W * H / (512 * 512)) {
			x, y := s.rf(0, W), s.rf(0, hor*0.8)
			l := u * s.rf(2, 5)
			cv.line(x-l, y, x+l, y, thin, bpFaint, 1)
			cv.line(x, y-l, x, y+l, thin, bpFaint, 1)
		}
	}
	if s.has(mSun) {
		cv.ring(sunX, sunY, sunR, ink, bpInk, 1)
		cv.ring(sunX, sunY, sunR*0.72, thin, bpFaint, 1)
		cv.ring(sunX, sunY, sunR*0.4, thin, bpFaint, 0.8)
		cv.line(sunX-sunR*1.25, sunY, sunX+sunR*1.25, sunY, thin, bpFaint, 1)
		cv.line(sunX, sunY-sunR*1.25, sunX, sunY+sunR*1.25, thin, bpFaint, 1)
		a := float32(-math.Pi / 4)
		ex, ey := sunX+sunR*float32(math.Cos(float64(a))), sunY+sunR*float32(math.Sin(float64(a)))
		s.dimension(cv, sunX, sunY, ex, ey, ink, u)
		for i := range 12 { // ticks around the rim
			t := float32(i) * math.Pi / 6
			c, sn := float32(math.Cos(float64(t))), float32(math.Sin(float64(t)))
			cv.line(sunX+c*sunR, sunY+sn*sunR, sunX+c*sunR*1.08, sunY+sn*sunR*1.08, thin, bpInk, 1)
		}
	}
	if s.has(mMoon) {
		mx, my, mr := W*s.rf(0.15, 0.3), hor*s.rf(0.2, 0.35), min(W, H)*0.06
		if sunX < W/2 {
			mx = W - mx
		}
		cv.ring(mx, my, mr, ink, bpInk, 1)
		cv.ring(mx+mr*0.45, my-mr*0.2, mr*0.9, thin, bpFaint, 0.9)
	}
	if s.has(mClouds) {
		for range 2 + s.rng.IntN(3) {
			cx, cy, r := s.rf(0.1, 0.9)*W, s.rf(0.15, 0.5)*hor, min(W, H)*s.rf(0.03, 0.05)
			for i := range 4 {
				s.arc(cv, float64(cx+float32(i)*r*1.4), float64(cy-r*0.3*float32(i%2)), float64(r*(1+0.3*float32(i%2))), math.Pi, 2*math.Pi, thin)
			}
			cv.line(cx-r, cy, cx+r*5.2, cy, thin, bpInk, 1)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Buildings stand in front of the mountains: remember their outlines
	// so the ridge line stops behind them.
	var blocked [][3]float32
	hidden := func(p pt) bool {
		for _, b := range blocked {
			if p.x >= b[0]-u && p.x <= b[1]+u && p.y >= b[2]-u {
				return true
			}
		}
		return false
	}
	if s.has(mCity) {
		x := W * s.rf(0.02, 0.1)
		var tallest struct{ x0, x1, top float32 }
		tallest.top = hor
		for x < W*0.95 {
			bw := W * s.rf(0.05, 0.1)
			bh := H * s.rf(0.06, 0.24)
			top := hor - bh
			blocked = append(blocked, [3]float32{x, x + bw, top})
			cv.line(x, hor, x, top, ink, bpInk, 1)
			cv.line(x, top, x+bw, top, ink, bpInk, 1)
			cv.line(x+bw, top, x+bw, hor, ink, bpInk, 1)
			for wy := top + 6*u; wy < hor-8*u; wy += 10 * u {
				for wx := x + 4*u; wx < x+bw-6*u; wx += 8 * u {
					if s.rng.Float32() < 0.5 {
						s.rect(cv, wx, wy, wx+4*u, wy+5*u, thin)
					}
				}
			}
			if top < tallest.top {
				tallest.x0, tallest.x1, tallest.top = x, x+bw, top
			}
			x += bw + W*s.rf(0.005, 0.03)
		}
		if tallest.top < hor {
			y := tallest.top - 10*u
			s.dimension(cv, tallest.x0, y, tallest.x1, y, thin, u)
		}
	}
	if s.has(mMountains) {
		rd := s.newRidge(4, 3, true)
		maxH := H * s.rf(0.18, 0.28)
		prev := pt{-1, hor}
		step := max(2, 3*u)
		for x := float32(0); x <= W; x += step {
			h := maxH * rd.at(x/W) * (0.3 + 0.7*smoothstep(0.2, 1, abs32(x-sunX)/(sunR*1.8)))
			p := pt{x, hor - h}
			if hidden(p) {
				prev = pt{-1, hor}
				continue
			}
			if prev.x >= 0 {
				cv.line(prev.x, prev.y, p.x, p.y, ink, bpInk, 1)
			}
			if int(x/step)%4 == 0 && h > 6*u && !hidden(pt{p.x + 9*u, p.y + 14*u}) { // hatching
				l := min(h*0.5, 14*u)
				cv.line(p.x, p.y+3*u, p.x+l*0.6, p.y+3*u+l, thin, bpFaint, 0.9)
			}
			prev = p
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.has(mGrid) && !s.has(mOcean) {
		hg := H - hor
		for i := -20; i <= 20; i++ {
			x := sunX + float32(i)*W*0.09
			cv.line(sunX, hor, sunX+(x-sunX)*3, hor+hg*3, thin, bpFaint, 0.9)
		}
		ph := s.rf(0, 1)
		last := float32(math.Inf(1))
		for k := float32(1); k < 60; k++ {
			y := hor + hg/((k-ph)*0.45+0.45)
			if last-y < 5*u {
				break
			}
			if y < H {
				cv.line(0, y, W, y, thin, bpFaint, 0.9)
				last = y
			}
		}
	}
	if s.has(mOcean) {
		for k := 1; k < 9; k++ {
			y0 := hor + (H-hor)*float32(k*k)/81
			amp := u * float32(k) * 0.8
			prev := pt{0, y0}
			for x := float32(0); x <= W; x += 3 * u {
				y := y0 + amp*float32(math.Sin(float64(x/(u*(8+3*float32(k))))))
				cv.line(prev.x, prev.y, x, y, thin, bpInk, 1)
				prev = pt{x, y}
			}
		}
	}
	if s.has(mTrees) {
		for range 3 + s.rng.IntN(4) {
			x, h := s.rf(0.05, 0.95)*W, H*s.rf(0.06, 0.12)
			b := hor + (H-hor)*s.rf(0.05, 0.3)
			cv.line(x-h*0.25, b, x, b-h, ink, bpInk, 1)
			cv.line(x, b-h, x+h*0.25, b, ink, bpInk, 1)
			cv.line(x+h*0.25, b, x-h*0.25, b, ink, bpInk, 1)
		}
	}
	if s.has(mPalms) {
		for range 1 + s.rng.IntN(2) {
			s.palmLine(cv, s.rf(0.08, 0.92)*W, H-in, H*s.rf(0.35, 0.5), s.rf(-0.2, 0.2), thin)
		}
	}
	cv.resetClip()
	s.titleBlock(cv, W-m-W*0.34, H-m-H*0.12, W-m, H-m, u)
	s.compass(cv, m+34*u, m+34*u, 20*u, u)
	return nil
}

// paper fills the sheet: blue with a darker rim and a two-weight grid.
func (s *scene) paper(cv *canvas) {
	W, H := s.fw, s.fh
	g := max(4, float32(math.Round(float64(16*max(s.u, 0.5)))))
	cx, cy := W/2, H/2
	inv := 1 / (cx*cx + cy*cy)
	for y := range s.h {
		row := cv.pix[y*cv.w*3 : (y+1)*cv.w*3]
		dy := float32(y) + 0.5 - cy
		major := y%int(g*5) == 0
		minor := y%int(g) == 0
		for x := range s.w {
			dx := float32(x) + 0.5 - cx
			c := bpPaper.lerp(bpDeep, 0.9*(dx*dx+dy*dy)*inv)
			switch {
			case major || x%int(g*5) == 0:
				c = c.lerp(bpMajor, 0.8)
			case minor || x%int(g) == 0:
				c = c.lerp(bpMinor, 0.7)
			}
			row[3*x], row[3*x+1], row[3*x+2] = clamp8(c.r), clamp8(c.g), clamp8(c.b)
		}
	}
}

func (s *scene) rect(cv *canvas, x0, y0, x1, y1, w float32) {
	cv.line(x0, y0, x1, y0, w, bpInk, 1)
	cv.line(x1, y0, x1, y1, w, bpInk, 1)
	cv.line(x1, y1, x0, y1, w, bpInk, 1)
	cv.line(x0, y1, x0, y0, w, bpInk, 1)
}

func (s *scene) arc(cv *canvas, cx, cy, r, a0, a1 float64, w float32) {
	steps := int(max(6, float32(r)/2))
	px, py := float32(cx)+float32(r*math.Cos(a0)), float32(cy)+float32(r*math.Sin(a0))
	for i := 1; i <= steps; i++ {
		a := a0 + (a1-a0)*float64(i)/float64(steps)
		x, y := float32(cx)+float32(r*math.Cos(a)), float32(cy)+float32(r*math.Sin(a))
		cv.line(px, py, x, y, w, bpInk, 1)
		px, py = x, y
	}
}

// dimension draws a measurement: a line with arrowheads and end ticks.
func (s *scene) dimension(cv *canvas, x0, y0, x1, y1, w, u float32) {
	cv.line(x0, y0, x1, y1, w, bpInk, 1)
	dx, dy := x1-x0, y1-y0
	l := sqrt32(dx*dx+dy*dy) + 1e-6
	dx, dy = dx/l, dy/l
	a := 7 * u
	for _, e := range [2]struct{ x, y, s float32 }{{x0, y0, 1}, {x1, y1, -1}} {
		bx, by := e.x+dx*a*e.s, e.y+dy*a*e.s
		cv.line(e.x, e.y, bx-dy*a*0.4, by+dx*a*0.4, w, bpInk, 1)
		cv.line(e.x, e.y, bx+dy*a*0.4, by-dx*a*0.4, w, bpInk, 1)
		cv.line(e.x-dy*a, e.y+dx*a, e.x+dy*a, e.y-dx*a, w*0.8, bpFaint, 1)
	}
}

// titleBlock draws the drawing's title block; its "lettering" is dashes.
func (s *scene) titleBlock(cv *canvas, x0, y0, x1, y1, u float32) {
	cv.fillRect(int(x0), int(y0), int(x1), int(y1), bpPaper.lerp(bpDeep, 0.4))
	w := max(1.2, 1.6*u)
	s.rect(cv, x0, y0, x1, y1, w)
	my := (y0 + y1) / 2
	mx := x0 + (x1-x0)*0.62
	cv.line(x0, my, x1, my, w*0.7, bpInk, 1)
	cv.line(mx, y0, mx, y1, w*0.7, bpInk, 1)
	for _, c := range [4][4]float32{{x0, y0, mx, my}, {mx, y0, x1, my}, {x0, my, mx, y1}, {mx, my, x1, y1}} {
		lx := c[0] + 5*u
		ly := (c[1] + c[3]) / 2
		for lx < c[2]-8*u {
			l := u * s.rf(3, 10)
			cv.line(lx, ly, min(lx+l, c[2]-5*u), ly, max(1, 1.8*u), bpFaint, 1)
			lx += l + 3*u
		}
	}
}

// compass draws a north arrow inside a circle.
func (s *scene) compass(cv *canvas, cx, cy, r, u float32) {
	w := max(1, u)
	cv.ring(cx, cy, r, w, bpInk, 1)
	cv.fillPoly([]pt{{cx, cy - r*0.9}, {cx + r*0.22, cy}, {cx - r*0.22, cy}}, bpInk, 1)
	cv.line(cx, cy, cx, cy+r*0.9, w, bpInk, 1)
	cv.line(cx-r*0.9, cy, cx+r*0.9, cy, w, bpFaint, 1)
	// an "N" above the needle
	nx, ny, nh := cx-r*0.15, cy-r*1.25, r*0.3
	cv.line(nx, ny, nx, ny-nh, w, bpInk, 1)
	cv.line(nx, ny-nh, nx+r*0.3, ny, w, bpInk, 1)
	cv.line(nx+r*0.3, ny, nx+r*0.3, ny-nh, w, bpInk, 1)
}

// palmLine draws a palm as ink strokes.
func (s *scene) palmLine(cv *canvas, bx, by, height, lean, w float32) {
	tx, ty := bx+lean*height, by-height
	cx, cy := bx+lean*height*0.1, by-height*0.55
	var prev pt
	for i := 0; i <= 20; i++ {
		t := float32(i) / 20
		a, b, c := (1-t)*(1-t), 2*(1-t)*t, t*t
		p := pt{a*bx + b*cx + c*tx, a*by + b*cy + c*ty}
		if i > 0 {
			cv.line(prev.x, prev.y, p.x, p.y, w*1.5, bpInk, 1)
			if i%2 == 0 {
				cv.line(p.x-height*0.02, p.y, p.x+height*0.02, p.y, w, bpFaint, 1)
			}
		}
		prev = p
	}
	for i := range 7 {
		ang := float64(math.Pi) * (1.05 + 0.9*float64(i)/6)
		dx, dy := float32(math.Cos(ang)), float32(math.Sin(ang))
		l := height * 0.4
		prev = pt{tx, ty}
		for j := 1; j <= 12; j++ {
			t := float32(j) / 12
			p := pt{tx + dx*l*t, ty + dy*l*t + 0.7*l*t*t}
			cv.line(prev.x, prev.y, p.x, p.y, w, bpInk, 1)
			prev = p
		}
	}
}
