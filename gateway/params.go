package gateway

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/imagegate/imagegate/cache"
)

// Limits of the public contract (DESIGN.md, external contract v1).
const (
	maxImages     = 4
	maxSeed       = math.MaxUint32
	defaultSteps  = 30
	maxSteps      = 150
	defaultGuide  = 7.5
	maxGuidance   = 30
	defaultFormat = "url"
	// defaultStrength is how far an edit moves from its reference when the
	// request does not say.
	defaultStrength = 0.6
)

// params is one validated generation request, shared by the JSON and the
// multipart routes. All strings are owned copies.
type params struct {
	Prompt         string
	NegativePrompt string
	N              int
	Width, Height  int
	Format         string // "url" or "b64_json"
	Seed           *uint32
	Style          string
	Model          model
	Steps          int
	Guidance       float32
	Private        bool
	// Image-to-image only.
	Reference       []byte
	ReferenceSHA256 string
	Strength        float32
}

// parseSize accepts "WxH" with W and H among the contract's sizes.
func parseSize(s string) (int, int, error) {
	w, h, ok := strings.Cut(s, "x")
	if !ok {
		return 0, 0, fmt.Errorf("size %q must look like 512x512", s)
	}
	wi, err1 := strconv.Atoi(w)
	hi, err2 := strconv.Atoi(h)
	if err1 != nil || err2 != nil || wi <= 0 || hi <= 0 {
		return 0, 0, fmt.Errorf("size %q must look like 512x512", s)
	}
	return wi, hi, nil
}

// raw is what either route decoded, before validation.
type raw struct {
	Prompt         string
	NegativePrompt string
	N              *int
	Size           string
	Format         string
	Seed           *int64
	Style          string
	Model          string
	Steps          *int
	Guidance       *float64
	Private        bool
	Strength       *float64
}

// validate turns a decoded request into params, naming the offending field
// in every error.
func (g *Gateway) validate(r raw) (params, error) {
	var p params
	var err error
	if p.Prompt, err = g.promptField("prompt", r.Prompt); err != nil {
		return p, err
	}
	if p.Prompt == "" {
		return p, badRequest("invalid_prompt", "prompt: required")
	}
	if p.NegativePrompt, err = g.promptField("negative_prompt", r.NegativePrompt); err != nil {
		return p, err
	}

	p.N = 1
	if r.N != nil {
		if *r.N < 1 || *r.N > maxImages {
			return p, badRequest("invalid_n", fmt.Sprintf("n: must be between 1 and %d", maxImages))
		}
		p.N = *r.N
	}

	m, err := g.catalog.lookup(r.Model, g.cfg.DefaultModel)
	if err != nil {
		return p, err
	}
	p.Model = m

	size := r.Size
	if size == "" {
		size = g.cfg.DefaultSize
	}
	w, h, err := parseSize(size)
	if err != nil || !slices.Contains(m.Sizes, w) || !slices.Contains(m.Sizes, h) || w != h {
		return p, badRequest("invalid_size", fmt.Sprintf("size: %q is not supported by %s; use one of %s", size, m.Name, m.sizeList()))
	}
	p.Width, p.Height = w, h

	switch r.Format {
	case "", "url":
		p.Format = defaultFormat
	case "b64_json":
		p.Format = r.Format
	default:
		return p, badRequest("invalid_response_format", fmt.Sprintf("response_format: %q must be url or b64_json", r.Format))
	}

	if r.Seed != nil {
		if *r.Seed < 0 || *r.Seed > maxSeed {
			return p, badRequest("invalid_seed", fmt.Sprintf("seed: must be between 0 and %d", uint32(maxSeed)))
		}
		s := uint32(*r.Seed)
		p.Seed = &s
	}

	p.Style = strings.ToLower(strings.TrimSpace(r.Style))
	if p.Style == "" {
		p.Style = m.DefaultStyle
	}
	if p.Style != m.DefaultStyle && !slices.Contains(m.Styles, p.Style) {
		return p, badRequest("invalid_style", fmt.Sprintf("style: %q is not one of %s", r.Style, strings.Join(m.Styles, ", ")))
	}

	p.Steps = defaultSteps
	if r.Steps != nil {
		if *r.Steps < 1 || *r.Steps > maxSteps {
			return p, badRequest("invalid_steps", fmt.Sprintf("steps: must be between 1 and %d", maxSteps))
		}
		p.Steps = *r.Steps
	}
	p.Guidance = defaultGuide
	if r.Guidance != nil {
		if math.IsNaN(*r.Guidance) || *r.Guidance < 0 || *r.Guidance > maxGuidance {
			return p, badRequest("invalid_guidance", fmt.Sprintf("guidance: must be between 0 and %d", maxGuidance))
		}
		p.Guidance = float32(*r.Guidance)
	}
	p.Strength = defaultStrength
	if r.Strength != nil {
		if math.IsNaN(*r.Strength) || *r.Strength < 0 || *r.Strength > 1 {
			return p, badRequest("invalid_strength", "strength: must be between 0 and 1")
		}
		p.Strength = float32(*r.Strength)
	}
	p.Private = r.Private
	return p, nil
}

// promptField checks one prompt field and returns its canonical form
// (cache.CanonicalPrompt without case folding): the text the content key
// hashes, the moderator reads and the backend is sent, so what was
// validated is exactly what is used. It refuses invalid UTF-8 (which
// canonicalisation would silently turn into U+FFFD) and text with nothing
// visible in it: only NUL, other control or format characters and spaces.
// Control characters among visible text are kept (and reach the
// moderator, which must still see and report such a prompt). An empty
// result means the field was blank.
func (g *Gateway) promptField(name, s string) (string, error) {
	if len(s) > g.cfg.MaxPromptBytes {
		return "", badRequest("prompt_too_long", fmt.Sprintf("%s: longer than %d bytes", name, g.cfg.MaxPromptBytes))
	}
	if !utf8.ValidString(s) {
		return "", badRequest("invalid_prompt", name+": not valid UTF-8")
	}
	c := cache.CanonicalPrompt(s, false)
	if c != "" && !strings.ContainsFunc(c, visible) {
		return "", badRequest("invalid_prompt", name+": has no visible text (only control, format or space characters)")
	}
	return c, nil
}

// visible reports whether r shows as text: not a control (Cc), format
// (Cf: zero-width spaces and joiners, BOM) or space character.
func visible(r rune) bool {
	return !unicode.In(r, unicode.Cc, unicode.Cf) && !unicode.IsSpace(r)
}

var errNoModels = errors.New("gateway: no model catalogue yet")
