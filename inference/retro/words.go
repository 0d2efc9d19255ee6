package retro

import (
	"strings"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// canonical is the form of a prompt the backend actually reads: NFC,
// case-folded, lowercased and with whitespace collapsed. Everything the
// backend derives from a prompt goes through it, which is what makes the
// CaseInsensitive promise true: two prompts that differ only in case or
// spacing produce the same bytes, so a gateway may fold them into one
// cache key.
func canonical(s string) string {
	s = norm.NFC.String(s)
	s = cases.Fold().String(s) // a Caser is stateful: one per call
	s = strings.ToLower(s)
	return strings.Join(strings.Fields(s), " ")
}

// words splits a canonical prompt into letter/digit runs.
func words(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// motif is a set of scene elements.
type motif uint16

const (
	mSun motif = 1 << iota
	mMoon
	mStars
	mGrid
	mMountains
	mCity
	mOcean
	mPalms
	mClouds
	mTrees
	mOrbs
)

var motifWords = map[string]motif{
	"sun": mSun, "suns": mSun, "sunset": mSun, "sunsets": mSun, "sunrise": mSun, "dawn": mSun,
	"dusk": mSun, "sunny": mSun, "sunshine": mSun, "sundown": mSun,
	"moon": mMoon, "moons": mMoon, "moonlight": mMoon, "moonlit": mMoon, "lunar": mMoon, "crescent": mMoon,
	"star": mStars, "stars": mStars, "starry": mStars, "starfield": mStars, "space": mStars,
	"galaxy": mStars, "cosmos": mStars, "cosmic": mStars, "constellation": mStars,
	"night": mStars | mMoon, "midnight": mStars | mMoon, "nighttime": mStars | mMoon,
	"grid": mGrid, "grids": mGrid, "wireframe": mGrid, "tron": mGrid, "outrun": mGrid | mSun,
	"mountain": mMountains, "mountains": mMountains, "hill": mMountains, "hills": mMountains,
	"peak": mMountains, "peaks": mMountains, "alps": mMountains, "volcano": mMountains,
	"ridge": mMountains, "canyon": mMountains, "desert": mMountains,
	"city": mCity, "cities": mCity, "skyline": mCity, "skylines": mCity, "building": mCity,
	"buildings": mCity, "tower": mCity, "towers": mCity, "skyscraper": mCity, "skyscrapers": mCity,
	"downtown": mCity, "metropolis": mCity, "urban": mCity, "town": mCity, "cyberpunk": mCity,
	"ocean": mOcean, "oceans": mOcean, "sea": mOcean, "seas": mOcean, "water": mOcean,
	"beach": mOcean | mPalms, "lake": mOcean, "wave": mOcean, "waves": mOcean, "coast": mOcean,
	"shore": mOcean, "bay": mOcean, "harbor": mOcean, "harbour": mOcean, "river": mOcean,
	"palm": mPalms, "palms": mPalms, "tropical": mPalms, "tropics": mPalms, "miami": mPalms | mOcean,
	"island": mPalms | mOcean,
	"cloud":  mClouds, "clouds": mClouds, "cloudy": mClouds,
	"tree": mTrees, "trees": mTrees, "forest": mTrees, "forests": mTrees, "woods": mTrees,
	"pine": mTrees, "pines": mTrees, "jungle": mTrees | mPalms,
	"sphere": mOrbs, "spheres": mOrbs, "orb": mOrbs, "orbs": mOrbs, "ball": mOrbs, "balls": mOrbs,
	"shape": mOrbs, "shapes": mOrbs, "geometry": mOrbs, "planet": mOrbs, "planets": mOrbs,
}

// family is a colour family chosen by a prompt word.
type family uint8

const (
	famDefault family = iota
	famNeon
	famPastel
	famIce
	famFire
	famGreen
	famAmber
	famMono
)

var familyWords = map[string]family{
	"neon": famNeon, "synth": famNeon, "magenta": famNeon, "pink": famNeon,
	"pastel": famPastel, "pastels": famPastel, "soft": famPastel, "dreamy": famPastel,
	"ice": famIce, "icy": famIce, "frozen": famIce, "winter": famIce, "snow": famIce, "blue": famIce,
	"cold": famIce, "arctic": famIce,
	"fire": famFire, "lava": famFire, "red": famFire, "inferno": famFire, "burning": famFire,
	"hell": famFire, "volcanic": famFire,
	"green": famGreen, "matrix": famGreen, "phosphor": famGreen, "terminal": famGreen,
	"amber": famAmber, "sepia": famAmber, "orange": famAmber,
	"mono": famMono, "monochrome": famMono, "grayscale": famMono, "greyscale": famMono,
	"noir": famMono, "gray": famMono, "grey": famMono, "bw": famMono,
}

// lighting is the time of day for scenes that have one.
type lighting uint8

const (
	lightDefault lighting = iota
	lightDay
	lightSunset
	lightNight
)

var lightWords = map[string]lighting{
	"day": lightDay, "daytime": lightDay, "noon": lightDay, "sunny": lightDay, "morning": lightDay,
	"sunset": lightSunset, "sunrise": lightSunset, "dusk": lightSunset, "dawn": lightSunset,
	"evening": lightSunset, "golden": lightSunset, "sundown": lightSunset,
	"night": lightNight, "midnight": lightNight, "nighttime": lightNight, "moonlit": lightNight,
	"moon": lightNight, "stars": lightNight, "starry": lightNight,
}

// styleWords let "auto" pick a style from the prompt.
var styleWords = map[string]string{
	"synthwave": "synthwave", "outrun": "synthwave", "retrowave": "synthwave", "80s": "synthwave",
	"vaporwave": "vaporwave", "vapor": "vaporwave", "aesthetic": "vaporwave", "vaporware": "vaporwave",
	"pixel": "pixel-skyline", "pixels": "pixel-skyline", "pixelart": "pixel-skyline",
	"8bit": "pixel-skyline", "16bit": "pixel-skyline", "sprite": "pixel-skyline",
	"gameboy": "gameboy", "handheld": "gameboy", "dmg": "gameboy",
	"cga": "cga", "dos": "cga", "ibm": "cga", "msdos": "cga",
	"blueprint": "blueprint", "blueprints": "blueprint", "schematic": "blueprint",
	"technical": "blueprint", "cad": "blueprint", "drafting": "blueprint", "plans": "blueprint",
}

// reading is what a prompt (and its negative) asks for.
type reading struct {
	motifs   motif // mentioned in the prompt
	excluded motif // mentioned in the negative prompt
	fam      family
	light    lighting
	style    string // "" when no style word appears
	crt      bool   // scanlines asked for
	pixel    bool   // pixelation asked for
	diffuse  bool   // error diffusion asked for
}

func read(prompt, negative string) reading {
	var r reading
	ws := words(prompt)
	for i, w := range ws {
		r.motifs |= motifWords[w]
		if f, ok := familyWords[w]; ok && r.fam == famDefault {
			r.fam = f
		}
		if l, ok := lightWords[w]; ok && r.light == lightDefault {
			r.light = l
		}
		st := styleWords[w]
		if w == "game" && i+1 < len(ws) && ws[i+1] == "boy" {
			st = "gameboy"
		}
		if w == "bit" && i > 0 && (ws[i-1] == "8" || ws[i-1] == "16") {
			st = "pixel-skyline"
		}
		if st != "" && r.style == "" {
			r.style = st
		}
		switch w {
		case "crt", "scanline", "scanlines", "tv", "arcade", "monitor", "vhs":
			r.crt = true
		case "pixel", "pixels", "pixelated", "pixelate", "pixelart", "8bit", "16bit", "bit", "lowres", "mosaic":
			r.pixel = true
		case "diffusion", "floyd", "steinberg", "dithered", "newspaper", "print":
			r.diffuse = true
		}
	}
	for _, w := range words(negative) {
		r.excluded |= motifWords[w]
	}
	return r
}

// autoStyle picks a style for "auto": an explicit style word wins, then
// the motifs decide; synthwave is the fallback.
func (r reading) autoStyle() string {
	switch {
	case r.style != "":
		return r.style
	case r.fam == famPastel:
		return "vaporwave"
	case r.motifs&mCity != 0 && r.motifs&(mGrid|mSun) == 0:
		return "pixel-skyline"
	case r.motifs&(mTrees|mClouds) != 0 && r.motifs&mGrid == 0:
		return "gameboy"
	}
	return "synthwave"
}
