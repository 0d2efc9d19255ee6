package retro

import (
	"context"
	"math"
)

// synthwave: a striped sun sinking behind neon mountains over a
// perspective grid, under a starry dusk.
func (s *scene) synthwave(ctx context.Context, cv *canvas) error {
	W, H := s.fw, s.fh
	hor := float32(math.Round(float64(H * s.rf(0.56, 0.64))))
	cv.vgradient(0, int(hor), s.th.sky)
	s.horizonGlow(cv, hor)

	if s.has(mStars) {
		s.stars(cv, 0, hor*0.8, int(float32(s.w*s.h)/2600*s.detail))
	}
	sunR := min(W, H) * s.rf(0.2, 0.27)
	sunX := W*0.5 + s.rf(-0.14, 0.14)*W
	sunY := hor - sunR*s.rf(0.2, 0.5)
	if s.has(mMoon) {
		mx := s.fw * s.rf(0.12, 0.3)
		if sunX < W/2 {
			mx = W - mx
		}
		if !s.has(mSun) {
			mx = sunX
		}
		s.moon(cv, mx, hor*s.rf(0.2, 0.35), min(W, H)*s.rf(0.05, 0.08))
	}
	if s.has(mSun) {
		cv.glow(sunX, sunY, sunR*2.4, s.th.glow, 0.45)
		s.sun(cv, sunX, sunY, sunR, hor, s.th.sunTop, s.th.sunBot, 7+s.rng.IntN(3))
	}
	if s.has(mClouds) {
		s.streaks(cv, hor*0.3, hor*0.85, 3+s.rng.IntN(4))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	valleyW := float32(0)
	if s.has(mSun) {
		valleyW = sunR * 1.6
	}
	if s.has(mMountains) {
		s.mountains(cv, hor, H*s.rf(0.26, 0.36), sunX, valleyW*1.1, s.th.mountFar, s.th.mountFar.lerp(s.th.mountNear, 0.5), s.th.mountRim, false)
		s.mountains(cv, hor, H*s.rf(0.14, 0.2), sunX, valleyW*0.9, s.th.mountNear, s.th.silhouette, s.th.mountRim, true)
	}
	if s.has(mCity) {
		s.city(cv, hor, H*s.rf(0.18, 0.28), s.th.cityFar, s.th.cityRim, s.th.windows, 0.15, false)
		s.city(cv, hor, H*s.rf(0.1, 0.2), s.th.city, s.th.cityRim, s.th.windows, 0.35, true)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	switch {
	case s.has(mOcean):
		if err := s.ocean(ctx, cv, hor, sunX, sunR, s.has(mSun)); err != nil {
			return err
		}
	case s.has(mGrid):
		if err := s.grid(ctx, cv, hor, sunX); err != nil {
			return err
		}
	default:
		cv.vgradient(int(hor), s.h, s.th.ground)
	}
	if s.has(mPalms) {
		s.palms(cv)
	}
	return nil
}

// horizonGlow brightens the rows around the horizon.
func (s *scene) horizonGlow(cv *canvas, hor float32) {
	reach := s.fh * 0.12
	for y := int(hor - reach); y < int(hor+reach*0.3); y++ {
		d := abs32(float32(y)+0.5-hor) / reach
		if y >= int(hor) {
			d *= 3.3
		}
		if a := 1 - d; a > 0 {
			for x := range s.w {
				cv.glowAt(x, y, s.th.glow, 0.35*a*a)
			}
		}
	}
}

// grid paints the ground below hor with a glowing perspective grid whose
// vanishing point is (vx, hor).
func (s *scene) grid(ctx context.Context, cv *canvas, hor, vx float32) error {
	hg := s.fh - hor
	spacingZ := s.rf(0.35, 0.5)
	phase := s.rf(0, 1)
	sx := s.fw / (hg * s.rf(11, 16)) // world width of one cell
	lw := max(1.2, 2.2*s.u)          // line width at the bottom edge, px
	grid := s.th.grid
	core := grid.lerp(rgb{255, 255, 255}, 0.55)
	for y := int(hor); y < s.h; y++ {
		if y%rowCheck == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		dy := float32(y) + 0.5 - hor
		if dy <= 0 {
			continue
		}
		z := hg / dy // depth: 1 at the bottom edge
		base := s.th.ground.at(dy / hg)
		base = base.add(s.th.glow.mul(0.35 * float32(math.Exp(float64(-dy/(0.03*s.fh))))))
		w := max(0.7, lw/z)
		// Horizontal lines at depths n*spacingZ, screen distance in px.
		zn := (float32(math.Round(float64(z/spacingZ+phase))) - phase) * spacingZ
		hd := float32(1e9)
		if zn > 0 {
			hd = abs32(dy - hg/zn)
		}
		rowGap := hg / (z * z) * spacingZ
		fadeH := clamp01((rowGap - 2) / (6 * max(s.u, 0.5)))
		hCov := clamp01(w/2+0.5-hd) * fadeH
		hHalo := clamp01(1-hd/(w*3)) * 0.35 * fadeH
		colGap := sx * hg / z
		fadeV := clamp01((colGap - 4) / (10 * max(s.u, 0.5)))
		haze := 0.2 * (1 - fadeV) * clamp01(w/colGap*2)
		row := cv.pix[y*cv.w*3 : (y+1)*cv.w*3]
		for x := range s.w {
			xw := (float32(x) + 0.5 - vx) * z / hg / sx
			vd := abs32(xw-float32(math.Round(float64(xw)))) * colGap
			vCov := clamp01(w/2+0.5-vd) * fadeV
			halo := max(hHalo, clamp01(1-vd/(w*3))*0.35*fadeV)
			a := max(hCov, vCov)
			c := base.add(grid.mul(halo + haze))
			c = c.lerp(grid, a)
			if a > 0.6 {
				c = c.lerp(core, (a-0.6)*0.8)
			}
			row[3*x], row[3*x+1], row[3*x+2] = clamp8(c.r), clamp8(c.g), clamp8(c.b)
		}
	}
	return nil
}

// ocean paints water below hor with the sun's broken reflection and
// scattered glints.
func (s *scene) ocean(ctx context.Context, cv *canvas, hor, sunX, sunR float32, sun bool) error {
	hg := s.fh - hor
	freq := s.rf(5, 8)
	for y := int(hor); y < s.h; y++ {
		if y%rowCheck == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		dy := float32(y) + 0.5 - hor
		t := dy / hg
		cv.fillRect(0, y, s.w, y+1, s.th.water.at(t))
		if !sun {
			continue
		}
		z := hg / max(dy, 0.5)
		wave := float32(math.Sin(float64(z*freq))) + 0.6*s.hash(y, 1) - 0.3
		if wave < 0.1 {
			continue
		}
		hw := sunR * (0.95 - 0.5*t) * (0.55 + 0.6*s.hash(y, 2))
		off := (s.hash(y, 3) - 0.5) * sunR * 0.3 * t
		col := s.th.sunBot.lerp(s.th.sunTop, clamp01(1-t*2.5))
		a := clamp01(1.1 - t*1.2)
		for x := int(sunX + off - hw); x <= int(sunX+off+hw); x++ {
			cv.blend(x, y, col, a)
		}
	}
	n := int(60 * s.detail * s.fw / 512)
	for range n {
		t := s.rng.Float32()
		y := hor + hg*t*t
		x := s.rf(0, s.fw)
		l := s.u * (3 + 30*t*t) * s.rf(0.5, 1.5)
		cv.line(x-l, y, x+l, y, max(1, s.u*t*2), s.th.glow.lerp(s.th.star, 0.4), 0.35+0.4*t)
	}
	return nil
}

// palms plants one or two palms at the sides of the frame, leaning in.
func (s *scene) palms(cv *canvas) {
	n := 1 + s.rng.IntN(2)
	left := s.rng.IntN(2) == 0
	for i := range n {
		onLeft := left == (i == 0)
		h := s.fh * s.rf(0.45, 0.7)
		x := s.fw * s.rf(0.04, 0.2)
		lean := s.rf(0.05, 0.25)
		if !onLeft {
			x, lean = s.fw-x, -lean
		}
		by := s.fh * s.rf(1.0, 1.08)
		if i > 0 {
			h *= 0.7
			by = s.fh * 0.98
		}
		s.palm(cv, x, by, h, lean, s.th.silhouette)
	}
}
