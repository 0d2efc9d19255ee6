package retro

import (
	"context"
	"math"
)

// vaporwave: a pastel gradient sky, a big soft sun, a perspective checker
// floor and floating glossy spheres.
func (s *scene) vaporwave(ctx context.Context, cv *canvas) error {
	W, H := s.fw, s.fh
	hor := float32(math.Round(float64(H * s.rf(0.58, 0.66))))
	cv.vgradient(0, int(hor), s.th.sky)
	s.horizonGlow(cv, hor)
	if s.has(mStars) {
		s.stars(cv, 0, hor*0.7, int(float32(s.w*s.h)/4000*s.detail))
	}
	sunR := min(W, H) * s.rf(0.22, 0.3)
	sunX := W*0.5 + s.rf(-0.1, 0.1)*W
	sunY := hor - sunR*s.rf(0.45, 0.8)
	if s.has(mMoon) && !s.has(mSun) {
		s.moon(cv, sunX, hor*s.rf(0.25, 0.4), min(W, H)*s.rf(0.07, 0.1))
	}
	if s.has(mSun) {
		cv.glow(sunX, sunY, sunR*2, s.th.glow, 0.35)
		stripes := 0
		if s.rng.IntN(2) == 0 {
			stripes = 5 + s.rng.IntN(3)
		}
		s.sun(cv, sunX, sunY, sunR, hor, s.th.sunTop, s.th.sunBot, stripes)
	}
	if s.has(mClouds) {
		for range 3 + s.rng.IntN(3) {
			s.puff(cv, s.rf(0, W), s.rf(0.15, 0.6)*hor, min(W, H)*s.rf(0.15, 0.3))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.has(mMountains) {
		s.mountains(cv, hor, H*s.rf(0.14, 0.22), sunX, sunR*1.8, s.th.mountFar, s.th.mountNear, s.th.mountRim, false)
	}
	if s.has(mCity) {
		s.city(cv, hor, H*s.rf(0.12, 0.22), s.th.city, s.th.cityRim, s.th.windows, 0.3, true)
	}
	if s.has(mOcean) {
		if err := s.ocean(ctx, cv, hor, sunX, sunR, s.has(mSun)); err != nil {
			return err
		}
	} else if err := s.checker(ctx, cv, hor, sunX); err != nil {
		return err
	}
	if s.has(mOrbs) {
		n := 1 + s.rng.IntN(3)
		for i := range n {
			r := min(W, H) * s.rf(0.06, 0.12) * (1 - 0.2*float32(i))
			x := W * s.rf(0.15, 0.85)
			y := hor + (H-hor)*s.rf(0.1, 0.5)
			s.shadow(cv, x, y+r*1.6, r)
			a := s.th.accent[s.rng.IntN(len(s.th.accent))]
			s.sphere(cv, x, y-r*0.2, r, a)
		}
	}
	if s.has(mPalms) {
		s.palms(cv)
	}
	return nil
}

// checker paints the floor below hor as a perspective checkerboard that
// melts into the horizon haze where cells get smaller than a few pixels.
func (s *scene) checker(ctx context.Context, cv *canvas, hor, vx float32) error {
	hg := s.fh - hor
	cellZ := s.rf(0.25, 0.4)
	phase := s.rf(0, 1)
	cellX := s.fw / (hg * s.rf(7, 11))
	a, b := s.th.checkA, s.th.checkB
	avg := a.lerp(b, 0.5)
	haze := s.th.sky.at(1)
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
		z := hg / dy
		v := z/cellZ + phase
		fv := v - float32(math.Floor(float64(v)))
		rowPx := hg / (z * z) * cellZ // one cell's height on screen
		sv := float32(1)
		if int(math.Floor(float64(v)))%2 != 0 {
			sv = -1
		}
		sv *= clamp01(min(fv, 1-fv) * rowPx * 2)
		colPx := cellX * hg / z
		fade := clamp01((min(rowPx, colPx) - 1.5) / 4)
		hz := clamp01(1 - dy/(hg*0.35))
		row := cv.pix[y*cv.w*3 : (y+1)*cv.w*3]
		for x := range s.w {
			u := (float32(x) + 0.5 - vx) * z / hg / cellX
			fu := u - float32(math.Floor(float64(u)))
			su := float32(1)
			if int(math.Floor(float64(u)))%2 != 0 {
				su = -1
			}
			su *= clamp01(min(fu, 1-fu) * colPx * 2)
			c := avg.lerp(a, su*sv*fade)
			if su*sv*fade < 0 {
				c = avg.lerp(b, -su*sv*fade)
			}
			c = c.lerp(haze, hz*hz*0.8)
			row[3*x], row[3*x+1], row[3*x+2] = clamp8(c.r), clamp8(c.g), clamp8(c.b)
		}
	}
	return nil
}

// sphere paints a glossy ball lit from the upper left.
func (s *scene) sphere(cv *canvas, cx, cy, r float32, base rgb) {
	dark := base.mul(0.35).add(s.th.silhouette.mul(0.4))
	bounce := s.th.checkA
	lx, ly, lz := float32(-0.5), float32(-0.6), float32(0.62)
	for y := int(cy - r - 1); y <= int(cy+r+1); y++ {
		for x := int(cx - r - 1); x <= int(cx+r+1); x++ {
			nx := (float32(x) + 0.5 - cx) / r
			ny := (float32(y) + 0.5 - cy) / r
			d2 := nx*nx + ny*ny
			cov := cv.cover((1-sqrt32(d2))*r + 0.5)
			if cov <= 0 {
				continue
			}
			nz := sqrt32(max(0, 1-d2))
			diff := clamp01(nx*lx + ny*ly + nz*lz)
			c := dark.lerp(base, diff)
			spec := float32(math.Pow(float64(diff), 24))
			c = c.lerp(rgb{255, 255, 255}, spec)
			c = c.add(bounce.mul(0.35 * clamp01(ny) * clamp01(ny) * clamp01(ny)))
			cv.blend(x, y, c, cov)
		}
	}
}

// shadow darkens an ellipse on the floor under a floating object.
func (s *scene) shadow(cv *canvas, cx, cy, r float32) {
	rx, ry := r*1.1, r*0.28
	for y := int(cy - ry - 1); y <= int(cy+ry+1); y++ {
		for x := int(cx - rx - 1); x <= int(cx+rx+1); x++ {
			dx := (float32(x) + 0.5 - cx) / rx
			dy := (float32(y) + 0.5 - cy) / ry
			if d := dx*dx + dy*dy; d < 1 {
				cv.blend(x, y, s.th.silhouette, 0.45*(1-d))
			}
		}
	}
}
