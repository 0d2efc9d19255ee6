package comfyui

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/internal/fakecomfy"
)

func readWorkflow(t testing.TB, name string, checkpoints, loras []string) Workflow {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ParseWorkflow(data, checkpoints, loras)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func newTestBackend(t testing.TB, urls ...string) *Backend {
	t.Helper()
	ckpts := []string{"sd_xl_base_1.0.safetensors"}
	loras := []string{"pixel-art-xl.safetensors"}
	txt := readWorkflow(t, "txt2img.json", ckpts, loras)
	edit := readWorkflow(t, "img2img.json", ckpts, loras)
	var servers []Server
	for _, u := range urls {
		servers = append(servers, Server{URL: u})
	}
	b, err := New(Config{
		Info:         inference.ModelInfo{Name: "sdxl", Version: "1.0", Kind: "neural", Sizes: []int{512, 1024}},
		Servers:      servers,
		Workflows:    map[string]Workflow{"pixel": txt},
		EditWorkflow: &edit,
		DefaultSteps: 4, DefaultGuidance: 6.5,
		Checkpoints: ckpts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// progressLog records progress reports.
type progressLog struct {
	mu        sync.Mutex
	fractions []float32
}

func (p *progressLog) report(f float32, _ string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fractions = append(p.fractions, f)
}

func TestGenerateRunsTheWorkflow(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	b := newTestBackend(t, fake.URL)
	// A prompt that would break out of a JSON string if pasted into one.
	prompt := `a "cat"}, "9": {"class_type": "Evil", "inputs": {}}, "x": {"a": "\u0000`
	var log progressLog
	res, err := b.Generate(t.Context(), inference.Request{
		Prompt: prompt, NegativePrompt: "blurry", Width: 512, Height: 1024, Seed: 1 << 63,
	}, log.report)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(res.Image))
	if err != nil || cfg.Width != 512 || cfg.Height != 1024 || res.Width != 512 || res.Height != 1024 || res.ContentType != "image/png" {
		t.Fatalf("image %dx%d (%v), result %dx%d %s", cfg.Width, cfg.Height, err, res.Width, res.Height, res.ContentType)
	}
	got := fake.LastPrompt()
	if len(got) != 8 {
		t.Errorf("the server received %d nodes, want the template's 8", len(got))
	}
	if got["6"]["text"] != prompt || got["7"]["text"] != "blurry" {
		t.Errorf("texts arrived as %q / %q", got["6"]["text"], got["7"]["text"])
	}
	sampler := got["3"]
	for input, want := range map[string]string{"seed": "9223372036854775808", "steps": "4", "cfg": "6.5"} {
		if n, ok := sampler[input].(json.Number); !ok || string(n) != want {
			t.Errorf("KSampler %s = %#v, want the number %s", input, sampler[input], want)
		}
	}
	if got["4"]["ckpt_name"] != "sd_xl_base_1.0.safetensors" {
		t.Errorf("checkpoint %v", got["4"]["ckpt_name"])
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.fractions) < 4 || log.fractions[len(log.fractions)-1] != 1 {
		t.Errorf("progress %v, want several reports ending at 1", log.fractions)
	}
	for i := 1; i < len(log.fractions); i++ {
		if log.fractions[i] < log.fractions[i-1] {
			t.Errorf("progress went back: %v", log.fractions)
			break
		}
	}
	if c := fake.Counts(); c.Prompts != 1 || c.Views != 1 || c.Rejected != 0 {
		t.Errorf("server counts %+v", c)
	}
}

func TestGenerateRefusesWhatTheModelCannotDo(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	b := newTestBackend(t, fake.URL)
	for name, req := range map[string]inference.Request{
		"size":     {Prompt: "x", Width: 640, Height: 512},
		"style":    {Prompt: "x", Width: 512, Height: 512, Style: "oil"},
		"steps":    {Prompt: "x", Width: 512, Height: 512, Steps: 500},
		"guidance": {Prompt: "x", Width: 512, Height: 512, Guidance: 99},
	} {
		if _, err := b.Generate(t.Context(), req, nil); !errors.Is(err, inference.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if c := fake.Counts(); c.Prompts != 0 {
		t.Errorf("refused requests reached the server: %+v", c)
	}
}

func TestServerRefusalsAreMapped(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	// A template with an input KSampler does not have: the fake (like a
	// server missing a custom node) refuses it, and that is not the
	// caller's fault.
	data, _ := os.ReadFile("testdata/txt2img.json")
	data = bytes.Replace(data, []byte(`"denoise": 1,`), []byte(`"denoise": 1, "eta": 0.5,`), 1)
	w, err := ParseWorkflow(data, []string{"sd_xl_base_1.0.safetensors"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{
		Info:    inference.ModelInfo{Name: "m", Sizes: []int{512}},
		Servers: []Server{{URL: fake.URL}}, Workflows: map[string]Workflow{"auto": w},
		Checkpoints: []string{"sd_xl_base_1.0.safetensors"},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Generate(t.Context(), inference.Request{Prompt: "x", Width: 512, Height: 512}, nil)
	if err == nil || errors.Is(err, inference.ErrInvalidArgument) || !strings.Contains(err.Error(), "prompt_outputs_failed_validation") {
		t.Errorf("unknown input: %v, want a workflow refusal that is not ErrInvalidArgument", err)
	}
	if c := fake.Counts(); c.Rejected != 1 {
		t.Errorf("fake counts %+v", c)
	}
	// A recorded refusal of an out-of-range value is the request's fault.
	rec, _ := os.ReadFile("testdata/prompt_error.json")
	if err := refusal("/prompt", rec); !errors.Is(err, inference.ErrInvalidArgument) {
		t.Errorf("recorded value refusal: %v", err)
	}
}

func TestFakeIsStrict(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	post := func(path, contentType string, body []byte) int {
		res, err := http.Post(fake.URL+path, contentType, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	good := newTestBackend(t, fake.URL)
	wf, p, err := good.params(inference.Request{Prompt: "x", Width: 512, Height: 512})
	if err != nil {
		t.Fatal(err)
	}
	graph := wf.Render(p)
	encode := func(v any) []byte { b, _ := json.Marshal(v); return b }
	if code := post("/prompt", "application/json", encode(map[string]any{"prompt": graph, "client_id": "c"})); code != 200 {
		t.Fatalf("a good prompt got %d", code)
	}
	for name, body := range map[string]any{
		"no client_id":  map[string]any{"prompt": graph},
		"unknown class": map[string]any{"client_id": "c", "prompt": merge(graph, "11", Node{ClassType: "NotANode", Inputs: map[string]any{}})},
		"unknown input": map[string]any{"client_id": "c", "prompt": merge(graph, "5", Node{ClassType: "EmptyLatentImage", Inputs: map[string]any{"width": 512, "height": 512, "batch_size": 1, "depth": 3}})},
		"missing input": map[string]any{"client_id": "c", "prompt": merge(graph, "5", Node{ClassType: "EmptyLatentImage", Inputs: map[string]any{"width": 512, "batch_size": 1}})},
		"string as int": map[string]any{"client_id": "c", "prompt": merge(graph, "5", Node{ClassType: "EmptyLatentImage", Inputs: map[string]any{"width": "512", "height": 512, "batch_size": 1}})},
		"dangling link": map[string]any{"client_id": "c", "prompt": merge(graph, "8", Node{ClassType: "VAEDecode", Inputs: map[string]any{"samples": []any{"99", 0}, "vae": []any{"4", 2}}})},
	} {
		if code := post("/prompt", "application/json", encode(body)); code != http.StatusBadRequest {
			t.Errorf("%s: got %d, want 400", name, code)
		}
	}
	if code := post("/upload/image", "application/json", []byte(`{"image": "x"}`)); code != http.StatusBadRequest {
		t.Errorf("JSON upload got %d", code)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "x.png") // wrong field name
	fw.Write([]byte("png"))
	mw.Close()
	if code := post("/upload/image", mw.FormDataContentType(), buf.Bytes()); code != http.StatusBadRequest {
		t.Errorf("upload without an image field got %d", code)
	}
}

func merge(graph map[string]Node, id string, n Node) map[string]Node {
	out := map[string]Node{}
	for k, v := range graph {
		out[k] = v
	}
	out[id] = n
	return out
}

func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	img.SetNRGBA(0, 0, color.NRGBA{1, 2, 3, 255})
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

func TestEditUploadsTheReferenceThenBlanksIt(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	b := newTestBackend(t, fake.URL)
	ref := testPNG(t, 64, 64)
	res, err := b.Generate(t.Context(), inference.Request{Prompt: "x", Width: 512, Height: 512, Reference: ref, Strength: 0.4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Image) == 0 {
		t.Fatal("no image")
	}
	got := fake.LastPrompt()
	name, _ := got["1"]["image"].(string)
	if !strings.HasPrefix(name, "imagegate-") {
		t.Fatalf("LoadImage got %q, want the uploaded name", got["1"]["image"])
	}
	if n, _ := got["3"]["denoise"].(json.Number); string(n) != "0.4000000059604645" && string(n) != "0.4" {
		t.Errorf("denoise %v, want the strength", got["3"]["denoise"])
	}
	stored, ok := fake.Upload(name)
	if !ok {
		t.Fatal("upload not on the server")
	}
	if bytes.Equal(stored, ref) {
		t.Fatal("the reference stayed in the server's input folder")
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(stored))
	if err != nil || cfg.Width != 1 || cfg.Height != 1 {
		t.Errorf("what replaced the reference is not a 1x1 PNG: %v %+v", err, cfg)
	}
	if c := fake.Counts(); c.Uploads != 2 {
		t.Errorf("%d uploads, want the reference and its blank", c.Uploads)
	}
}

func TestCancelRemovesAndInterrupts(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	fake.Hold()
	t.Cleanup(fake.Release)
	b := newTestBackend(t, fake.URL)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := b.Generate(ctx, inference.Request{Prompt: "x", Width: 512, Height: 512}, nil)
		errc <- err
	}()
	<-fake.Started()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if c := fake.Counts(); c.Interrupts != 1 || c.Deletes != 1 {
		t.Errorf("counts %+v: want one queue delete and one interrupt", c)
	}
}

func TestServerKilledMidJobFailsTheCall(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	fake.Hold()
	b := newTestBackend(t, fake.URL)
	errc := make(chan error, 1)
	go func() {
		_, err := b.Generate(t.Context(), inference.Request{Prompt: "x", Width: 512, Height: 512}, nil)
		errc <- err
	}()
	<-fake.Started()
	fake.Close()
	err := <-errc
	if err == nil || errors.Is(err, inference.ErrInvalidArgument) || errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want a server failure", err)
	}
}

func TestWorkersAreServers(t *testing.T) {
	t.Parallel()
	a, c := fakecomfy.Start(t), fakecomfy.Start(t)
	b := newTestBackend(t, a.URL, c.URL+"/")
	want := []inference.Worker{{ID: WorkerID(a.URL), Slots: 1}, {ID: WorkerID(c.URL), Slots: 1}}
	if diff := cmp.Diff(want, b.Workers()); diff != "" {
		t.Errorf("workers (-want +got):\n%s", diff)
	}
	if _, err := b.GenerateOn(t.Context(), WorkerID(c.URL), inference.Request{Prompt: "x", Width: 512, Height: 512}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if a.Counts().Prompts != 0 || c.Counts().Prompts != 1 {
		t.Errorf("the job did not run on the worker asked for: %+v %+v", a.Counts(), c.Counts())
	}
}

func TestRecordedMessages(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/ws_messages.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kinds []eventKind
	var steps []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ev, err := decodeMessage(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		kinds = append(kinds, ev.kind)
		if ev.kind == eventProgress {
			steps = append(steps, ev.value*100/ev.max)
		}
	}
	want := []eventKind{eventOther, eventOther, eventOther, eventExecuting, eventExecuting, eventProgress, eventProgress,
		eventOther, eventProgress, eventProgress, eventExecuting, eventExecuting, eventExecuted, eventDone, eventDone}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("kinds (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int{25, 50, 75, 100}, steps); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	rec, _ := os.ReadFile("testdata/execution_error.json")
	ev, err := decodeMessage(rec)
	if err != nil || ev.kind != eventFailed || !strings.Contains(ev.detail, "OutOfMemoryError") {
		t.Errorf("execution_error decoded as %+v, %v", ev, err)
	}
	hist, _ := os.ReadFile("testdata/history.json")
	ref, err := decodeHistory(hist, "e3a1c2d4-7f1b-4c1e-9a8d-2b4c6d8e0f12")
	if err != nil || ref != (imageRef{Filename: "imagegate_00001_.png", Type: "output"}) {
		t.Errorf("history: %+v, %v; want the saved output, not the preview", ref, err)
	}
	if _, err := decodeHistory(hist, "other"); err == nil {
		t.Error("a prompt missing from history was accepted")
	}
}

func TestParseWorkflowRefusesBadTemplates(t *testing.T) {
	t.Parallel()
	good, _ := os.ReadFile("testdata/txt2img.json")
	for name, tc := range map[string]struct {
		edit func(string) string
		ckpt []string
		lora []string
		want string
	}{
		"unknown placeholder": {edit: func(s string) string { return strings.Replace(s, "{{steps}}", "{{stepz}}", 1) }, want: "unknown placeholder {{stepz}}"},
		"pasted placeholder":  {edit: func(s string) string { return strings.Replace(s, `"{{prompt}}"`, `"photo of {{prompt}}"`, 1) }, want: "whole value"},
		"no prompt":           {edit: func(s string) string { return strings.Replace(s, `"{{prompt}}"`, `"fixed"`, 1) }, want: "no {{prompt}}"},
		"lora not allowed":    {lora: []string{"other.safetensors"}, want: "LoRA pixel-art-xl.safetensors is not on the model's allow-list"},
		"checkpoint unset":    {want: "allows no checkpoints"},
		"dangling link":       {edit: func(s string) string { return strings.Replace(s, `["10", 1]`, `["42", 1]`, 1) }, want: "missing node 42"},
		"not json":            {edit: func(s string) string { return s[:40] }, want: "not API-format JSON"},
		"ui format":           {edit: func(string) string { return `{"nodes": {"class_type": "", "inputs": null}}` }, want: "no class_type"},
	} {
		text := string(good)
		if tc.edit != nil {
			text = tc.edit(text)
		}
		ckpt := tc.ckpt
		if ckpt == nil && name != "checkpoint unset" {
			ckpt = []string{"a.safetensors"}
		}
		_, err := ParseWorkflow([]byte(text), ckpt, tc.lora)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	data, _ := os.ReadFile("testdata/ws_messages.jsonl")
	for _, line := range bytes.Split(data, []byte("\n")) {
		f.Add(line)
	}
	rec, _ := os.ReadFile("testdata/execution_error.json")
	f.Add(rec)
	f.Add([]byte(`{"type":"progress","data":{"value":1e300,"max":-1}}`))
	f.Add([]byte(`{"type":"executing","data":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := decodeMessage(data)
		if err != nil {
			return
		}
		if ev.kind == eventProgress && (ev.max < 0 || ev.value > ev.max || ev.value < 0) {
			t.Fatalf("progress out of range: %+v", ev)
		}
	})
}

func FuzzParseWorkflow(f *testing.F) {
	for _, name := range []string{"txt2img.json", "img2img.json"} {
		data, _ := os.ReadFile("testdata/" + name)
		f.Add(data)
	}
	f.Add([]byte(`{"1":{"class_type":"X","inputs":{"a":"{{prompt}}","b":"{{seed}}"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseWorkflow(data, []string{"a.safetensors"}, nil)
		if err != nil {
			return
		}
		// Whatever parses renders into JSON a server can decode, with the
		// prompt intact.
		out, err := json.Marshal(w.Render(Params{Prompt: `"}{`, Seed: 1, Checkpoint: "a.safetensors"}))
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(out) {
			t.Fatal("rendered invalid JSON")
		}
	})
}

func TestErrorsNeverQuoteThePrompt(t *testing.T) {
	t.Parallel()
	secret := "a very private prompt"
	body := []byte(`{"error": {"type": "prompt_outputs_failed_validation", "message": "` + secret + `"}, "node_errors": {"6": {"errors": [{"type": "invalid_input_type", "message": "bad value: ` + secret + `"}]}}}`)
	if err := refusal("/prompt", body); err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "invalid_input_type") {
		t.Errorf("refusal: %v", err)
	}
	ev, err := decodeMessage([]byte(`{"type": "execution_error", "data": {"prompt_id": "p", "node_id": "6", "node_type": "CLIPTextEncode", "exception_type": "ValueError", "exception_message": "` + secret + `"}}`))
	if err != nil || strings.Contains(ev.detail, secret) || !strings.Contains(ev.detail, "ValueError in node 6") {
		t.Errorf("execution_error detail %q, %v", ev.detail, err)
	}
}

func TestPreviewsReachThePreviewFunc(t *testing.T) {
	t.Parallel()
	fake := fakecomfy.Start(t)
	fake.Previews = true
	b := newTestBackend(t, fake.URL)
	var mu sync.Mutex
	var previews [][]byte
	_, err := b.GenerateOn(t.Context(), WorkerID(fake.URL), inference.Request{Prompt: "x", Width: 512, Height: 512}, nil,
		func(img []byte, ct string) {
			mu.Lock()
			defer mu.Unlock()
			if ct != "image/png" {
				t.Errorf("content type %q", ct)
			}
			previews = append(previews, img)
		})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(previews) != 4 { // one per sampler step
		t.Fatalf("%d previews, want 4", len(previews))
	}
	if cfg, err := png.DecodeConfig(bytes.NewReader(previews[3])); err != nil || cfg.Width != 8 {
		t.Errorf("preview is not the server's PNG: %+v %v", cfg, err)
	}
	if _, _, ok := decodePreview([]byte{0, 0, 0, 3, 0, 0, 0, 2, 1}); ok {
		t.Error("a TEXT frame was taken for a preview")
	}
}

func FuzzDecodePreview(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 2, 0x89, 'P', 'N', 'G'})
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xd8})
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 10})
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, frame []byte) {
		img, ct, ok := decodePreview(frame)
		if ok && (len(img) != len(frame)-8 || (ct != "image/png" && ct != "image/jpeg")) {
			t.Fatalf("decoded %d bytes as %q from %d", len(img), ct, len(frame))
		}
	})
}
