package retro

import (
	"context"
	"math"
)

// landscape: an adventure-game vista (sky, sun or moon, clouds, snowy
// mountains, rolling hills, pines, a lake or a town) for the handheld and
// DOS palettes.
func (s *scene) landscape(ctx context.Context, cv *canvas) error {
	W, H := s.fw, s.fh
	hor := float32(math.Round(float64(H * s.rf(0.52, 0.6))))
	cv.vgradient(0, int(hor), s.th.sky)
	if s.light == lightSunset || s.light == lightNight {
		s.horizonGlow(cv, hor)
	}
	if s.has(mStars) {
		n := int(float32(s.w*s.h) / 250 * s.detail)
		for range n {
			x, y := s.rng.IntN(s.w), int(hor*0.8*s.rng.Float32()*s.rng.Float32())
			b := s.rng.Float32()
			cv.blend(x, y, s.th.starDim.lerp(s.th.star, b), 0.5+0.5*b)
		}
	}
	r := float32(math.Round(float64(min(W, H) * s.rf(0.07, 0.11))))
	cx := W * s.rf(0.15, 0.85)
	cy := hor * s.rf(0.2, 0.45)
	switch {
	case s.has(mMoon) && (s.light == lightNight || !s.has(mSun)):
		s.moon(cv, cx, cy, r)
	case s.has(mSun):
		if s.light == lightSunset {
			cy, r = hor*s.rf(0.7, 0.85), r*1.5
		}
		cv.glow(cx, cy, r*3.5, s.th.glow, 0.35)
		s.sun(cv, cx, cy, r, hor, s.th.sunTop, s.th.sunBot, 0)
	}
	if s.has(mClouds) {
		for range 2 + s.rng.IntN(3) {
			size := min(W, H) * s.rf(0.16, 0.28)
			x, y := s.rf(0, W), s.rf(0.12, 0.6)*hor
			for try := 0; try < 6 && abs32(x-cx) < r+size*0.8 && abs32(y-cy) < r+size*0.4; try++ {
				x, y = s.rf(0, W), s.rf(0.12, 0.6)*hor // keep the sun in view
			}
			s.puff(cv, x, y, size)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.has(mMountains) {
		hs := s.mountains(cv, hor, H*s.rf(0.22, 0.32), 0, 0, s.th.mountFar, s.th.mountNear, s.th.mountRim, false)
		s.snowcaps(cv, hor, hs)
	}
	if s.has(mCity) {
		s.blocks(cv, int(hor)+1, H*0.22, s.th.city, 0.4, 1)
	}
	if s.has(mOcean) {
		ground := hor + (H-hor)*s.rf(0.45, 0.6)
		for y := int(hor); y < int(ground); y++ {
			t := (float32(y) + 0.5 - hor) / (ground - hor)
			cv.fillRect(0, y, s.w, y+1, s.th.water.at(t))
			if s.hash(y, 4) < 0.35 {
				x := int(s.hash(y, 5) * W)
				cv.fillRect(x, y, x+int(2+6*s.hash(y, 6)), y+1, s.th.water.at(0).lerp(s.th.star, 0.5))
			}
		}
		s.hills(ctx, cv, ground, H*0.12, s.th.hill, s.th.tree, 2)
	} else {
		s.hills(ctx, cv, hor+(H-hor)*0.2, H*0.1, s.th.hillFar, s.th.hill, 2)
		s.hills(ctx, cv, hor+(H-hor)*0.55, H*0.14, s.th.hill, s.th.tree, 3)
	}
	if s.has(mPalms) {
		for range 1 + s.rng.IntN(2) {
			s.palm(cv, W*s.rf(0.05, 0.95), H*1.02, H*s.rf(0.35, 0.5), s.rf(-0.2, 0.2), s.th.silhouette)
		}
	}
	return ctx.Err()
}

// hills paints a rolling hill line around row base down to the bottom
// edge, shading from light to dark, and plants pines along its top when
// the scene has trees.
func (s *scene) hills(ctx context.Context, cv *canvas, base, amp float32, light, dark rgb, cells int) {
	rd := s.newRidge(2, cells, false)
	tops := make([]float32, s.w)
	for x := range tops {
		tops[x] = base - amp*rd.at((float32(x)+0.5)/s.fw)
	}
	for x, t0 := range tops {
		for y := int(t0); y < s.h; y++ {
			t := clamp01((float32(y) - t0) / (s.fh - t0))
			cv.set(x, y, light.lerp(dark, t*0.4))
		}
		cv.set(x, int(t0), light.lerp(s.th.cloud, 0.3))
	}
	if !s.has(mTrees) || ctx.Err() != nil {
		return
	}
	step := max(2, s.fw/40)
	for x := s.rf(0, step); x < s.fw; x += step * s.rf(0.5, 1.6) {
		h := s.fh * s.rf(0.08, 0.16)
		pine(cv, x, tops[min(int(x), s.w-1)]+h*0.15, h, s.th.tree)
	}
}

// snowcaps whitens the upper part of the tallest peaks.
func (s *scene) snowcaps(cv *canvas, base float32, hs []float32) {
	var top float32
	for _, h := range hs {
		top = max(top, h)
	}
	line := top * 0.72
	for x, h := range hs {
		if h < line {
			continue
		}
		depth := (h - line) * 0.8
		for y := int(base - h); float32(y) < base-h+depth+s.hash(x, 9)*2; y++ {
			cv.set(x, y, s.th.snow)
		}
	}
}
