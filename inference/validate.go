package inference

import (
	"fmt"
	"math"
	"strings"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
)

// validateRequest checks a request from the wire before any backend sees it.
// Every problem is reported at once; the result wraps ErrInvalidArgument.
// Checks that depend on the backend (style, supported sizes, whether the
// reference decodes) are the backend's job.
func validateRequest(m *inferencev1.GenerateRequest) error {
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(m.GetWidth() > 0 && m.GetWidth() <= maxImageSide,
		"width %d not in 1..%d", m.GetWidth(), maxImageSide)
	check(m.GetHeight() > 0 && m.GetHeight() <= maxImageSide,
		"height %d not in 1..%d", m.GetHeight(), maxImageSide)
	check(len(m.GetPrompt()) <= maxPromptBytes,
		"prompt longer than %d bytes", maxPromptBytes)
	check(len(m.GetNegativePrompt()) <= maxPromptBytes,
		"negative prompt longer than %d bytes", maxPromptBytes)
	check(len(m.GetReferenceImage()) <= maxReferenceBytes,
		"reference image larger than %d bytes", maxReferenceBytes)
	// The comparisons are false for NaN, so NaN is refused too.
	check(m.GetStrength() >= 0 && m.GetStrength() <= 1,
		"strength %v not in [0, 1]", m.GetStrength())
	check(!math.IsNaN(float64(m.GetGuidance())) && !math.IsInf(float64(m.GetGuidance()), 0),
		"guidance %v is not a finite number", m.GetGuidance())
	check(m.GetOutputFormat() == "" || m.GetOutputFormat() == "png",
		"output format %q not supported", m.GetOutputFormat())
	check(len(m.GetScheduling().GetFairnessKey()) <= maxFairnessKeyBytes,
		"fairness key longer than %d bytes", maxFairnessKeyBytes)
	check(len(m.GetScheduling().GetPlanClass()) <= maxPlanClassBytes,
		"plan class longer than %d bytes", maxPlanClassBytes)
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidArgument, strings.Join(problems, "; "))
}
