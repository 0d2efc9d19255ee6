package retro

import "image/color"

// rgb is a working colour with channels in [0, 255]. Scenes compute in
// float32 and store bytes; the final palette quantization hides the
// rounding.
type rgb struct{ r, g, b float32 }

func hex(v uint32) rgb {
	return rgb{float32(v >> 16 & 0xff), float32(v >> 8 & 0xff), float32(v & 0xff)}
}

func (c rgb) lerp(d rgb, t float32) rgb {
	return rgb{c.r + (d.r-c.r)*t, c.g + (d.g-c.g)*t, c.b + (d.b-c.b)*t}
}

func (c rgb) mul(k float32) rgb { return rgb{c.r * k, c.g * k, c.b * k} }

func (c rgb) add(d rgb) rgb { return rgb{c.r + d.r, c.g + d.g, c.b + d.b} }

// lum is the Rec. 601 luma, the weighting old video hardware used.
func (c rgb) lum() float32 { return 0.299*c.r + 0.587*c.g + 0.114*c.b }

func (c rgb) rgba() color.RGBA {
	return color.RGBA{clamp8(c.r), clamp8(c.g), clamp8(c.b), 0xff}
}

// dist is a perceptually weighted squared distance, good enough to pick
// the nearest of a few dozen palette entries.
func (c rgb) dist(d rgb) float32 {
	dr, dg, db := c.r-d.r, c.g-d.g, c.b-d.b
	return 2*dr*dr + 4*dg*dg + 3*db*db
}

func clamp8(f float32) uint8 {
	switch {
	case f <= 0:
		return 0
	case f >= 255:
		return 255
	}
	return uint8(f + 0.5)
}

func clamp01(f float32) float32 {
	switch {
	case f < 0:
		return 0
	case f > 1:
		return 1
	}
	return f
}

func smoothstep(e0, e1, x float32) float32 {
	t := clamp01((x - e0) / (e1 - e0))
	return t * t * (3 - 2*t)
}

// stop is one colour of a gradient; at is in [0, 1].
type stop struct {
	at float32
	c  rgb
}

// ramp is a piecewise-linear gradient with stops in increasing order.
type ramp []stop

func (r ramp) at(t float32) rgb {
	if t <= r[0].at {
		return r[0].c
	}
	for i := 1; i < len(r); i++ {
		if t <= r[i].at {
			a, b := r[i-1], r[i]
			return a.c.lerp(b.c, (t-a.at)/(b.at-a.at))
		}
	}
	return r[len(r)-1].c
}

func (r ramp) colors() []rgb {
	out := make([]rgb, len(r))
	for i, s := range r {
		out[i] = s.c
	}
	return out
}

// even builds a ramp with evenly spaced stops.
func even(cs ...uint32) ramp {
	r := make(ramp, len(cs))
	for i, c := range cs {
		r[i] = stop{float32(i) / float32(len(cs)-1), hex(c)}
	}
	return r
}

// buildPalette deduplicates colours and, while there are more than max,
// merges the closest pair. The order of cs fixes the result, so the same
// theme always gives the same palette.
func buildPalette(cs []rgb, max int) []rgb {
	var out []rgb
	for _, c := range cs {
		c = rgb{float32(clamp8(c.r)), float32(clamp8(c.g)), float32(clamp8(c.b))}
		dup := false
		for _, o := range out {
			if o.dist(c) < 2*9 {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	for len(out) > max {
		bi, bj, best := 0, 1, float32(-1)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if d := out[i].dist(out[j]); best < 0 || d < best {
					bi, bj, best = i, j, d
				}
			}
		}
		m := out[bi].lerp(out[bj], 0.5)
		out[bi] = rgb{float32(clamp8(m.r)), float32(clamp8(m.g)), float32(clamp8(m.b))}
		out = append(out[:bj], out[bj+1:]...)
	}
	return out
}
