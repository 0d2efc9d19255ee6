package retro

import (
	"math"
	"math/rand/v2"
)

// scene is what every style paints from: the canvas geometry, a theme,
// the motifs left after the negative prompt, and the request's PRNG.
type scene struct {
	w, h   int
	fw, fh float32
	u      float32 // size of a "detail unit": 1 at 512 px on the short side
	th     *theme
	rng    *rand.Rand
	m      motif
	light  lighting
	detail float32 // 1 at the default 30 steps; more steps, more stars
	salt   uint64  // feeds hash, for per-row noise that must not use rng
}

func (s *scene) has(m motif) bool { return s.m&m != 0 }

// rf is a uniform float in [lo, hi).
func (s *scene) rf(lo, hi float32) float32 { return lo + (hi-lo)*s.rng.Float32() }

// hash is a deterministic value in [0, 1) for (a, b), for noise that is
// looked up per row or column without consuming rng.
func (s *scene) hash(a, b int) float32 {
	z := s.salt + uint64(a)*0x9e3779b97f4a7c15 + uint64(b)*0xbf58476d1ce4e5b9
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40) / (1 << 24)
}

// ridge is layered 1D value noise. Ridged layers fold the noise so that
// crests are sharp, which reads as mountains; smooth layers read as hills.
type ridge struct {
	oct    [][]float32
	ridged bool
}

func (s *scene) newRidge(octaves, cells int, ridged bool) ridge {
	r := ridge{oct: make([][]float32, octaves), ridged: ridged}
	for o := range r.oct {
		v := make([]float32, cells<<o+2)
		for i := range v {
			v[i] = s.rng.Float32()
		}
		r.oct[o] = v
	}
	return r
}

// at samples the noise at x in [0, 1]; the result is in [0, 1].
func (r ridge) at(x float32) float32 {
	var sum, norm float32
	amp := float32(1)
	for o, v := range r.oct {
		p := clamp01(x) * float32(len(v)-2)
		i := min(int(p), len(v)-2)
		f := p - float32(i)
		f = f * f * (3 - 2*f)
		a := v[i] + (v[i+1]-v[i])*f
		if r.ridged && o < 2 {
			a = 1 - abs32(2*a-1)
		}
		sum += a * amp
		norm += amp
		amp *= 0.5
	}
	return sum / norm
}

// stars scatters n stars between rows y0 and y1, denser towards y0.
func (s *scene) stars(cv *canvas, y0, y1 float32, n int) {
	for range n {
		x := s.rf(0, s.fw)
		t := s.rng.Float32()
		y := y0 + (y1-y0)*t*t
		b := s.rng.Float32()
		col := s.th.starDim.lerp(s.th.star, b)
		switch {
		case b > 0.95:
			l := max(2, s.u*s.rf(4, 9))
			w := max(1, s.u*0.9)
			cv.line(x-l, y, x+l, y, w, col, 0.9)
			cv.line(x, y-l, x, y+l, w, col, 0.9)
			cv.disc(x, y, max(1, 1.6*s.u), s.th.star, 1)
		case b > 0.8 && s.u >= 1:
			cv.disc(x, y, 1.1*s.u, col, 1)
		default:
			cv.blend(int(x), int(y), col, 0.45+0.55*b)
		}
	}
}

// sun paints a disc with a vertical gradient, cut by horizontal gaps in
// its lower part (the synthwave sun) when stripes > 0, and clipped at row
// clip (the horizon).
func (s *scene) sun(cv *canvas, cx, cy, r, clip float32, top, bot rgb, stripes int) {
	mid := top.lerp(bot, 0.5).add(rgb{20, -10, -30})
	grad := ramp{{0, top}, {0.45, mid}, {1, bot}}
	for y := int(cy - r - 1); y <= int(cy+r+1) && float32(y) < clip; y++ {
		yc := float32(y) + 0.5
		dy := yc - cy
		if dy*dy >= (r+1)*(r+1) {
			continue
		}
		if stripes > 0 {
			start := cy - 0.4*r
			if yc > start {
				u := (yc - start) / (1.4 * r)
				ph := u * float32(stripes)
				if frac := ph - float32(math.Floor(float64(ph))); frac < 0.12+0.45*u {
					continue
				}
			}
		}
		col := grad.at((yc - (cy - r)) / (2 * r))
		hc := sqrt32(max(0, (r+1)*(r+1)-dy*dy))
		for x := int(cx - hc - 1); x <= int(cx+hc+1); x++ {
			dx := float32(x) + 0.5 - cx
			d := sqrt32(dx*dx + dy*dy)
			cv.blend(x, y, col, cv.cover(r-d+0.5))
		}
	}
}

// moon paints a crescent (or, half the time, a full moon with craters)
// with a faint halo.
func (s *scene) moon(cv *canvas, cx, cy, r float32) {
	cv.glow(cx, cy, r*3, s.th.moon, 0.12)
	if s.rng.Float32() < 0.5 {
		cv.disc(cx, cy, r, s.th.moon, 1)
		for range 5 {
			a := s.rf(0, 2*math.Pi)
			d := s.rf(0, 0.6) * r
			cv.disc(cx+d*float32(math.Cos(float64(a))), cy+d*float32(math.Sin(float64(a))),
				r*s.rf(0.1, 0.22), s.th.crater, 0.45)
		}
		return
	}
	ox, oy, r2 := cx+0.42*r, cy-0.22*r, 0.92*r
	for y := int(cy - r - 1); y <= int(cy+r+1); y++ {
		for x := int(cx - r - 1); x <= int(cx+r+1); x++ {
			px, py := float32(x)+0.5, float32(y)+0.5
			d1 := sqrt32((px-cx)*(px-cx) + (py-cy)*(py-cy))
			d2 := sqrt32((px-ox)*(px-ox) + (py-oy)*(py-oy))
			a := cv.cover(r-d1+0.5) * (1 - cv.cover(r2-d2+0.5))
			cv.blend(x, y, s.th.moon, a)
		}
	}
}

// mountains paints one range standing on row base and returns the height
// of each column. The range dips around valleyX (so a sun there stays
// visible) when valleyW > 0.
func (s *scene) mountains(cv *canvas, base, maxH, valleyX, valleyW float32, top, bottom, rim rgb, contour bool) []float32 {
	octaves := 3 + int(s.detail)
	rd := s.newRidge(min(octaves, 6), 3, true)
	hs := make([]float32, cv.w)
	for x := range hs {
		fx := float32(x) + 0.5
		h := maxH * (0.12 + 0.88*rd.at(fx/s.fw))
		if valleyW > 0 {
			h *= 0.25 + 0.75*smoothstep(0.2, 1, abs32(fx-valleyX)/valleyW)
		}
		hs[x] = h
	}
	rimW := max(1, 2*s.u)
	for x, h := range hs {
		if h < 0.5 {
			continue
		}
		fx := float32(x) + 0.5
		k := max(2, int(3*s.u))
		sl := (hs[min(x+k, len(hs)-1)] - hs[max(x-k, 0)]) / float32(2*k)
		// Slopes facing the light source (the valley, where the sun sits)
		// catch the rim colour.
		face := float32(1)
		if fx > valleyX {
			face = -1
		}
		lit := clamp01(0.5 + face*sl/(1.5*max(s.u, 0.25)))
		t0 := base - h
		for y := int(t0); float32(y) < base; y++ {
			yc := float32(y) + 0.5
			cov := cv.cover(yc - t0 + 0.5)
			if cov <= 0 {
				continue
			}
			t := (yc - t0) / h
			col := top.lerp(bottom, float32(math.Sqrt(float64(t))))
			col = col.lerp(rim, 0.35*lit*(1-t))
			if d := yc - t0; d < rimW {
				col = col.lerp(rim, 0.9*(1-d/rimW)*(0.4+0.6*lit))
			}
			if contour {
				if step := 7 * s.u; step >= 3 && int((base-yc)/step) != int((base-yc-1)/step) {
					col = col.lerp(rim, 0.3*(1-t))
				}
			}
			cv.blend(x, y, col, cov)
		}
	}
	return hs
}

// city paints a row of buildings standing on row base.
func (s *scene) city(cv *canvas, base, maxH float32, body, rim rgb, windows []rgb, lit float32, withWindows bool) {
	x := -s.rf(0, 20) * s.u
	for x < s.fw {
		bw := s.rf(0.035, 0.085) * s.fw
		bh := maxH * s.rf(0.3, 1)
		top := base - bh
		x0, x1 := int(x), int(x+bw)
		cv.fillRect(x0, int(top), x1, int(base)+1, body)
		switch r := s.rng.Float32(); {
		case r < 0.25:
			mx := x + bw*s.rf(0.3, 0.7)
			ah := bh * s.rf(0.1, 0.25)
			cv.line(mx, top, mx, top-ah, max(1, s.u), body, 1)
			cv.disc(mx, top-ah, max(1, 1.5*s.u), s.th.accent[0], 1)
		case r < 0.45:
			inset := bw * s.rf(0.15, 0.3)
			sh := bh * s.rf(0.06, 0.14)
			cv.fillRect(int(x+inset), int(top-sh), int(x+bw-inset), int(top)+1, body)
			cv.fillRect(int(x+inset), int(top-sh), int(x+bw-inset), int(top-sh+max(1, s.u)), rim)
		case r < 0.6:
			cv.fillPoly([]pt{{x, top}, {x + bw, top}, {x + bw/2, top - bw*0.8}}, body, 1)
		}
		cv.blendRect(x0, int(top), x1, int(top+max(1, s.u)), rim, 0.8)
		cv.blendRect(x0, int(top), x0+int(max(1, s.u)), int(base), rim, 0.35)
		if withWindows {
			cw, ch := max(3, 7*s.u), max(4, 10*s.u)
			ww, wh := max(1, cw*0.45), max(1, ch*0.4)
			p := lit * s.rf(0.4, 1.4)
			for wy := top + ch*0.8; wy+wh < base-ch*0.3; wy += ch {
				for wx := x + cw*0.5; wx+ww < x+bw-cw*0.3; wx += cw {
					if s.rng.Float32() < p {
						c := windows[s.rng.IntN(len(windows))]
						cv.blendRect(int(wx), int(wy), int(wx+ww), int(wy+wh), c, 0.95)
					}
				}
			}
		}
		x += bw + s.rf(-0.3, 0.6)*bw*0.4
	}
}

// palm paints a palm tree silhouette rooted at (bx, by).
func (s *scene) palm(cv *canvas, bx, by, height, lean float32, col rgb) {
	tx, ty := bx+lean*height, by-height
	cx, cy := bx+lean*height*0.1, by-height*0.55
	const n = 24
	trunk := make([]pt, n+1)
	for i := range trunk {
		t := float32(i) / n
		a, b, c := (1-t)*(1-t), 2*(1-t)*t, t*t
		trunk[i] = pt{a*bx + b*cx + c*tx, a*by + b*cy + c*ty}
	}
	cv.stroke(trunk, height*0.05, height*0.022, col, 1)
	fronds := 7 + s.rng.IntN(3)
	for i := range fronds {
		ang := float32(math.Pi) * (1.05 + 0.9*float32(i)/float32(fronds-1))
		ang += s.rf(-0.12, 0.12)
		dx, dy := float32(math.Cos(float64(ang))), float32(math.Sin(float64(ang)))
		l := height * s.rf(0.32, 0.46)
		droop := s.rf(0.55, 0.9)
		const m = 22
		pts := make([]pt, m+1)
		for j := range pts {
			t := float32(j) / m
			pts[j] = pt{tx + dx*l*t, ty + dy*l*t + droop*l*t*t}
		}
		cv.stroke(pts, height*0.028, height*0.006, col, 1)
		// Leaflets hang from each frond: long and drooping near the crown,
		// short towards the tip.
		for j := 1; j < m; j++ {
			t := float32(j) / m
			p, q := pts[j-1], pts[j+1]
			fx, fy := q.x-p.x, q.y-p.y
			fl := sqrt32(fx*fx+fy*fy) + 1e-6
			fx, fy = fx/fl, fy/fl
			for _, side := range [2]float32{-1, 1} {
				nx, ny := -fy*side, fx*side
				ll := l * 0.26 * (1 - 0.8*t)
				if ny < 0 { // the upper side of the frond: shorter leaflets
					ll *= 0.55
				}
				dx, dy := nx*0.55+fx*0.45, ny*0.55+fy*0.45+0.75
				dl := sqrt32(dx*dx+dy*dy) + 1e-6
				ex, ey := pts[j].x+dx/dl*ll, pts[j].y+dy/dl*ll
				cv.line(pts[j].x, pts[j].y, ex, ey, max(1, height*0.007*(1-0.5*t)), col, 1)
			}
		}
	}
	cv.disc(tx, ty+height*0.02, height*0.03, col, 1)
}

// streaks paints thin horizontal clouds, the synthwave kind.
func (s *scene) streaks(cv *canvas, y0, y1 float32, n int) {
	for range n {
		y := s.rf(y0, y1)
		cx := s.rf(0, s.fw)
		l := s.fw * s.rf(0.12, 0.35)
		w := max(2, s.u*s.rf(3, 8))
		cv.line(cx-l/2, y, cx+l/2, y, w, s.th.cloudLo, 0.75)
		cv.line(cx-l/2+w, y-w*0.35, cx+l/2-w*2, y-w*0.35, w*0.45, s.th.cloud, 0.7)
	}
}

// puff paints a cumulus cloud with a flat base at (cx, cy).
func (s *scene) puff(cv *canvas, cx, cy, size float32) {
	n := 4 + s.rng.IntN(3)
	type blob struct{ x, y, r float32 }
	bs := make([]blob, n)
	for i := range bs {
		t := (float32(i)+0.5)/float32(n) - 0.5
		r := size * s.rf(0.22, 0.36) * (1 - abs32(t))
		bs[i] = blob{cx + t*size*1.4, cy - r*0.5, r}
	}
	cy0, cy1 := cv.cy0, cv.cy1
	cv.cy1 = min(cv.cy1, int(cy+size*0.12)+1)
	for _, b := range bs {
		cv.disc(b.x, b.y+size*0.06, b.r, s.th.cloudLo, 1)
	}
	for _, b := range bs {
		cv.disc(b.x-size*0.02, b.y-size*0.02, b.r*0.92, s.th.cloud, 1)
	}
	cv.cy0, cv.cy1 = cy0, cy1
}

// pine paints a conifer silhouette standing at (x, base).
func pine(cv *canvas, x, base, h float32, col rgb) {
	w := h * 0.42
	cv.fillRect(int(x-h*0.04), int(base-h*0.15), int(x+h*0.04)+1, int(base)+1, col)
	for i := range 3 {
		t := float32(i) / 3
		y0 := base - h*0.12 - t*h*0.28
		tw := w * (1 - 0.25*float32(i))
		cv.fillPoly([]pt{{x - tw/2, y0}, {x + tw/2, y0}, {x, y0 - h*0.5}}, col, 1)
	}
}
