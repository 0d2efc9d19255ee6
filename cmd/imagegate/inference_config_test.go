package main

import (
	"bytes"
	"image/png"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/internal/fakecomfy"
	"github.com/imagegate/imagegate/internal/fakeopenai"
)

// deployTOML returns the toml block of DEPLOY.md that follows heading, so
// the deployment guide cannot drift from what the binary accepts.
func deployTOML(t *testing.T, heading string) string {
	t.Helper()
	raw, err := os.ReadFile("../../docs/DEPLOY.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(raw), heading)
	if !ok {
		t.Fatalf("docs/DEPLOY.md has no %q", heading)
	}
	_, block, ok := strings.Cut(after, "```toml\n")
	if !ok {
		t.Fatalf("DEPLOY.md's %q has no toml block", heading)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

// tierFromTOML builds a tier from text as --config would, with the
// workflow files of the comfyui tests in dir/workflows.
func tierFromTOML(t *testing.T, text string, env map[string]string) (tierSetup, error) {
	t.Helper()
	dir := t.TempDir()
	wdir := filepath.Join(dir, "workflows")
	os.Mkdir(wdir, 0o700)
	for from, to := range map[string]string{"txt2img.json": "sdxl.json", "img2img.json": "sdxl-edit.json"} {
		data, err := os.ReadFile(filepath.Join("../../inference/comfyui/testdata", from))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(wdir, to), data, 0o600)
	}
	path := filepath.Join(dir, "imagegate.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := decodeConfigFile(path)
	if err != nil {
		return tierSetup{}, err
	}
	return buildTier(fc.Inference, dir, func(k string) string { return env[k] })
}

func TestDeployGuideConfiguresComfyUIAndOpenAI(t *testing.T) {
	t.Parallel()
	comfy1, comfy2 := fakecomfy.Start(t), fakecomfy.Start(t)
	oai := fakeopenai.Start(t)
	text := deployTOML(t, "### Both at once")
	// Point the guide's hosts at the local fakes.
	text = strings.NewReplacer(
		"https://POD_ID-8188.proxy.runpod.net", comfy1.URL,
		"http://10.0.0.7:8188", comfy2.URL,
		"https://api.openai.com/v1", oai.URL+"/v1",
	).Replace(text)
	setup, err := tierFromTOML(t, text, map[string]string{"OPENAI_API_KEY": oai.Key})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	kinds := map[string]string{}
	for _, b := range setup.backends {
		names = append(names, b.Info().Name)
		kinds[b.Info().Name] = b.Info().Kind
	}
	if names[0] != "retro" || !slices.Contains(names, "sdxl") || !slices.Contains(names, "gpt-image") {
		t.Fatalf("models %v: want retro first (the default), sdxl and gpt-image", names)
	}
	if kinds["retro"] != "procedural" || kinds["sdxl"] != "neural" || kinds["gpt-image"] != "neural" {
		t.Errorf("kinds %v", kinds)
	}
	if setup.terms["sdxl"].PriceCredits != 4 || setup.terms["sdxl"].DefaultSteps != 25 {
		t.Errorf("sdxl terms %+v", setup.terms["sdxl"])
	}
	if c := setup.queue.Classes["paid"]; c.Weight != 4 || setup.queue.DefaultClass != "free" {
		t.Errorf("queue %+v", setup.queue)
	}

	// The tier built from that file serves every model.
	tier, err := newTier(inference.ServerConfig{}, setup, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(tier.Handler())
	srv.Config.Protocols = newH2CServer(nil).Protocols
	srv.Start()
	t.Cleanup(srv.Close)
	pool, err := inference.NewPool(inference.PoolConfig{URLs: []string{srv.URL}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	models, err := pool.Models(t.Context())
	if err != nil || len(models) != 3 {
		t.Fatalf("ListModels: %v %v", models, err)
	}
	for _, tc := range []struct {
		model string
		size  int
	}{{"retro", 256}, {"sdxl", 1024}, {"gpt-image", 1024}} {
		res, info, err := pool.Generate(t.Context(), tc.model, inference.Request{Prompt: "a lighthouse", Width: tc.size, Height: tc.size, Seed: 3})
		if err != nil {
			t.Fatalf("%s: %v", tc.model, err)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(res.Image))
		if err != nil || cfg.Width != tc.size || info.Name != tc.model {
			t.Errorf("%s: %dx%d %v, model %q", tc.model, cfg.Width, cfg.Height, err, info.Name)
		}
	}
	if comfy1.Counts().Prompts+comfy2.Counts().Prompts != 1 || oai.Calls() != 1 {
		t.Errorf("backend calls: comfy %d+%d, openai %d", comfy1.Counts().Prompts, comfy2.Counts().Prompts, oai.Calls())
	}
}

func TestTierConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	text := `
[inference]
default_model = "nope"

[inference.backends.gpu]
type = "comfyui"
workflow_dir = "workflows"

[inference.backends.api]
type = "openai"
url = "https://api.example/v1"
api_key_env = "MISSING_KEY"

[inference.backends.odd]
type = "triton"

[[inference.models]]
name = "retro"
backend = "retro"
kind = "neural"

[[inference.models]]
name = "sdxl"
backend = "gpu"
kind = "diffusion"
sizes = [1024]
checkpoints = ["sd_xl_base_1.0.safetensors"]
loras = ["other.safetensors"]
workflows = { auto = "sdxl.json", oil = "missing.json" }

[[inference.models]]
name = "sdxl"
backend = "elsewhere"
kind = "neural"

[inference.classes.paid]
weight = 0
`
	_, err := tierFromTOML(t, text, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`default_model "nope"`,
		"comfyui needs urls",
		"api_key_env MISSING_KEY is not set",
		`type "triton"`,
		"retro is a procedural generator",
		`kind "diffusion"`,
		"not on the model's allow-list",
		"missing.json",
		"a second model with this name",
		`backend "elsewhere"`,
		"weight 0",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	// A typo in a key is refused, as everywhere in the file.
	if _, err := tierFromTOML(t, "[inference]\ndefualt_model = \"retro\"\n", nil); err == nil || !strings.Contains(err.Error(), "unknown keys") {
		t.Errorf("typo: %v", err)
	}
}

func TestNoInferenceSectionIsRetroAlone(t *testing.T) {
	t.Parallel()
	setup, err := tierFromTOML(t, "default_plan = \"free\"\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(setup.backends) != 1 || setup.backends[0].Info().Name != "retro" || setup.backends[0].Info().Kind != "procedural" {
		t.Errorf("backends %v", setup.names())
	}
	if def, err := loadTierConfig(""); err != nil || def.names() != setup.names() {
		t.Errorf("no --config: %v %v", def.names(), err)
	}
}
