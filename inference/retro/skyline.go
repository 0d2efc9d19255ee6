package retro

import (
	"context"
	"math"
)

// pixelSkyline: a pixel-art city with lit windows, drawn at low logical
// resolution on a hard-edged canvas and enlarged block by block.
func (s *scene) pixelSkyline(ctx context.Context, cv *canvas) error {
	W, H := s.fw, s.fh
	street := float32(math.Round(float64(H * s.rf(0.74, 0.82))))
	cv.vgradient(0, int(street), s.th.sky)
	if s.light != lightDay {
		s.horizonGlow(cv, street)
	}
	if s.has(mStars) {
		n := int(float32(s.w*s.h) / 160 * s.detail)
		for range n {
			x, y := s.rng.IntN(s.w), int(street*0.75*s.rng.Float32()*s.rng.Float32())
			b := s.rng.Float32()
			cv.blend(x, y, s.th.starDim.lerp(s.th.star, b), 0.5+0.5*b)
			if b > 0.93 {
				for _, d := range [4][2]int{{1, 0}, {-1, 0}, {0, 1}, {0, -1}} {
					cv.blend(x+d[0], y+d[1], s.th.starDim, 0.8)
				}
			}
		}
	}
	r := float32(math.Round(float64(min(W, H) * s.rf(0.06, 0.09))))
	cx := float32(math.Round(float64(W * s.rf(0.15, 0.85))))
	cy := float32(math.Round(float64(street * s.rf(0.18, 0.4))))
	switch {
	case s.has(mMoon) && (s.light == lightNight || !s.has(mSun)):
		s.moon(cv, cx, cy, r)
	case s.has(mSun):
		if s.light == lightSunset {
			cy = street * s.rf(0.55, 0.7)
			r *= 1.8
		}
		cv.glow(cx, cy, r*3, s.th.glow, 0.3)
		s.sun(cv, cx, cy, r, street, s.th.sunTop, s.th.sunBot, 0)
	}
	if s.has(mClouds) {
		for range 2 + s.rng.IntN(3) {
			s.puff(cv, s.rf(0, W), s.rf(0.15, 0.55)*street, min(W, H)*s.rf(0.18, 0.3))
		}
	}
	if s.has(mMountains) {
		s.mountains(cv, street, H*s.rf(0.3, 0.4), 0, 0, s.th.mountFar, s.th.mountFar, s.th.mountRim, false)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.has(mCity) {
		s.blocks(cv, int(street), street*s.rf(0.55, 0.7), s.th.cityFar, 0.12, 0.45)
		s.blocks(cv, int(street), street*s.rf(0.4, 0.55), s.th.city, 0.45, 1)
	}
	if s.has(mTrees) {
		for x := s.rf(-4, 2); x < W; x += s.rf(3, 9) {
			pine(cv, x, street, H*s.rf(0.06, 0.12), s.th.tree)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.has(mOcean) {
		s.reflect(cv, int(street))
	} else {
		s.street(cv, int(street))
	}
	if s.has(mPalms) {
		for range 1 + s.rng.IntN(2) {
			x := W * s.rf(0.05, 0.95)
			s.palm(cv, x, H*1.02, H*s.rf(0.35, 0.5), s.rf(-0.2, 0.2), s.th.silhouette)
		}
	}
	return nil
}

// blocks paints one layer of pixel buildings on row base. lit is how
// many windows are lit; shade pulls the windows towards the body colour
// for distant layers.
func (s *scene) blocks(cv *canvas, base int, maxH float32, body rgb, lit, shade float32) {
	rim := body.lerp(s.th.cityRim, 0.6)
	unlit := body.lerp(s.th.cityRim, 0.18)
	x := -s.rng.IntN(4)
	for x < s.w {
		bw := 5 + s.rng.IntN(int(max(6, 11*s.u*4)))
		bh := int(maxH * s.rf(0.3, 1))
		top := base - bh
		cv.fillRect(x, top, x+bw, base, body)
		cv.fillRect(x, top, x+1, base, rim)
		cv.fillRect(x, top, x+bw, top+1, rim)
		switch r := s.rng.Float32(); {
		case r < 0.22: // antenna with a warning light
			ax := x + 1 + s.rng.IntN(max(bw-2, 1))
			ah := 2 + s.rng.IntN(max(bh/5, 2))
			cv.fillRect(ax, top-ah, ax+1, top, body)
			cv.set(ax, top-ah-1, s.th.accent[0])
		case r < 0.42: // stepped crown
			in := 1 + bw/4
			sh := 2 + s.rng.IntN(4)
			cv.fillRect(x+in, top-sh, x+bw-in, top, body)
			cv.fillRect(x+in, top-sh, x+bw-in, top-sh+1, rim)
			if s.rng.IntN(2) == 0 && bw-2*in > 2 {
				cv.fillRect(x+in+1, top-sh-2, x+bw-in-1, top-sh, body)
			}
		case r < 0.52: // water tower
			tx := x + 1 + s.rng.IntN(max(bw-4, 1))
			cv.fillRect(tx, top-4, tx+3, top-1, rim)
			cv.fillRect(tx, top-1, tx+1, top, body)
			cv.fillRect(tx+2, top-1, tx+3, top, body)
		case r < 0.62: // spire
			cv.fillPoly([]pt{{float32(x), float32(top)}, {float32(x + bw), float32(top)},
				{float32(x) + float32(bw)/2, float32(top) - float32(bw)*0.9}}, body, 1)
		}
		// Window grid: each building picks its own rhythm.
		sx, sy := 2+s.rng.IntN(2), 2+s.rng.IntN(2)
		p := lit * s.rf(0.3, 1.6)
		var glow rgb
		if len(s.th.windows) > 0 {
			glow = s.th.windows[s.rng.IntN(len(s.th.windows))]
		}
		for wy := top + 2; wy < base-1; wy += sy {
			for wx := x + 2; wx < x+bw-1; wx += sx {
				c := unlit
				if s.rng.Float32() < p {
					c = glow
					if s.rng.Float32() < 0.15 {
						c = s.th.windows[s.rng.IntN(len(s.th.windows))]
					}
					c = c.lerp(body, 1-shade)
				}
				cv.set(wx, wy, c)
			}
		}
		if s.rng.Float32() < 0.15 && bw > 5 { // a neon sign down the façade
			c := s.th.accent[s.rng.IntN(len(s.th.accent))].lerp(body, 1-shade)
			sy0 := top + 2 + s.rng.IntN(max(bh/3, 1))
			cv.fillRect(x+bw-2, sy0, x+bw-1, min(sy0+3+s.rng.IntN(6), base), c)
		}
		x += bw + s.rng.IntN(3) - 1
	}
}

// street paints the road below row y: kerb, asphalt, lamps, car lights.
func (s *scene) street(cv *canvas, y int) {
	cv.vgradient(y, s.h, s.th.ground)
	kerb := s.th.cityRim.lerp(s.th.ground.at(0), 0.4)
	cv.fillRect(0, y, s.w, y+1, kerb)
	lane := y + (s.h-y)/2
	for x := s.rng.IntN(6); x < s.w; x += 8 {
		cv.fillRect(x, lane, x+4, lane+1, kerb)
	}
	for x := s.rng.IntN(20); x < s.w; x += 18 + s.rng.IntN(14) {
		cv.fillRect(x, y-7, x+1, y, s.th.silhouette.lerp(kerb, 0.3))
		cv.set(x+1, y-7, s.th.windows[0])
		cv.glow(float32(x)+1.5, float32(y)-6.5, 5, s.th.windows[0], 0.25)
	}
	for x := s.rng.IntN(30); x < s.w; x += 14 + s.rng.IntN(40) {
		cy := y + 2 + s.rng.IntN(max(s.h-y-3, 1))
		c := s.th.accent[0]
		if cy >= lane {
			c = s.th.star
		}
		cv.fillRect(x, cy, x+3, cy+1, c)
	}
}

// reflect paints water below row y that mirrors the city above it, with
// ripple gaps and a sideways jitter per row.
func (s *scene) reflect(cv *canvas, y int) {
	for yy := y; yy < s.h; yy++ {
		d := yy - y
		src := y - 1 - d*3/2
		t := float32(d) / float32(max(s.h-y, 1))
		water := s.th.water.at(t)
		gap := s.hash(yy, 7) < 0.22+0.3*t
		jit := int((s.hash(yy, 8) - 0.5) * (2 + 4*t))
		for x := range s.w {
			c := water
			if !gap && src >= 0 {
				c = cv.at(x+jit, src).lerp(water, 0.45+0.4*t)
			}
			cv.set(x, yy, c)
		}
	}
}
