package retro

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"image"
	"math"
	"slices"

	"github.com/imagegate/imagegate/inference"
)

// Backend is the retro generator. It holds no per-request state and is
// safe for concurrent use.
type Backend struct {
	enc *encoder
}

var _ inference.Backend = (*Backend)(nil)

// New returns a ready Backend.
func New() *Backend { return &Backend{enc: newEncoder()} }

// Info describes the backend. It never claims to be a model: Kind is
// "procedural".
func (b *Backend) Info() inference.ModelInfo {
	return inference.ModelInfo{
		Name:    "retro",
		Version: "1",
		Kind:    "procedural",
		Description: "Deterministic procedural retro-art generator (synthwave grids, pixel skylines, " +
			"handheld and CGA palettes, blueprints, dithering). It is not a neural model: prompt words " +
			"pick motifs and palettes, the seed varies the layout, and the same request always gives " +
			"the same PNG. Edits apply retro treatments (palette quantization, ordered and " +
			"error-diffusion dithering, pixelation, scanlines) to the reference image.",
		Styles:          slices.Clone(styleNames),
		Sizes:           []int{256, 512, 1024},
		SupportsEdits:   true,
		CaseInsensitive: true,
	}
}

// maxReferencePixels bounds the decoded size of a reference image.
const maxReferencePixels = 40_000_000

// params is a validated request in the form the renderer reads.
type params struct {
	width, height int
	style         string // resolved: never "auto"
	reading       reading
	seed1, seed2  uint64
	detail        float32 // star counts, ridge octaves
	spread        float32 // multiplies dither amplitude
	strength      float32
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("retro: "+format+": %w", append(args, inference.ErrInvalidArgument)...)
}

func parse(req inference.Request) (*params, error) {
	p := &params{width: req.Width, height: req.Height, strength: req.Strength}
	for _, d := range [2]int{req.Width, req.Height} {
		if d != 256 && d != 512 && d != 1024 {
			return nil, invalid("size %dx%d: each side must be 256, 512 or 1024", req.Width, req.Height)
		}
	}
	style := req.Style
	if style == "" {
		style = "auto"
	}
	if !slices.Contains(styleNames, style) {
		return nil, invalid("unknown style %q", req.Style)
	}
	if s := float64(req.Strength); math.IsNaN(s) || s < 0 || s > 1 {
		return nil, invalid("strength must be in [0, 1]")
	}
	if g := float64(req.Guidance); math.IsNaN(g) || math.IsInf(g, 0) || g < 0 {
		return nil, invalid("guidance must be a non-negative number")
	}
	if req.Steps < 0 {
		return nil, invalid("steps must not be negative")
	}
	prompt, negative := canonical(req.Prompt), canonical(req.NegativePrompt)
	p.reading = read(prompt, negative)
	p.style = style
	if style == "auto" {
		p.style = p.reading.autoStyle()
	}

	steps := req.Steps
	if steps == 0 {
		steps = 30
	}
	p.detail = 0.6 + float32(min(steps, 150))/75
	p.spread = min(max(0.8+req.Guidance/37.5, 0.5), 1.6)

	// The layout PRNG is seeded from everything that defines the request,
	// in a length-prefixed encoding so fields cannot run into each other.
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	field("retro/1")
	field(prompt)
	field(negative)
	field(style)
	var nums [8 * 6]byte
	binary.BigEndian.PutUint64(nums[0:], req.Seed)
	binary.BigEndian.PutUint64(nums[8:], uint64(req.Width))
	binary.BigEndian.PutUint64(nums[16:], uint64(req.Height))
	binary.BigEndian.PutUint64(nums[24:], uint64(req.Steps))
	binary.BigEndian.PutUint64(nums[32:], uint64(math.Float32bits(req.Guidance)))
	binary.BigEndian.PutUint64(nums[40:], uint64(math.Float32bits(req.Strength)))
	h.Write(nums[:])
	sum := h.Sum(nil)
	p.seed1 = binary.BigEndian.Uint64(sum[0:])
	p.seed2 = binary.BigEndian.Uint64(sum[8:])
	return p, nil
}

// reporter forwards progress, dropping anything that would not move
// forward so callers always see increasing fractions.
type reporter struct {
	fn   inference.ProgressFunc
	last float32
}

func (r *reporter) report(f float32, stage string) {
	if r.fn == nil || f <= r.last {
		return
	}
	r.last = f
	r.fn(f, stage)
}

// Generate renders req. With a Reference it treats that image; without,
// it paints a scene from the prompt. Requests it cannot serve return an
// error wrapping inference.ErrInvalidArgument; a cancelled ctx returns
// ctx.Err(). The reference is not retained after Generate returns.
func (b *Backend) Generate(ctx context.Context, req inference.Request, progress inference.ProgressFunc) (inference.Result, error) {
	p, err := parse(req)
	if err != nil {
		return inference.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return inference.Result{}, err
	}
	rep := &reporter{fn: progress}
	var img image.Image
	if len(req.Reference) > 0 {
		img, err = edit(ctx, p, req.Reference, rep)
	} else {
		img, err = render(ctx, p, rep)
	}
	if err != nil {
		return inference.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return inference.Result{}, err
	}
	rep.report(0.85, "encode")
	data, err := b.enc.encode(img)
	if err != nil {
		return inference.Result{}, fmt.Errorf("retro: encode: %w", err)
	}
	rep.report(1, "encode")
	return inference.Result{Image: data, ContentType: "image/png", Width: p.width, Height: p.height}, nil
}
