package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/comfyui"
	"github.com/imagegate/imagegate/inference/openaiimg"
	"github.com/imagegate/imagegate/inference/retro"
	"github.com/imagegate/imagegate/inference/sched"
)

// inferenceFileConfig is the [inference] section of --config: the model
// catalogue, the backends that serve it, and the tier's queue.
type inferenceFileConfig struct {
	// DefaultModel serves requests that name none; empty means "retro".
	DefaultModel string                         `toml:"default_model"`
	Backends     map[string]backendFileConfig   `toml:"backends"`
	Models       []modelFileConfig              `toml:"models"`
	Queue        queueFileConfig                `toml:"queue"`
	Classes      map[string]planClassFileConfig `toml:"classes"`
}

// backendFileConfig is one [inference.backends.NAME]: where a kind of
// backend runs. Secrets are never in the file: api_key_env and token_env
// name environment variables that hold them.
type backendFileConfig struct {
	// Type is "comfyui" or "openai".
	Type string `toml:"type"`
	// URLs are the ComfyUI servers (comfyui).
	URLs []string `toml:"urls"`
	// URL is the API root, e.g. https://api.openai.com/v1 (openai).
	URL string `toml:"url"`
	// Slots per server (comfyui, default 1) or for the endpoint (openai,
	// default 4).
	Slots int `toml:"slots"`
	// APIKeyEnv names the variable holding the API key (openai).
	APIKeyEnv string `toml:"api_key_env"`
	// TokenEnv names the variable holding a bearer token for a proxy in
	// front of ComfyUI (comfyui, optional).
	TokenEnv string `toml:"token_env"`
	// WorkflowDir is where the models' workflow files are (comfyui);
	// relative to the config file.
	WorkflowDir string `toml:"workflow_dir"`
	// ResponseFormat is "b64_json" or "url" (openai; leave empty for
	// gpt-image models).
	ResponseFormat string `toml:"response_format"`
}

// modelFileConfig is one [[inference.models]] entry.
type modelFileConfig struct {
	Name    string `toml:"name"`
	Backend string `toml:"backend"` // a backends key, or "retro"
	// Kind is "neural" or "procedural"; retro is procedural and may not
	// say otherwise.
	Kind            string  `toml:"kind"`
	Version         string  `toml:"version"`
	Description     string  `toml:"description"`
	Sizes           []int   `toml:"sizes"`
	DefaultSteps    int     `toml:"default_steps"`
	DefaultGuidance float64 `toml:"default_guidance"`
	PriceCredits    int64   `toml:"price_credits"`
	// Checkpoints and LoRAs the model's workflows may load (comfyui).
	Checkpoints []string `toml:"checkpoints"`
	LoRAs       []string `toml:"loras"`
	// Workflows by style: API-format JSON files in the backend's
	// workflow_dir (comfyui).
	Workflows    map[string]string `toml:"workflows"`
	DefaultStyle string            `toml:"default_style"`
	EditWorkflow string            `toml:"edit_workflow"`
	// RemoteModel is the provider's model name (openai).
	RemoteModel string `toml:"remote_model"`
}

// queueFileConfig is [inference.queue].
type queueFileConfig struct {
	MaxQueue     int      `toml:"max_queue"`
	MaxWait      duration `toml:"max_wait"`
	MaxAttempts  int      `toml:"max_attempts"`
	StallTimeout duration `toml:"stall_timeout"`
	DefaultClass string   `toml:"default_class"`
}

// planClassFileConfig is one [inference.classes.NAME].
type planClassFileConfig struct {
	Weight     int `toml:"weight"`
	MaxQueued  int `toml:"max_queued"`
	MaxRunning int `toml:"max_running"`
}

// tierSetup is the catalogue resolved into what the server is built from.
type tierSetup struct {
	backends []inference.Backend // the default model first
	terms    map[string]inference.ModelTerms
	queue    inference.QueueConfig
}

// defaultTier is the embedded default: retro alone.
func defaultTier() tierSetup {
	return tierSetup{backends: []inference.Backend{retro.New()}}
}

// loadTierConfig reads the [inference] section of the config file at path
// (empty: the embedded default).
func loadTierConfig(path string) (tierSetup, error) {
	if path == "" {
		return defaultTier(), nil
	}
	fc, err := decodeConfigFile(path)
	if err != nil {
		return tierSetup{}, err
	}
	setup, err := buildTier(fc.Inference, filepath.Dir(path), os.Getenv)
	if err != nil {
		return tierSetup{}, fmt.Errorf("--config %s: %w", path, err)
	}
	return setup, nil
}

// buildTier resolves the catalogue: it reads workflow files relative to
// dir, looks secrets up with getenv, builds every backend and reports every
// problem at once.
func buildTier(ic inferenceFileConfig, dir string, getenv func(string) string) (tierSetup, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	setup := tierSetup{terms: map[string]inference.ModelTerms{}}
	seen := map[string]bool{}
	for name, bc := range ic.Backends {
		if name == "retro" {
			fail("inference.backends.retro: the name is taken by the built-in procedural backend")
		}
		switch bc.Type {
		case "comfyui":
			if len(bc.URLs) == 0 {
				fail("inference.backends.%s: comfyui needs urls", name)
			}
		case "openai":
			if bc.URL == "" {
				fail("inference.backends.%s: openai needs url", name)
			}
			if bc.APIKeyEnv != "" && getenv(bc.APIKeyEnv) == "" {
				fail("inference.backends.%s: api_key_env %s is not set", name, bc.APIKeyEnv)
			}
		default:
			fail("inference.backends.%s: type %q: want comfyui or openai", name, bc.Type)
		}
		if bc.TokenEnv != "" && getenv(bc.TokenEnv) == "" {
			fail("inference.backends.%s: token_env %s is not set", name, bc.TokenEnv)
		}
	}
	for i, mc := range ic.Models {
		where := fmt.Sprintf("inference.models[%d] (%s)", i, mc.Name)
		if mc.Name == "" {
			fail("inference.models[%d]: no name", i)
			continue
		}
		if seen[mc.Name] {
			fail("%s: a second model with this name", where)
		}
		seen[mc.Name] = true
		if mc.Kind != "neural" && mc.Kind != "procedural" {
			fail("%s: kind %q: want \"neural\" or \"procedural\"", where, mc.Kind)
		}
		if mc.PriceCredits < 0 || mc.DefaultSteps < 0 || mc.DefaultGuidance < 0 {
			fail("%s: negative price or default", where)
		}
		setup.terms[mc.Name] = inference.ModelTerms{PriceCredits: mc.PriceCredits, DefaultSteps: mc.DefaultSteps, DefaultGuidance: float32(mc.DefaultGuidance)}
		if mc.Backend == "retro" {
			if mc.Name != "retro" {
				fail("%s: the retro backend serves the model named retro", where)
			}
			if mc.Kind != "procedural" {
				fail("%s: retro is a procedural generator, not a neural model: kind must be \"procedural\"", where)
			}
			continue
		}
		bc, ok := ic.Backends[mc.Backend]
		if !ok {
			fail("%s: backend %q is not in inference.backends", where, mc.Backend)
			continue
		}
		info := inference.ModelInfo{Name: mc.Name, Version: mc.Version, Kind: mc.Kind, Description: mc.Description, Sizes: mc.Sizes}
		b, err := buildBackend(bc, mc, info, dir, getenv)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		setup.backends = append(setup.backends, b)
	}
	// retro is always there, listed or not: the embedded default, and a
	// model that works without a GPU.
	setup.backends = append([]inference.Backend{retro.New()}, setup.backends...)
	if ic.DefaultModel != "" {
		i := slices.IndexFunc(setup.backends, func(b inference.Backend) bool { return b.Info().Name == ic.DefaultModel })
		if i < 0 {
			fail("inference.default_model %q is not a configured model", ic.DefaultModel)
		} else {
			setup.backends[0], setup.backends[i] = setup.backends[i], setup.backends[0]
		}
	}
	q := ic.Queue
	setup.queue = inference.QueueConfig{
		MaxQueue: q.MaxQueue, MaxWait: time.Duration(q.MaxWait), MaxAttempts: q.MaxAttempts,
		StallTimeout: time.Duration(q.StallTimeout), DefaultClass: q.DefaultClass,
	}
	if len(ic.Classes) > 0 {
		setup.queue.Classes = map[string]sched.Class{}
		for name, c := range ic.Classes {
			setup.queue.Classes[name] = sched.Class{Weight: c.Weight, MaxQueued: c.MaxQueued, MaxRunning: c.MaxRunning}
		}
	}
	if err := (sched.Config{Classes: setup.queue.Classes, DefaultClass: q.DefaultClass, MaxQueue: q.MaxQueue,
		MaxWait: setup.queue.MaxWait, MaxAttempts: q.MaxAttempts, StallTimeout: setup.queue.StallTimeout}).ValidateQueue(); err != nil {
		errs = append(errs, fmt.Errorf("inference.queue/classes: %w", err))
	}
	return setup, errors.Join(errs...)
}

// buildBackend makes the backend mc runs on.
func buildBackend(bc backendFileConfig, mc modelFileConfig, info inference.ModelInfo, dir string, getenv func(string) string) (inference.Backend, error) {
	switch bc.Type {
	case "comfyui":
		if mc.RemoteModel != "" {
			return nil, errors.New("remote_model is for openai backends")
		}
		wdir := bc.WorkflowDir
		if !filepath.IsAbs(wdir) {
			wdir = filepath.Join(dir, wdir)
		}
		read := func(file string) (comfyui.Workflow, error) {
			if file == "" || strings.Contains(file, "..") {
				return comfyui.Workflow{}, fmt.Errorf("workflow file %q: want a name inside workflow_dir", file)
			}
			data, err := os.ReadFile(filepath.Join(wdir, file))
			if err != nil {
				return comfyui.Workflow{}, fmt.Errorf("workflow: %w", err)
			}
			w, err := comfyui.ParseWorkflow(data, mc.Checkpoints, mc.LoRAs)
			if err != nil {
				return comfyui.Workflow{}, fmt.Errorf("workflow %s: %w", file, err)
			}
			return w, nil
		}
		var errs []error
		workflows := map[string]comfyui.Workflow{}
		for style, file := range mc.Workflows {
			w, err := read(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("style %s: %w", style, err))
				continue
			}
			workflows[style] = w
		}
		var edit *comfyui.Workflow
		if mc.EditWorkflow != "" {
			w, err := read(mc.EditWorkflow)
			if err != nil {
				errs = append(errs, fmt.Errorf("edit_workflow: %w", err))
			} else {
				edit = &w
			}
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		var token string
		if bc.TokenEnv != "" {
			token = getenv(bc.TokenEnv)
		}
		servers := make([]comfyui.Server, 0, len(bc.URLs))
		for _, u := range bc.URLs {
			servers = append(servers, comfyui.Server{URL: u, Slots: bc.Slots, Token: token})
		}
		return comfyui.New(comfyui.Config{
			Info: info, Servers: servers, Workflows: workflows, DefaultStyle: mc.DefaultStyle, EditWorkflow: edit,
			DefaultSteps: mc.DefaultSteps, DefaultGuidance: mc.DefaultGuidance, Checkpoints: mc.Checkpoints,
		})
	case "openai":
		if len(mc.Workflows) > 0 || mc.EditWorkflow != "" || len(mc.Checkpoints) > 0 || len(mc.LoRAs) > 0 {
			return nil, errors.New("workflows, checkpoints and loras are for comfyui backends")
		}
		var key string
		if bc.APIKeyEnv != "" {
			key = getenv(bc.APIKeyEnv)
		}
		return openaiimg.New(openaiimg.Config{
			Info: info, BaseURL: bc.URL, APIKey: key, Model: mc.RemoteModel,
			ResponseFormat: bc.ResponseFormat, Slots: bc.Slots,
		})
	}
	return nil, fmt.Errorf("backend type %q", bc.Type)
}
