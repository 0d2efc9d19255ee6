package comfyui

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// message is one JSON text frame from ComfyUI's websocket. Binary frames
// (previews) are not decoded.
type message struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// event is what a generation needs from a message.
type event struct {
	kind     eventKind
	promptID string
	// progress: value of max steps of the node sampling now.
	value, max int
	node       string
	// failure: what ComfyUI said went wrong.
	detail string
}

type eventKind int

const (
	eventOther     eventKind = iota
	eventProgress            // a sampler step finished
	eventExecuting           // a node started
	eventExecuted            // a node produced output
	eventDone                // the prompt finished (executing with node null, or execution_success)
	eventFailed              // execution_error
	eventInterrupted
)

// decodeMessage decodes one text frame. Unknown types are eventOther, not
// errors: ComfyUI and its custom nodes add message types freely.
func decodeMessage(data []byte) (event, error) {
	var m message
	if err := json.Unmarshal(data, &m); err != nil {
		return event{}, fmt.Errorf("comfyui: websocket message: %w", err)
	}
	var d struct {
		PromptID      string  `json:"prompt_id"`
		Node          *string `json:"node"`
		Value         float64 `json:"value"`
		Max           float64 `json:"max"`
		NodeType      string  `json:"node_type"`
		NodeID        string  `json:"node_id"`
		ExceptionType string  `json:"exception_type"`
	}
	switch m.Type {
	case "progress", "executing", "executed", "execution_success", "execution_error", "execution_interrupted":
		if len(m.Data) == 0 {
			return event{}, fmt.Errorf("comfyui: %s message without data", m.Type)
		}
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return event{}, fmt.Errorf("comfyui: %s message: %w", m.Type, err)
		}
	default:
		return event{kind: eventOther}, nil
	}
	ev := event{promptID: d.PromptID}
	if d.Node != nil {
		ev.node = *d.Node
	}
	switch m.Type {
	case "progress":
		ev.kind = eventProgress
		if d.Max >= 1 && d.Value >= 0 && d.Value <= d.Max && d.Max < 1e9 {
			ev.value, ev.max = int(d.Value), int(d.Max)
		}
	case "executing":
		ev.kind = eventExecuting
		if d.Node == nil {
			ev.kind = eventDone
		}
	case "executed":
		ev.kind = eventExecuted
	case "execution_success":
		ev.kind = eventDone
	case "execution_error":
		ev.kind = eventFailed
		// The exception message is left out: it may quote inputs, the
		// prompt among them, and errors are logged.
		ev.detail = fmt.Sprintf("%s in node %s (%s)", d.ExceptionType, d.NodeID, d.NodeType)
	case "execution_interrupted":
		ev.kind = eventInterrupted
	}
	return ev, nil
}

// Binary websocket frames start with a big-endian event type; a
// PREVIEW_IMAGE frame then has a big-endian image format and the encoded
// image (server.py, BinaryEventTypes).
const (
	binaryPreviewImage = 1
	previewFormatJPEG  = 1
	previewFormatPNG   = 2
)

// decodePreview reads a PREVIEW_IMAGE frame. Other binary frames (text
// from custom nodes, unencoded previews) are not previews.
func decodePreview(frame []byte) (img []byte, contentType string, ok bool) {
	if len(frame) <= 8 || binary.BigEndian.Uint32(frame) != binaryPreviewImage {
		return nil, "", false
	}
	switch binary.BigEndian.Uint32(frame[4:]) {
	case previewFormatJPEG:
		contentType = "image/jpeg"
	case previewFormatPNG:
		contentType = "image/png"
	default:
		return nil, "", false
	}
	return bytes.Clone(frame[8:]), contentType, true
}

// imageRef names one output image, as /history and executed messages give
// it.
type imageRef struct {
	Filename  string `json:"filename"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
}

// historyEntry is one prompt's record in GET /history/{prompt_id}.
type historyEntry struct {
	Outputs map[string]struct {
		Images []imageRef `json:"images"`
	} `json:"outputs"`
	Status struct {
		StatusStr string `json:"status_str"`
		Completed bool   `json:"completed"`
	} `json:"status"`
}

// decodeHistory returns the first saved output image of promptID, in node
// ID order. Previews (type "temp") are skipped.
func decodeHistory(data []byte, promptID string) (imageRef, error) {
	var h map[string]historyEntry
	if err := json.Unmarshal(data, &h); err != nil {
		return imageRef{}, fmt.Errorf("comfyui: history: %w", err)
	}
	entry, ok := h[promptID]
	if !ok {
		return imageRef{}, fmt.Errorf("comfyui: history has no prompt %s", promptID)
	}
	if entry.Status.StatusStr != "" && entry.Status.StatusStr != "success" {
		return imageRef{}, fmt.Errorf("comfyui: prompt %s ended with status %q", promptID, entry.Status.StatusStr)
	}
	var ids []string
	for id := range entry.Outputs {
		ids = append(ids, id)
	}
	sortNodeIDs(ids)
	for _, id := range ids {
		for _, img := range entry.Outputs[id].Images {
			if img.Type == "output" && img.Filename != "" {
				return img, nil
			}
		}
	}
	return imageRef{}, fmt.Errorf("comfyui: prompt %s saved no image (does the workflow end in SaveImage?)", promptID)
}

// sortNodeIDs sorts numerically where IDs are numbers ("9" before "10").
func sortNodeIDs(ids []string) {
	less := func(a, b string) bool {
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	}
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && less(ids[j], ids[j-1]); j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
