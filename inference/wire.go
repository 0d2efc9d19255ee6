package inference

import (
	"fmt"
	"math"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

// Limits on one request, enforced by the server. The gateway enforces
// tighter ones; these protect the tier from any caller holding the token.
const (
	maxImageSide      = 4096
	maxPromptBytes    = 4000
	maxReferenceBytes = 20 << 20
	// A fairness key is a digest; a plan class a short configured name.
	maxFairnessKeyBytes = 32
	maxPlanClassBytes   = 64
	// maxRequestBytes bounds one request message on the wire: a maximal
	// reference plus generous room for every other field. Larger messages
	// are refused before they are decoded.
	maxRequestBytes = maxReferenceBytes + 64<<10
)

// requestToProto builds the wire request. It fails, wrapping
// ErrInvalidArgument, only for numbers the wire cannot carry; the server
// checks everything else.
func requestToProto(model string, r Request) (*inferencev1.GenerateRequest, error) {
	width, err := toUint32("width", r.Width)
	if err != nil {
		return nil, err
	}
	height, err := toUint32("height", r.Height)
	if err != nil {
		return nil, err
	}
	steps, err := toUint32("steps", r.Steps)
	if err != nil {
		return nil, err
	}
	return &inferencev1.GenerateRequest{
		Model:          model,
		Prompt:         r.Prompt,
		NegativePrompt: r.NegativePrompt,
		Width:          width,
		Height:         height,
		Seed:           r.Seed,
		Steps:          steps,
		Guidance:       r.Guidance,
		Style:          r.Style,
		OutputFormat:   "png",
		ReferenceImage: r.Reference,
		Strength:       r.Strength,
		Scheduling: &inferencev1.Scheduling{
			FairnessKey: r.Scheduling.FairnessKey,
			PlanClass:   r.Scheduling.PlanClass,
		},
	}, nil
}

func toUint32(field string, v int) (uint32, error) {
	if v < 0 || uint64(v) > math.MaxUint32 {
		return 0, fmt.Errorf("%w: %s %d out of range", ErrInvalidArgument, field, v)
	}
	return uint32(v), nil
}

// requestFromProto converts a request the server has already validated.
// Scheduling stays zero: backends never see it.
func requestFromProto(m *inferencev1.GenerateRequest) Request {
	return Request{
		Prompt:         m.GetPrompt(),
		NegativePrompt: m.GetNegativePrompt(),
		Width:          int(m.GetWidth()),
		Height:         int(m.GetHeight()),
		Seed:           m.GetSeed(),
		Steps:          int(m.GetSteps()),
		Guidance:       m.GetGuidance(),
		Style:          m.GetStyle(),
		Reference:      m.GetReferenceImage(),
		Strength:       m.GetStrength(),
	}
}

func resultToProto(r Result, info ModelInfo, seed uint64) *inferencev1.GenerateResponse {
	return &inferencev1.GenerateResponse{
		Image:        r.Image,
		ContentType:  r.ContentType,
		Width:        clampUint32(r.Width),
		Height:       clampUint32(r.Height),
		Model:        info.Name,
		ModelVersion: info.Version,
		Seed:         seed,
	}
}

func resultFromProto(m *inferencev1.GenerateResponse) (Result, ModelInfo) {
	return Result{
			Image:       m.GetImage(),
			ContentType: m.GetContentType(),
			Width:       int(m.GetWidth()),
			Height:      int(m.GetHeight()),
		}, ModelInfo{
			Name:    m.GetModel(),
			Version: m.GetModelVersion(),
		}
}

func modelToProto(info ModelInfo, terms ModelTerms) *inferencev1.Model {
	sizes := make([]uint32, 0, len(info.Sizes))
	for _, s := range info.Sizes {
		sizes = append(sizes, clampUint32(s))
	}
	return &inferencev1.Model{
		Name:            info.Name,
		Version:         info.Version,
		Kind:            info.Kind,
		Description:     info.Description,
		Styles:          info.Styles,
		Sizes:           sizes,
		SupportsEdits:   info.SupportsEdits,
		CaseInsensitive: info.CaseInsensitive,
		PriceCredits:    terms.PriceCredits,
		DefaultSteps:    clampUint32(terms.DefaultSteps),
		DefaultGuidance: terms.DefaultGuidance,
	}
}

func modelFromProto(m *inferencev1.Model) ModelInfo {
	sizes := make([]int, 0, len(m.GetSizes()))
	for _, s := range m.GetSizes() {
		sizes = append(sizes, int(s))
	}
	return ModelInfo{
		Name:            m.GetName(),
		Version:         m.GetVersion(),
		Kind:            m.GetKind(),
		Description:     m.GetDescription(),
		Styles:          m.GetStyles(),
		Sizes:           sizes,
		SupportsEdits:   m.GetSupportsEdits(),
		CaseInsensitive: m.GetCaseInsensitive(),
		PriceCredits:    m.GetPriceCredits(),
	}
}

func clampUint32(v int) uint32 {
	switch {
	case v < 0:
		return 0
	case uint64(v) > math.MaxUint32:
		return math.MaxUint32
	default:
		return uint32(v)
	}
}
