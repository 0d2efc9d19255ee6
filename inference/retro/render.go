package retro

import (
	"context"
	"image"
	"math/rand/v2"
)

// styleSpec is how one style composes a text-to-image picture.
type styleSpec struct {
	// defaults are the motifs every picture of the style has unless the
	// negative prompt removes them; prompt motifs are added to them.
	defaults motif
	paint    func(s *scene, ctx context.Context, cv *canvas) error
	// pixel is the logical pixel size for a w×h output (1 = full
	// resolution).
	pixel func(w, h int) int
	// daylight styles hide stars and moon at sunset and by day.
	daylight bool
	bayer    int     // 4 or 8
	jitter   float32 // dither spread for colour palettes, channel units
}

func pixel128(w, h int) int { return max(1, min(w, h)/128) }
func pixel256(w, h int) int { return max(1, min(w, h)/256) }
func fullRes(int, int) int  { return 1 }

var styleSpecs = map[string]styleSpec{
	"synthwave": {
		defaults: mSun | mGrid | mMountains | mStars,
		paint:    (*scene).synthwave, pixel: fullRes, bayer: 8, jitter: 44,
	},
	"vaporwave": {
		defaults: mSun | mOrbs | mPalms,
		paint:    (*scene).vaporwave, pixel: fullRes, bayer: 8, jitter: 40,
	},
	"pixel-skyline": {
		defaults: mCity | mStars | mMoon,
		paint:    (*scene).pixelSkyline, pixel: pixel128, daylight: true, bayer: 4, jitter: 26,
	},
	"gameboy": {
		defaults: mSun | mClouds | mMountains | mTrees,
		paint:    (*scene).landscape, pixel: pixel128, daylight: true, bayer: 4, jitter: 64,
	},
	"cga": {
		defaults: mSun | mClouds | mMountains | mTrees,
		paint:    (*scene).landscape, pixel: pixel256, daylight: true, bayer: 4, jitter: 150,
	},
	"blueprint": {
		defaults: mSun | mGrid | mMountains | mCity,
		paint:    (*scene).blueprint, pixel: fullRes, bayer: 8, jitter: 24,
	},
}

// styleNames is the public list, "auto" first (the gateway's default).
var styleNames = []string{"auto", "synthwave", "vaporwave", "pixel-skyline", "gameboy", "cga", "blueprint"}

// pickTheme chooses the colours a scene is painted with, before any
// gradient map or hardware palette.
func pickTheme(style string, r reading) *theme {
	switch r.fam {
	case famNeon:
		return themeNeon()
	case famPastel:
		return themePastel()
	case famIce:
		return themeIce()
	case famFire:
		return themeFire()
	}
	switch style {
	case "synthwave":
		return themeNeon()
	case "vaporwave":
		return themePastel()
	}
	switch r.light {
	case lightNight:
		return themeNight()
	case lightSunset:
		return themeSunset()
	case lightDay:
		return themeDay()
	}
	if style == "pixel-skyline" {
		return themeNight()
	}
	return themeDay()
}

// monoRamp is the gradient map a family asks for, or nil.
func monoRamp(f family) ramp {
	switch f {
	case famGreen:
		return rampGreen
	case famAmber:
		return rampAmber
	case famMono:
		return rampMono
	}
	return nil
}

// render paints a text-to-image request into a paletted image of the
// requested size.
func render(ctx context.Context, p *params, rep *reporter) (*image.Paletted, error) {
	spec := styleSpecs[p.style]
	px := spec.pixel(p.width, p.height)
	lw, lh := p.width/px, p.height/px

	r := p.reading
	motifs, light := compose(p.style, r)
	cgaPal := cgaPalette1
	if r.fam == famFire || r.fam == famAmber {
		cgaPal = cgaPalette0
	}
	var th *theme
	switch p.style {
	case "gameboy":
		th = themeGameboy(light)
	case "cga":
		th = themeCGA(light, cgaPal)
	default:
		th = pickTheme(p.style, reading{fam: r.fam, light: light})
	}
	s := &scene{
		w: lw, h: lh, fw: float32(lw), fh: float32(lh),
		u:      float32(min(lw, lh)) / 512,
		th:     th,
		rng:    rand.New(rand.NewPCG(p.seed1, p.seed2)),
		m:      motifs,
		light:  light,
		detail: p.detail,
		salt:   p.seed1 ^ p.seed2,
	}
	cv := newCanvas(lw, lh)
	cv.hard = px > 1
	rep.report(0.1, "layout")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := spec.paint(s, ctx, cv); err != nil {
		return nil, err
	}
	rep.report(0.6, "render")
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var pal []rgb
	jitter := spec.jitter
	switch {
	case p.style == "gameboy":
		pal = gameboyPalette
	case p.style == "cga":
		pal = cgaPal
	case monoRamp(r.fam) != nil:
		mr := monoRamp(r.fam)
		gradientMap(cv, mr, 8, 240)
		pal = mr.colors()
		jitter = 255 / float32(len(pal)-1)
	case p.style == "blueprint":
		pal = blueprintPalette()
	default:
		pal = buildPalette(th.colors(), 16)
	}
	img, err := ordered(ctx, cv, newQuantizer(pal), jitter*p.spread, spec.bayer)
	if err != nil {
		return nil, err
	}
	img = upscale(img, px)
	if r.crt {
		scanlines(img, max(2, min(p.width, p.height)/128), 0.35)
	}
	rep.report(0.8, "dither")
	return img, nil
}

// compose decides what a picture shows. Prompt motifs add to the style's
// scenery; the negative prompt takes away. A moonlit or night prompt
// sets the sun unless it asks for one, and daylight styles hide stars
// and moon by day.
func compose(style string, r reading) (motif, lighting) {
	spec := styleSpecs[style]
	motifs := spec.defaults | r.motifs
	light := r.light
	if r.motifs&mSun == 0 && (r.motifs&mMoon != 0 || light == lightNight) {
		motifs &^= mSun
	}
	if light == lightDefault && style == "pixel-skyline" && r.motifs&mSun != 0 && r.motifs&mMoon == 0 {
		light = lightSunset
	}
	if (light == lightSunset || light == lightDay) && spec.daylight {
		motifs &^= (mStars | mMoon) &^ r.motifs
	}
	if light == lightNight {
		motifs |= mStars | mMoon
	}
	return motifs &^ r.excluded, light
}
