// Package fakecomfy is a ComfyUI server for tests, written from ComfyUI's
// documented API (server.py routes, websocket_api_example.py): no GPU can
// run here, so this stands in for one, and it checks requests at least as
// strictly as the real server.
//
// It knows a handful of core node classes with their inputs, types and
// ranges, and refuses a prompt with an unknown class_type, an unknown or
// missing input, a value of the wrong type or out of range, a link to a
// missing node, no output node, or no client_id (the real server accepts a
// prompt without one but then cannot route its messages to the caller's
// websocket, so a client that omits it is broken). Uploads must be
// multipart/form-data with a file in the "image" field.
//
// Prompts run one at a time, like ComfyUI, producing a PNG of the latent's
// size whose colour derives from the seed and the positive text, and sending
// the documented websocket messages: status, execution_start, executing per
// node, progress per sampler step, executed for SaveImage, executing with a
// null node, execution_success.
package fakecomfy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

// input describes one node input: its ComfyUI type and limits.
type input struct {
	typ      string // INT, FLOAT, STRING, or a link type (MODEL, CLIP, ...), or "enum"
	min, max float64
	choices  []string
	optional bool
}

// nodeClass is one known node class.
type nodeClass struct {
	inputs map[string]input
	output bool // an output node (SaveImage)
}

func classes(checkpoints, loras []string) map[string]nodeClass {
	link := func(t string) input { return input{typ: t} }
	return map[string]nodeClass{
		"CheckpointLoaderSimple": {inputs: map[string]input{"ckpt_name": {typ: "enum", choices: checkpoints}}},
		"LoraLoader": {inputs: map[string]input{
			"model": link("MODEL"), "clip": link("CLIP"), "lora_name": {typ: "enum", choices: loras},
			"strength_model": {typ: "FLOAT", min: -100, max: 100}, "strength_clip": {typ: "FLOAT", min: -100, max: 100},
		}},
		"CLIPTextEncode":   {inputs: map[string]input{"text": {typ: "STRING"}, "clip": link("CLIP")}},
		"EmptyLatentImage": {inputs: map[string]input{"width": {typ: "INT", min: 16, max: 16384}, "height": {typ: "INT", min: 16, max: 16384}, "batch_size": {typ: "INT", min: 1, max: 4096}}},
		"KSampler": {inputs: map[string]input{
			"model": link("MODEL"), "seed": {typ: "INT", min: 0, max: 0xffffffffffffffff},
			"steps": {typ: "INT", min: 1, max: 10000}, "cfg": {typ: "FLOAT", min: 0, max: 100},
			"sampler_name": {typ: "enum", choices: []string{"euler", "euler_ancestral", "dpmpp_2m", "dpmpp_sde", "ddim"}},
			"scheduler":    {typ: "enum", choices: []string{"normal", "karras", "exponential", "simple"}},
			"positive":     link("CONDITIONING"), "negative": link("CONDITIONING"), "latent_image": link("LATENT"),
			"denoise": {typ: "FLOAT", min: 0, max: 1},
		}},
		"VAEDecode": {inputs: map[string]input{"samples": link("LATENT"), "vae": link("VAE")}},
		"VAEEncode": {inputs: map[string]input{"pixels": link("IMAGE"), "vae": link("VAE")}},
		"LoadImage": {inputs: map[string]input{"image": {typ: "upload"}}},
		"SaveImage": {inputs: map[string]input{"images": link("IMAGE"), "filename_prefix": {typ: "STRING", optional: true}}, output: true},
	}
}

// Server is a running fake ComfyUI.
type Server struct {
	*httptest.Server
	// Checkpoints and LoRAs the server has.
	Checkpoints, LoRAs []string
	// Previews makes the sampler send a PNG preview frame per step, as
	// ComfyUI does when started with --preview-method.
	Previews bool

	mu       sync.Mutex
	sockets  map[string][]*websocket.Conn // by clientId
	pending  []*prompt
	running  *prompt
	history  map[string]json.RawMessage
	outputs  map[string][]byte // by filename
	uploads  map[string][]byte // by name
	number   int
	wake     chan struct{}
	counts   Counts
	last     map[string]map[string]any
	hold     chan struct{} // when set, each prompt blocks before sampling until it closes
	started  chan string   // receives prompt IDs as they start sampling
	closed   chan struct{}
	closeOne sync.Once
}

// Counts are what the server saw.
type Counts struct {
	Prompts, Rejected, Uploads, Interrupts, Deletes, Views, Executed int
}

type prompt struct {
	id        string
	clientID  string
	graph     map[string]map[string]any
	interrupt chan struct{}
	once      sync.Once
}

// Start runs a fake ComfyUI on loopback until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		Checkpoints: []string{"sd_xl_base_1.0.safetensors", "flux1-schnell.safetensors"},
		LoRAs:       []string{"pixel-art-xl.safetensors"},
		sockets:     map[string][]*websocket.Conn{},
		history:     map[string]json.RawMessage{},
		outputs:     map[string][]byte{},
		uploads:     map[string][]byte{},
		wake:        make(chan struct{}, 1),
		closed:      make(chan struct{}),
		started:     make(chan string, 100),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("POST /prompt", s.handlePrompt)
	mux.HandleFunc("GET /history/{id}", s.handleHistory)
	mux.HandleFunc("GET /view", s.handleView)
	mux.HandleFunc("POST /upload/image", s.handleUpload)
	mux.HandleFunc("POST /interrupt", s.handleInterrupt)
	mux.HandleFunc("POST /queue", s.handleQueue)
	s.Server = httptest.NewServer(mux)
	go s.execute()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server, dropping every connection as a killed process
// would.
func (s *Server) Close() {
	s.closeOne.Do(func() {
		close(s.closed)
		s.Server.CloseClientConnections()
		s.Server.Close()
	})
}

// Hold makes every prompt wait before sampling until Release. Started
// receives each prompt's ID as it reaches that point.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = make(chan struct{})
}

// Release lets held prompts go on.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Started receives the ID of each prompt as it starts executing.
func (s *Server) Started() <-chan string { return s.started }

// Counts returns what the server has seen so far.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// LastPrompt returns the inputs of every node of the last prompt accepted,
// by node ID, numbers as json.Number.
func (s *Server) LastPrompt() map[string]map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Upload returns the stored bytes of an uploaded input.
func (s *Server) Upload(name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.uploads[name]
	return b, ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	clientID := r.URL.Query().Get("clientId")
	if clientID == "" {
		clientID = fmt.Sprintf("sid-%d", len(s.sockets))
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.sockets[clientID] = append(s.sockets[clientID], c)
	queued := len(s.pending)
	s.mu.Unlock()
	s.send(clientID, "status", map[string]any{"status": map[string]any{"exec_info": map[string]any{"queue_remaining": queued}}, "sid": clientID})
	// Read until the client goes away, as the real server does.
	ctx := c.CloseRead(context.Background())
	select {
	case <-ctx.Done():
	case <-s.closed:
	}
	s.mu.Lock()
	s.sockets[clientID] = slices.DeleteFunc(s.sockets[clientID], func(x *websocket.Conn) bool { return x == c })
	s.mu.Unlock()
	c.CloseNow()
}

// send writes one JSON message to the client's sockets.
func (s *Server) send(clientID, typ string, data any) {
	msg, _ := json.Marshal(map[string]any{"type": typ, "data": data})
	s.mu.Lock()
	conns := slices.Clone(s.sockets[clientID])
	s.mu.Unlock()
	for _, c := range conns {
		c.Write(context.Background(), websocket.MessageText, msg)
	}
}

// errorBody is ComfyUI's 400 answer to a prompt it cannot run.
func errorBody(typ, message, details string, nodeErrors map[string]any) map[string]any {
	if nodeErrors == nil {
		nodeErrors = map[string]any{}
	}
	return map[string]any{
		"error":       map[string]any{"type": typ, "message": message, "details": details, "extra_info": map[string]any{}},
		"node_errors": nodeErrors,
	}
}

func (s *Server) reject(w http.ResponseWriter, body map[string]any) {
	s.mu.Lock()
	s.counts.Rejected++
	s.mu.Unlock()
	writeJSON(w, http.StatusBadRequest, body)
}

func (s *Server) handlePrompt(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Prompt   map[string]json.RawMessage `json:"prompt"`
		ClientID *string                    `json:"client_id"`
	}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil || req.Prompt == nil {
		s.reject(w, errorBody("invalid_prompt", "Invalid prompt", "no prompt object in the body", nil))
		return
	}
	if req.ClientID == nil || *req.ClientID == "" {
		s.reject(w, errorBody("missing_client_id", "client_id is required", "without it no websocket receives this prompt's messages", nil))
		return
	}
	graph, body := s.validate(req.Prompt)
	if body != nil {
		s.reject(w, body)
		return
	}
	s.mu.Lock()
	s.number++
	p := &prompt{id: fmt.Sprintf("p-%04d", s.number), clientID: *req.ClientID, graph: graph, interrupt: make(chan struct{})}
	s.pending = append(s.pending, p)
	s.last = graph
	s.counts.Prompts++
	n := s.number
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	writeJSON(w, http.StatusOK, map[string]any{"prompt_id": p.id, "number": n, "node_errors": map[string]any{}})
}

// validate checks a prompt as ComfyUI's validate_prompt does, more strictly
// for unknown inputs.
func (s *Server) validate(raw map[string]json.RawMessage) (map[string]map[string]any, map[string]any) {
	s.mu.Lock()
	uploads := slices.Collect(maps.Keys(s.uploads))
	s.mu.Unlock()
	known := classes(s.Checkpoints, s.LoRAs)
	graph := map[string]map[string]any{}
	types := map[string]string{}
	hasOutput := false
	for id, rawNode := range raw {
		var n struct {
			ClassType string         `json:"class_type"`
			Inputs    map[string]any `json:"inputs"`
		}
		dec := json.NewDecoder(bytes.NewReader(rawNode))
		dec.UseNumber()
		if err := dec.Decode(&n); err != nil || n.ClassType == "" {
			return nil, errorBody("invalid_prompt", "Cannot execute because a node is missing the class_type property.", "Node ID '#"+id+"'", nil)
		}
		cls, ok := known[n.ClassType]
		if !ok {
			return nil, errorBody("invalid_prompt", fmt.Sprintf("Cannot execute because node %s does not exist.", n.ClassType), "Node ID '#"+id+"'", nil)
		}
		hasOutput = hasOutput || cls.output
		types[id] = n.ClassType
		graph[id] = n.Inputs
	}
	if !hasOutput {
		return nil, errorBody("prompt_no_outputs", "Prompt has no outputs", "", nil)
	}
	nodeErrors := map[string]any{}
	for id, inputs := range graph {
		cls := known[types[id]]
		var errs []map[string]any
		fail := func(typ, msg, name string) {
			errs = append(errs, map[string]any{"type": typ, "message": msg, "details": name, "extra_info": map[string]any{"input_name": name}})
		}
		for name := range inputs {
			if _, ok := cls.inputs[name]; !ok {
				fail("unknown_input", "Unknown input", name)
			}
		}
		for name, spec := range cls.inputs {
			v, present := inputs[name]
			if !present {
				if !spec.optional {
					fail("required_input_missing", "Required input is missing", name)
				}
				continue
			}
			if link, ok := v.([]any); ok {
				if len(link) != 2 {
					fail("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", name)
					continue
				}
				from, ok := link[0].(string)
				if _, exists := graph[from]; !ok || !exists {
					fail("bad_linked_input", "Linked node does not exist", name)
				}
				continue
			}
			switch spec.typ {
			case "INT", "FLOAT":
				num, ok := v.(json.Number)
				if !ok {
					fail("invalid_input_type", "Failed to convert an input value to a "+spec.typ+" value", name)
					continue
				}
				f, err := strconv.ParseFloat(string(num), 64)
				if spec.typ == "INT" {
					if _, ierr := strconv.ParseUint(string(num), 10, 64); ierr != nil {
						err = ierr
					}
				}
				if err != nil {
					fail("invalid_input_type", "Failed to convert an input value to a "+spec.typ+" value", name)
					continue
				}
				if f < spec.min {
					fail("value_smaller_than_min", fmt.Sprintf("Value %v smaller than min of %v", f, spec.min), name)
				}
				if f > spec.max {
					fail("value_bigger_than_max", fmt.Sprintf("Value %v bigger than max of %v", f, spec.max), name)
				}
			case "STRING":
				if _, ok := v.(string); !ok {
					fail("invalid_input_type", "Failed to convert an input value to a STRING value", name)
				}
			case "enum":
				if str, ok := v.(string); !ok || !slices.Contains(spec.choices, str) {
					fail("value_not_in_list", fmt.Sprintf("Value not in list: %s: '%v' not in %v", name, v, spec.choices), name)
				}
			case "upload":
				if str, ok := v.(string); !ok || !slices.Contains(uploads, str) {
					fail("custom_validation_failed", fmt.Sprintf("Invalid image file: %v", v), name)
				}
			default:
				fail("bad_linked_input", "Expected a link for input of type "+spec.typ, name)
			}
		}
		if len(errs) > 0 {
			nodeErrors[id] = map[string]any{"errors": errs, "dependent_outputs": []string{}, "class_type": types[id]}
		}
	}
	if len(nodeErrors) > 0 {
		return nil, errorBody("prompt_outputs_failed_validation", "Prompt outputs failed validation", "", nodeErrors)
	}
	return graph, nil
}

// execute runs queued prompts one at a time until the server closes.
func (s *Server) execute() {
	for {
		select {
		case <-s.closed:
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			if len(s.pending) == 0 {
				s.mu.Unlock()
				break
			}
			p := s.pending[0]
			s.pending = s.pending[1:]
			s.running = p
			s.mu.Unlock()
			s.run(p)
			s.mu.Lock()
			s.running = nil
			s.mu.Unlock()
		}
	}
}

func (s *Server) run(p *prompt) {
	s.send(p.clientID, "execution_start", map[string]any{"prompt_id": p.id, "timestamp": 0})
	ids := slices.Sorted(maps.Keys(p.graph))
	var width, height, steps int64 = 64, 64, 1
	var seed, text string
	for _, in := range p.graph {
		if v, ok := in["width"].(json.Number); ok {
			width, _ = v.Int64()
			hv, _ := in["height"].(json.Number)
			height, _ = hv.Int64()
		}
		if v, ok := in["steps"].(json.Number); ok {
			steps, _ = v.Int64()
			seed = string(in["seed"].(json.Number))
			// The positive text is the CLIPTextEncode the sampler links.
			if link, ok := in["positive"].([]any); ok {
				from, _ := link[0].(string)
				text, _ = p.graph[from]["text"].(string)
			}
		}
	}
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	select {
	case s.started <- p.id:
	default:
	}
	if hold != nil {
		select {
		case <-hold:
		case <-p.interrupt:
			s.interrupted(p)
			return
		case <-s.closed:
			return
		}
	}
	var saveNode string
	for _, id := range ids {
		select {
		case <-p.interrupt:
			s.interrupted(p)
			return
		case <-s.closed:
			return
		default:
		}
		s.send(p.clientID, "executing", map[string]any{"node": id, "display_node": id, "prompt_id": p.id})
		if _, ok := p.graph[id]["steps"]; ok {
			for i := int64(1); i <= min(steps, 50); i++ {
				s.send(p.clientID, "progress", map[string]any{"value": i, "max": steps, "prompt_id": p.id, "node": id})
				if s.Previews {
					s.sendPreview(p.clientID, render(8, 8, fmt.Sprint(i)))
				}
			}
		}
		if _, ok := p.graph[id]["images"]; ok {
			saveNode = id
		}
	}
	img := render(int(width), int(height), seed+"|"+text)
	filename := fmt.Sprintf("ComfyUI_%s_.png", p.id)
	out := map[string]any{"images": []map[string]string{{"filename": filename, "subfolder": "", "type": "output"}}}
	s.send(p.clientID, "executed", map[string]any{"node": saveNode, "display_node": saveNode, "output": out, "prompt_id": p.id})
	entry, _ := json.Marshal(map[string]any{p.id: map[string]any{
		"prompt":  []any{0, p.id, p.graph, map[string]any{"client_id": p.clientID}, []string{saveNode}},
		"outputs": map[string]any{saveNode: out},
		"status":  map[string]any{"status_str": "success", "completed": true, "messages": []any{}},
		"meta":    map[string]any{},
	}})
	s.mu.Lock()
	s.outputs[filename] = img
	s.history[p.id] = entry
	s.counts.Executed++
	s.mu.Unlock()
	s.send(p.clientID, "executing", map[string]any{"node": nil, "prompt_id": p.id})
	s.send(p.clientID, "execution_success", map[string]any{"prompt_id": p.id, "timestamp": 0})
}

// sendPreview writes a PREVIEW_IMAGE binary frame: event type 1, image
// format 2 (PNG), the image.
func (s *Server) sendPreview(clientID string, img []byte) {
	frame := binary.BigEndian.AppendUint32(nil, 1)
	frame = binary.BigEndian.AppendUint32(frame, 2)
	frame = append(frame, img...)
	s.mu.Lock()
	conns := slices.Clone(s.sockets[clientID])
	s.mu.Unlock()
	for _, c := range conns {
		c.Write(context.Background(), websocket.MessageBinary, frame)
	}
}

func (s *Server) interrupted(p *prompt) {
	s.send(p.clientID, "execution_interrupted", map[string]any{"prompt_id": p.id, "node_id": "", "node_type": "", "executed": []string{}})
}

func render(w, h int, seed string) []byte {
	sum := sha256.Sum256([]byte(seed))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	c := color.NRGBA{R: sum[0], G: sum[1], B: sum[2], A: 255}
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	entry, ok := s.history[r.PathValue("id")]
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(entry)
}

func (s *Server) handleView(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, typ := q.Get("filename"), q.Get("type")
	if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	if typ != "output" && typ != "input" && typ != "temp" {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.counts.Views++
	img, ok := s.outputs[name]
	s.mu.Unlock()
	if !ok || typ != "output" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(img)
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	f, hdr, err := r.FormFile("image")
	if err != nil {
		// The real server answers a bare 400 when "image" is missing.
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	if typ := r.FormValue("type"); typ != "" && typ != "input" && typ != "temp" && typ != "output" {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	name := hdr.Filename
	if name == "" || strings.Contains(name, "/") || strings.Contains(name, "..") {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if _, exists := s.uploads[name]; exists && r.FormValue("overwrite") != "true" {
		// ComfyUI renames instead of overwriting: name (1).png.
		name = strings.TrimSuffix(name, ".png") + " (1).png"
	}
	s.uploads[name] = data
	s.counts.Uploads++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "subfolder": "", "type": "input"})
}

func (s *Server) handleInterrupt(w http.ResponseWriter, r *http.Request) {
	var body struct {
		PromptID string `json:"prompt_id"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
	}
	s.mu.Lock()
	s.counts.Interrupts++
	p := s.running
	s.mu.Unlock()
	// Newer servers interrupt only the named prompt; without a name,
	// whatever runs.
	if p != nil && (body.PromptID == "" || body.PromptID == p.id) {
		p.once.Do(func() { close(p.interrupt) })
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleQueue(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Delete []string `json:"delete"`
		Clear  bool     `json:"clear"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts.Deletes += len(body.Delete)
	s.pending = slices.DeleteFunc(s.pending, func(p *prompt) bool {
		return body.Clear || slices.Contains(body.Delete, p.id)
	})
	w.WriteHeader(http.StatusOK)
}
