package comfyui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Placeholders a template may use, each as the whole value of a node input,
// and the JSON type the value gets.
var placeholders = map[string]string{
	"prompt":          "string",
	"negative_prompt": "string",
	"width":           "int",
	"height":          "int",
	"seed":            "int",
	"steps":           "int",
	"guidance":        "float",
	"denoise":         "float",
	"image":           "string", // the uploaded reference's name
	"checkpoint":      "string",
}

// Loader inputs whose values must be on the model's allow-lists.
var (
	checkpointInputs = map[string]string{"CheckpointLoaderSimple": "ckpt_name", "CheckpointLoader": "ckpt_name", "UNETLoader": "unet_name"}
	loraInputs       = map[string]string{"LoraLoader": "lora_name", "LoraLoaderModelOnly": "lora_name"}
)

// Node is one node of an API-format workflow.
type Node struct {
	ClassType string         `json:"class_type"`
	Inputs    map[string]any `json:"inputs"`
	Meta      map[string]any `json:"_meta,omitempty"`
}

// Workflow is a decoded API-format template: nodes by ID.
type Workflow struct {
	nodes map[string]Node
	// uses is the set of placeholders the template contains.
	uses map[string]bool
}

// Uses reports whether the template contains the placeholder {{name}}.
func (w Workflow) Uses(name string) bool { return w.uses[name] }

// ParseWorkflow decodes an API-format workflow template and checks it: every
// node has a class_type and inputs, links point at existing nodes, every
// placeholder is known, {{prompt}} and {{seed}} appear, and checkpoint and
// LoRA loaders name only files on the allow-lists (an empty list allows
// any). Every problem is reported at once.
func ParseWorkflow(data []byte, checkpoints, loras []string) (Workflow, error) {
	var nodes map[string]Node
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&nodes); err != nil {
		return Workflow{}, fmt.Errorf("comfyui: workflow is not API-format JSON: %w", err)
	}
	if dec.More() {
		return Workflow{}, errors.New("comfyui: workflow has data after the JSON object")
	}
	if len(nodes) == 0 {
		return Workflow{}, errors.New("comfyui: workflow has no nodes (export it with \"Save (API format)\")")
	}
	w := Workflow{nodes: nodes, uses: map[string]bool{}}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(nodes)) {
		n := nodes[id]
		if n.ClassType == "" {
			errs = append(errs, fmt.Errorf("comfyui: node %s has no class_type", id))
		}
		if n.Inputs == nil {
			errs = append(errs, fmt.Errorf("comfyui: node %s has no inputs", id))
		}
		for _, input := range slices.Sorted(maps.Keys(n.Inputs)) {
			v := n.Inputs[input]
			if name, ok := placeholderName(v); ok {
				if _, known := placeholders[name]; !known {
					errs = append(errs, fmt.Errorf("comfyui: node %s input %s: unknown placeholder {{%s}} (known: %s)", id, input, name, knownPlaceholders()))
				}
				w.uses[name] = true
				continue
			}
			if link, ok := v.([]any); ok && len(link) == 2 {
				if from, ok := link[0].(string); ok {
					if _, exists := nodes[from]; !exists {
						errs = append(errs, fmt.Errorf("comfyui: node %s input %s links to missing node %s", id, input, from))
					}
				}
			}
			if s, ok := v.(string); ok && strings.Contains(s, "{{") {
				errs = append(errs, fmt.Errorf("comfyui: node %s input %s: a placeholder must be the whole value, not part of %q", id, input, s))
			}
		}
		if in, ok := checkpointInputs[n.ClassType]; ok {
			errs = append(errs, checkAllowed(id, in, n.Inputs[in], "checkpoint", checkpoints))
		}
		if in, ok := loraInputs[n.ClassType]; ok {
			errs = append(errs, checkAllowed(id, in, n.Inputs[in], "LoRA", loras))
		}
	}
	for _, need := range []string{"prompt", "seed"} {
		if !w.uses[need] {
			errs = append(errs, fmt.Errorf("comfyui: workflow has no {{%s}} placeholder", need))
		}
	}
	if w.uses["checkpoint"] && len(checkpoints) == 0 {
		errs = append(errs, errors.New("comfyui: workflow uses {{checkpoint}} but the model allows no checkpoints"))
	}
	return w, errors.Join(errs...)
}

func checkAllowed(id, input string, v any, what string, allowed []string) error {
	if len(allowed) == 0 {
		return nil
	}
	if name, ok := placeholderName(v); ok && name == "checkpoint" {
		return nil // filled from the allow-list
	}
	s, ok := v.(string)
	if !ok || !slices.Contains(allowed, s) {
		return fmt.Errorf("comfyui: node %s input %s: %s %v is not on the model's allow-list %v", id, input, what, v, allowed)
	}
	return nil
}

func placeholderName(v any) (string, bool) {
	s, ok := v.(string)
	if !ok || !strings.HasPrefix(s, "{{") || !strings.HasSuffix(s, "}}") || len(s) < 5 {
		return "", false
	}
	return strings.TrimSpace(s[2 : len(s)-2]), true
}

func knownPlaceholders() string {
	names := slices.Collect(maps.Keys(placeholders))
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Params are the values a generation sets.
type Params struct {
	Prompt, NegativePrompt string
	Width, Height          int
	Seed                   uint64
	Steps                  int
	Guidance               float64
	Denoise                float64
	Image                  string
	Checkpoint             string
}

// Render returns a copy of the graph with every placeholder set from p,
// ready to marshal as the "prompt" of POST /prompt. The template itself is
// not changed.
func (w Workflow) Render(p Params) map[string]Node {
	values := map[string]any{
		"prompt": p.Prompt, "negative_prompt": p.NegativePrompt,
		"width": p.Width, "height": p.Height, "seed": p.Seed, "steps": p.Steps,
		"guidance": p.Guidance, "denoise": p.Denoise, "image": p.Image, "checkpoint": p.Checkpoint,
	}
	out := make(map[string]Node, len(w.nodes))
	for id, n := range w.nodes {
		inputs := make(map[string]any, len(n.Inputs))
		for k, v := range n.Inputs {
			if name, ok := placeholderName(v); ok {
				v = values[name]
			}
			inputs[k] = v
		}
		out[id] = Node{ClassType: n.ClassType, Inputs: inputs, Meta: n.Meta}
	}
	return out
}
