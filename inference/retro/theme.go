package retro

// theme names the colours a scene paints with. Every theme fills every
// field, so any style can be drawn in any colour family.
type theme struct {
	sky            ramp // top of the frame (0) to the horizon (1)
	sunTop, sunBot rgb
	glow           rgb
	moon, crater   rgb
	star, starDim  rgb
	cloud, cloudLo rgb
	mountFar       rgb
	mountNear      rgb
	mountRim       rgb
	snow           rgb
	hillFar, hill  rgb
	tree           rgb
	ground         ramp // horizon (0) to the bottom edge (1)
	grid           rgb
	checkA, checkB rgb
	cityFar, city  rgb
	cityRim        rgb
	windows        []rgb
	water          ramp // horizon (0) to the bottom edge (1)
	silhouette     rgb
	accent         []rgb
	// extra colours that only appear mixed (glows) but deserve a palette
	// entry so gradients through them stay smooth.
	extra []rgb
}

// colors lists every colour of the theme in a fixed order, the input to
// buildPalette.
func (t *theme) colors() []rgb {
	cs := t.sky.colors()
	cs = append(cs, t.sunTop, t.sunBot, t.glow, t.moon, t.star, t.grid, t.silhouette,
		t.mountNear, t.mountFar, t.mountRim, t.cityFar, t.city)
	cs = append(cs, t.windows...)
	cs = append(cs, t.ground.colors()...)
	cs = append(cs, t.water.colors()...)
	cs = append(cs, t.checkA, t.checkB, t.cloud, t.cloudLo, t.hill, t.hillFar, t.tree, t.snow,
		t.starDim, t.crater, t.cityRim)
	cs = append(cs, t.accent...)
	return append(cs, t.extra...)
}

// The colour families. Each returns a fresh value, so callers may not
// alter a shared one by accident.

func themeNeon() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x0a0320)}, {0.38, hex(0x1d0845)}, {0.64, hex(0x4b0f6b)},
			{0.84, hex(0xa01f7c)}, {0.95, hex(0xff3f7f)}, {1, hex(0xff8a5c)},
		},
		sunTop: hex(0xfff06a), sunBot: hex(0xff2d95), glow: hex(0xff2d95),
		moon: hex(0xffe9f7), crater: hex(0xd9b8e8),
		star: hex(0xffffff), starDim: hex(0xb9a5ff),
		cloud: hex(0xff6fa8), cloudLo: hex(0x7a2a8a),
		mountFar: hex(0x3d1266), mountNear: hex(0x1a0638), mountRim: hex(0xff4fd8), snow: hex(0xffb3f0),
		hillFar: hex(0x2b0b4f), hill: hex(0x170530), tree: hex(0x07010f),
		ground: ramp{{0, hex(0x1d0845)}, {0.25, hex(0x0e0326)}, {1, hex(0x05010f)}},
		grid:   hex(0xff38d1), checkA: hex(0xff38d1), checkB: hex(0x1d0845),
		cityFar: hex(0x2b0b4f), city: hex(0x120531), cityRim: hex(0xff4fd8),
		windows:    []rgb{hex(0x35f3ff), hex(0xffd319), hex(0xff4fd8)},
		water:      ramp{{0, hex(0x4b0f6b)}, {0.2, hex(0x1d0845)}, {1, hex(0x07021a)}},
		silhouette: hex(0x07010f),
		accent:     []rgb{hex(0x35f3ff), hex(0xff4fd8), hex(0xffd319)},
		extra:      []rgb{hex(0xffae3d), hex(0x2de2e6)},
	}
}

func themePastel() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x5b3fb0)}, {0.4, hex(0xa66fe0)}, {0.72, hex(0xff8fc7)}, {1, hex(0xffd6a5)},
		},
		sunTop: hex(0xfff59e), sunBot: hex(0xff71ce), glow: hex(0xffb0e0),
		moon: hex(0xfffbe8), crater: hex(0xe8d8f0),
		star: hex(0xffffff), starDim: hex(0xd8c8ff),
		cloud: hex(0xffffff), cloudLo: hex(0xffc4e8),
		mountFar: hex(0xb38df0), mountNear: hex(0x8a5cf6), mountRim: hex(0xffd6ff), snow: hex(0xffffff),
		hillFar: hex(0x9a7be8), hill: hex(0x6b4fbf), tree: hex(0x3b1f6b),
		ground: ramp{{0, hex(0xffd6a5)}, {1, hex(0x6b4fbf)}},
		grid:   hex(0x01cdfe), checkA: hex(0xff71ce), checkB: hex(0x01cdfe),
		cityFar: hex(0xb38df0), city: hex(0x6b4fbf), cityRim: hex(0xffd6ff),
		windows:    []rgb{hex(0xfffb96), hex(0x05ffa1), hex(0x01cdfe)},
		water:      ramp{{0, hex(0xb0f0ff)}, {0.3, hex(0x01cdfe)}, {1, hex(0x4a6fd1)}},
		silhouette: hex(0x3b1f6b),
		accent:     []rgb{hex(0x05ffa1), hex(0x01cdfe), hex(0xff71ce), hex(0xfffb96)},
	}
}

func themeIce() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x020b1f)}, {0.4, hex(0x0b2a5b)}, {0.72, hex(0x1f6fa8)},
			{0.92, hex(0x7fd3f0)}, {1, hex(0xe0fbff)},
		},
		sunTop: hex(0xffffff), sunBot: hex(0x7fe3ff), glow: hex(0x5ff3ff),
		moon: hex(0xf0fbff), crater: hex(0xb8d8e8),
		star: hex(0xffffff), starDim: hex(0x8fb8ff),
		cloud: hex(0xd8f4ff), cloudLo: hex(0x5f8fc0),
		mountFar: hex(0x123a6e), mountNear: hex(0x0a1f44), mountRim: hex(0x9ff6ff), snow: hex(0xffffff),
		hillFar: hex(0x174a80), hill: hex(0x0b2a5b), tree: hex(0x010712),
		ground: ramp{{0, hex(0x0b2a5b)}, {0.25, hex(0x03102a)}, {1, hex(0x01050f)}},
		grid:   hex(0x5ff3ff), checkA: hex(0x7fd3f0), checkB: hex(0x0b2a5b),
		cityFar: hex(0x123a6e), city: hex(0x071634), cityRim: hex(0x9ff6ff),
		windows:    []rgb{hex(0xbff8ff), hex(0x5ff3ff), hex(0xffffff)},
		water:      ramp{{0, hex(0x1f6fa8)}, {0.2, hex(0x0b2a5b)}, {1, hex(0x020b1f)}},
		silhouette: hex(0x010712),
		accent:     []rgb{hex(0x9ff6ff), hex(0xffffff), hex(0x5ff3ff)},
	}
}

func themeFire() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x0d0000)}, {0.4, hex(0x3a0505)}, {0.7, hex(0x8a1005)},
			{0.9, hex(0xe0400a)}, {1, hex(0xffb03a)},
		},
		sunTop: hex(0xfff3b0), sunBot: hex(0xff5a1f), glow: hex(0xff5a1f),
		moon: hex(0xffe0c0), crater: hex(0xe0a080),
		star: hex(0xffe0a0), starDim: hex(0xc06030),
		cloud: hex(0xff8a3d), cloudLo: hex(0x6a1005),
		mountFar: hex(0x4a0a02), mountNear: hex(0x2a0500), mountRim: hex(0xff9a3d), snow: hex(0xffd080),
		hillFar: hex(0x3a0702), hill: hex(0x1a0200), tree: hex(0x050000),
		ground: ramp{{0, hex(0x3a0505)}, {0.25, hex(0x1a0200)}, {1, hex(0x060000)}},
		grid:   hex(0xff6a00), checkA: hex(0xff6a00), checkB: hex(0x3a0505),
		cityFar: hex(0x4a0a02), city: hex(0x1c0300), cityRim: hex(0xff9a3d),
		windows:    []rgb{hex(0xffcc33), hex(0xff6a00), hex(0xfff3b0)},
		water:      ramp{{0, hex(0x8a1005)}, {0.2, hex(0x3a0505)}, {1, hex(0x0d0000)}},
		silhouette: hex(0x050000),
		accent:     []rgb{hex(0xffcc33), hex(0xff6a00), hex(0xfff3b0)},
	}
}

// themeNight is the default for pixel skylines: a deep blue city night.
func themeNight() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x070a1f)}, {0.5, hex(0x141a46)}, {0.85, hex(0x2c2466)}, {1, hex(0x5a2f7a)},
		},
		sunTop: hex(0xffe27a), sunBot: hex(0xff8a4d), glow: hex(0x5a2f7a),
		moon: hex(0xf4f1d0), crater: hex(0xc8c4a8),
		star: hex(0xffffff), starDim: hex(0x8f9fff),
		cloud: hex(0x3a3f7a), cloudLo: hex(0x22265a),
		mountFar: hex(0x1d2150), mountNear: hex(0x141638), mountRim: hex(0x4a4f9a), snow: hex(0xc8d0ff),
		hillFar: hex(0x15183d), hill: hex(0x0d0f2a), tree: hex(0x05061a),
		ground: ramp{{0, hex(0x141638)}, {1, hex(0x07081a)}},
		grid:   hex(0x7fe7ff), checkA: hex(0x2c2466), checkB: hex(0x141638),
		cityFar: hex(0x1d2150), city: hex(0x0b0c22), cityRim: hex(0x3a3f8a),
		windows:    []rgb{hex(0xffd35c), hex(0xffd35c), hex(0x7fe7ff), hex(0xff7ab8)},
		water:      ramp{{0, hex(0x1d2150)}, {1, hex(0x080a20)}},
		silhouette: hex(0x05061a),
		accent:     []rgb{hex(0xff3b3b), hex(0x7fe7ff)},
	}
}

func themeSunset() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x1d1546)}, {0.35, hex(0x6b2d7a)}, {0.65, hex(0xd9486b)},
			{0.88, hex(0xff9a4d)}, {1, hex(0xffd27a)},
		},
		sunTop: hex(0xfff2b0), sunBot: hex(0xffb347), glow: hex(0xff9a4d),
		moon: hex(0xfff0d8), crater: hex(0xe0c0a8),
		star: hex(0xfff0d8), starDim: hex(0xc890b0),
		cloud: hex(0xff9a8a), cloudLo: hex(0x8a3a6a),
		mountFar: hex(0x8a3a6a), mountNear: hex(0x4e2a5e), mountRim: hex(0xff9a4d), snow: hex(0xffd0c0),
		hillFar: hex(0x4e2a5e), hill: hex(0x2a1840), tree: hex(0x140a22),
		ground: ramp{{0, hex(0x4e2a5e)}, {1, hex(0x140a22)}},
		grid:   hex(0xffb347), checkA: hex(0xd9486b), checkB: hex(0x4e2a5e),
		cityFar: hex(0x6b2d6a), city: hex(0x2a1840), cityRim: hex(0xff9a4d),
		windows:    []rgb{hex(0xffd35c), hex(0xffe9a8)},
		water:      ramp{{0, hex(0xd9486b)}, {0.3, hex(0x6b2d7a)}, {1, hex(0x1d1546)}},
		silhouette: hex(0x140a22),
		accent:     []rgb{hex(0xff3b3b), hex(0xffd35c)},
	}
}

// themeDay is a plain daylight landscape, the default for gameboy and
// cga scenes before their palettes take over.
func themeDay() *theme {
	return &theme{
		sky: ramp{
			{0, hex(0x2f6fd6)}, {0.6, hex(0x7fb8f0)}, {1, hex(0xd8f0ff)},
		},
		sunTop: hex(0xfffbe0), sunBot: hex(0xffe27a), glow: hex(0xfff4c0),
		moon: hex(0xffffff), crater: hex(0xd0d8e0),
		star: hex(0xffffff), starDim: hex(0xc0d0ff),
		cloud: hex(0xffffff), cloudLo: hex(0xc4d8ee),
		mountFar: hex(0x8aa0c8), mountNear: hex(0x5a6a8a), mountRim: hex(0xb0c0e0), snow: hex(0xffffff),
		hillFar: hex(0x5c9a4a), hill: hex(0x2f6a2a), tree: hex(0x143a1a),
		ground: ramp{{0, hex(0x4f8a3a)}, {1, hex(0x244a1c)}},
		grid:   hex(0xffffff), checkA: hex(0xe8e8e8), checkB: hex(0x6a6a6a),
		cityFar: hex(0x9aaac8), city: hex(0x3b4a6b), cityRim: hex(0xd8e8ff),
		windows:    []rgb{hex(0xcfe8ff), hex(0x2a3550)},
		water:      ramp{{0, hex(0x9fd0f0)}, {0.3, hex(0x3f8ad0)}, {1, hex(0x1a4a90)}},
		silhouette: hex(0x143a1a),
		accent:     []rgb{hex(0xd04040), hex(0xffd35c)},
	}
}

// Fixed hardware palettes.

var (
	// The four greens as the BGB emulator shows a DMG screen: more
	// separated than the raw LCD values, so scenes keep their layers.
	gameboyPalette = []rgb{hex(0x081820), hex(0x346856), hex(0x88c070), hex(0xe0f8d0)}
	// CGA mode 4, palette 1 high intensity and palette 0 high intensity.
	cgaPalette1 = []rgb{hex(0x000000), hex(0x55ffff), hex(0xff55ff), hex(0xffffff)}
	cgaPalette0 = []rgb{hex(0x000000), hex(0x55ff55), hex(0xff5555), hex(0xffff55)}
)

// Monochrome families are gradient maps: the scene is rendered in its
// usual colours, then each pixel's luma picks a colour on the ramp.
var (
	rampGreen = even(0x001400, 0x003b00, 0x00661c, 0x00a63b, 0x00ff41, 0xb6ffc8)
	rampAmber = even(0x140a00, 0x3d2000, 0x7a4000, 0xc26a00, 0xffb000, 0xffe0a0)
	rampMono  = even(0x000000, 0x333333, 0x666666, 0x999999, 0xcccccc, 0xffffff)
	rampGB    = ramp{
		{0, gameboyPalette[0]}, {0.33, gameboyPalette[1]}, {0.66, gameboyPalette[2]}, {1, gameboyPalette[3]},
	}
)

// themeGameboy paints directly in the four greens (and mixes of
// neighbours, which ordered dithering turns into checkerboards), darkest
// to lightest: k, a, b, w.
func themeGameboy(light lighting) *theme {
	k, a, b, w := gameboyPalette[0], gameboyPalette[1], gameboyPalette[2], gameboyPalette[3]
	t := &theme{
		sky:    ramp{{0, b}, {0.55, b.lerp(w, 0.5)}, {1, w}},
		sunTop: w, sunBot: w, glow: w.mul(0.15),
		moon: w, crater: b, star: w, starDim: b,
		cloud: w, cloudLo: b.lerp(w, 0.5),
		mountFar: a.lerp(b, 0.5), mountNear: a, mountRim: b, snow: w,
		hillFar: a, hill: a.lerp(k, 0.5), tree: k,
		ground: ramp{{0, a}, {1, k}},
		grid:   w, checkA: b, checkB: a,
		cityFar: a, city: k, cityRim: a, windows: []rgb{w, b},
		water:      ramp{{0, b.lerp(w, 0.5)}, {0.5, b}, {1, a}},
		silhouette: k, accent: []rgb{w, b},
	}
	switch light {
	case lightNight:
		t.sky = ramp{{0, k}, {0.6, k.lerp(a, 0.5)}, {1, a}}
		t.glow = b.mul(0.1)
		t.mountFar, t.mountNear, t.mountRim = a.lerp(b, 0.3), a, b
		t.cloud, t.cloudLo = a.lerp(b, 0.5), a
		t.hillFar, t.hill = a.lerp(k, 0.5), k
		t.water = ramp{{0, a.lerp(b, 0.4)}, {1, a.lerp(k, 0.5)}}
	case lightSunset:
		t.sky = ramp{{0, a}, {0.5, a.lerp(b, 0.6)}, {0.85, b}, {1, w}}
	}
	return t
}

// themeCGA paints in a CGA palette given as black, two hues and the
// bright colour (cyan, magenta, white or green, red, yellow).
func themeCGA(light lighting, pal []rgb) *theme {
	k, c, m, w := pal[0], pal[1], pal[2], pal[3]
	t := &theme{
		sky:    ramp{{0, c.lerp(k, 0.4)}, {0.6, c}, {1, c.lerp(w, 0.6)}},
		sunTop: w, sunBot: w, glow: w.mul(0.3),
		moon: w, crater: c, star: w, starDim: c,
		cloud: w, cloudLo: c.lerp(w, 0.4),
		mountFar: m.lerp(w, 0.25), mountNear: m, mountRim: w, snow: w,
		hillFar: c.lerp(k, 0.45), hill: c.lerp(k, 0.75), tree: k,
		ground: ramp{{0, c.lerp(k, 0.5)}, {1, k}},
		grid:   m, checkA: m, checkB: c,
		cityFar: m.lerp(k, 0.4), city: m.lerp(k, 0.7), cityRim: m, windows: []rgb{w, c},
		water:      ramp{{0, c.lerp(w, 0.3)}, {0.5, c}, {1, c.lerp(k, 0.5)}},
		silhouette: k, accent: []rgb{m, w},
	}
	switch light {
	case lightNight:
		t.sky = ramp{{0, k}, {0.7, k.lerp(m, 0.25)}, {1, m.lerp(k, 0.4)}}
		t.glow = m.mul(0.2)
		t.mountFar, t.mountNear = m.lerp(k, 0.4), m.lerp(k, 0.65)
		t.cloud, t.cloudLo = c.lerp(k, 0.4), c.lerp(k, 0.65)
		t.hillFar, t.hill = c.lerp(k, 0.65), c.lerp(k, 0.85)
		t.water = ramp{{0, c.lerp(k, 0.5)}, {1, k}}
	case lightSunset:
		t.sky = ramp{{0, k.lerp(m, 0.4)}, {0.5, m}, {0.85, m.lerp(w, 0.5)}, {1, w}}
		t.glow = w.mul(0.3)
		t.mountFar, t.mountNear = m.lerp(k, 0.35), m.lerp(k, 0.6)
	}
	return t
}
