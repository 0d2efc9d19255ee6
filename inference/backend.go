package inference

import "context"

// Request is one generation as a backend sees it. It carries parameters and
// transient inputs only; nothing in it identifies who asked (promise X1).
type Request struct {
	Prompt         string
	NegativePrompt string
	Width, Height  int
	Seed           uint64
	Steps          int
	Guidance       float32
	Style          string
	// Reference is the encoded reference image for image-to-image, or nil.
	// Backends must not keep it after Generate returns (promise C2).
	Reference []byte
	// Strength is how far an image-to-image output moves from the
	// reference, in [0, 1].
	Strength float32
	// Scheduling is how the tier queues the request. The Pool sends it;
	// the server reads it and never passes it to backends, which see it
	// zero.
	Scheduling Scheduling
}

// Scheduling is what the tier's fair queueing needs, and nothing that names
// anyone (promise X1).
type Scheduling struct {
	// FairnessKey is opaque to the tier, at most 32 bytes: make it with
	// FairnessKey, never from an identifier itself.
	FairnessKey []byte
	// PlanClass names a plan class the tier is configured with; unknown
	// or empty means the tier's default class.
	PlanClass string
}

// Result is a finished image.
type Result struct {
	Image       []byte
	ContentType string
	Width       int
	Height      int
}

// ModelInfo describes a backend to clients.
type ModelInfo struct {
	Name    string
	Version string
	// Kind is "procedural" or "neural"; listings must show it.
	Kind            string
	Description     string
	Styles          []string
	Sizes           []int
	SupportsEdits   bool
	CaseInsensitive bool
	// PriceCredits is the catalogue's price of one image as the tier
	// publishes it (0: none; the gateway's own prices apply). Backends
	// leave it zero: the tier's ModelTerms set it.
	PriceCredits int64
}

// ModelTerms are what the tier's model catalogue adds to a backend's own
// description, published by ListModels.
type ModelTerms struct {
	// PriceCredits is the price of one image (0: none set; the gateway's
	// own prices apply).
	PriceCredits int64
	// DefaultSteps and DefaultGuidance are what requests leaving them zero
	// get.
	DefaultSteps    int
	DefaultGuidance float32
}

// ProgressFunc receives progress in [0, 1] while a backend works. It may be
// nil.
type ProgressFunc func(fraction float32, stage string)

// PreviewFunc receives a backend's preview of the image in progress,
// encoded (contentType says how). It may be nil. The bytes belong to the
// callee once passed.
type PreviewFunc func(image []byte, contentType string)

// Backend renders images. Implementations must be safe for concurrent use,
// must honour ctx cancellation, and must return errors wrapping
// ErrInvalidArgument for requests they cannot serve (unknown style, size or
// an undecodable reference).
type Backend interface {
	Info() ModelInfo
	Generate(ctx context.Context, req Request, progress ProgressFunc) (Result, error)
}

// Worker is one place a backend's generations run (a GPU server, say),
// which the tier's scheduler gives Slots jobs at a time. Backends sharing a
// worker ID share the worker.
type Worker struct {
	ID    string
	Slots int
}
