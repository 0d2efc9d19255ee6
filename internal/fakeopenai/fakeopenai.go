// Package fakeopenai is an OpenAI Images API server for tests, written from
// OpenAI's API reference (POST /v1/images/generations and
// /v1/images/edits): no provider can be reached from here, so this stands
// in for one, checking requests as strictly as the real API.
//
// It requires "Authorization: Bearer <Key>", refuses unknown request
// fields ("Unrecognized request argument supplied"), an empty prompt,
// sizes and response formats the model does not offer, a response_format
// sent to a gpt-image model, and edits that are not multipart/form-data
// with an image file. It answers with OpenAI's shapes, errors included:
// {"error": {"message", "type", "param", "code"}}.
package fakeopenai

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running fake.
type Server struct {
	*httptest.Server
	Key string

	mu      sync.Mutex
	files   map[string][]byte
	calls   int
	fail    []int // statuses to answer the next calls with
	hold    chan struct{}
	entered chan struct{}
	last    map[string]string // fields of the last accepted request
	pad     int               // extra bytes appended to served files (oversize tests)
}

// models: what each model accepts.
var models = map[string]struct {
	sizes   []string
	formats bool // accepts response_format
}{
	"gpt-image-1": {sizes: []string{"1024x1024", "1536x1024", "1024x1536", "auto"}},
	"dall-e-2":    {sizes: []string{"256x256", "512x512", "1024x1024"}, formats: true},
	"dall-e-3":    {sizes: []string{"1024x1024", "1792x1024", "1024x1792"}, formats: true},
}

// Start runs the fake on loopback until the test ends. Its API root is
// URL + "/v1".
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{Key: "sk-test-" + strconv.Itoa(int(time.Now().UnixNano()%1e6)), files: map[string][]byte{}, entered: make(chan struct{}, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/images/generations", s.handleGenerations)
	mux.HandleFunc("POST /v1/images/edits", s.handleEdits)
	mux.HandleFunc("GET /files/{name}", s.handleFile)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// FailNext makes the next calls answer these statuses, in order.
func (s *Server) FailNext(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, statuses...)
}

// Hold makes calls wait until Release; Entered receives as each arrives.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = make(chan struct{})
}

// Release lets held calls go on.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Entered receives once per call as it arrives.
func (s *Server) Entered() <-chan struct{} { return s.entered }

// PadFiles makes url answers serve n extra bytes after the image.
func (s *Server) PadFiles(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pad = n
}

// Calls is how many image calls arrived.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Last returns the fields of the last accepted call.
func (s *Server) Last() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func apiError(w http.ResponseWriter, status int, typ, param, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	var p, c any
	if param != "" {
		p = param
	}
	if code != "" {
		c = code
	}
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": p, "code": c}})
}

// begin counts the call, checks the key and applies FailNext and Hold. It
// reports whether to go on.
func (s *Server) begin(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	s.calls++
	hold := s.hold
	var fail int
	if len(s.fail) > 0 {
		fail, s.fail = s.fail[0], s.fail[1:]
	}
	s.mu.Unlock()
	select {
	case s.entered <- struct{}{}:
	default:
	}
	if r.Header.Get("Authorization") != "Bearer "+s.Key {
		apiError(w, http.StatusUnauthorized, "invalid_request_error", "", "invalid_api_key", "Incorrect API key provided.")
		return false
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return false
		}
	}
	switch fail {
	case 0:
		return true
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "7")
		apiError(w, fail, "requests", "", "rate_limit_exceeded", "Rate limit reached for images per minute.")
	default:
		apiError(w, fail, "server_error", "", "", "The server had an error while processing your request.")
	}
	return false
}

// check validates the fields common to both endpoints.
func check(w http.ResponseWriter, f map[string]string) bool {
	m, ok := models[f["model"]]
	if !ok {
		apiError(w, http.StatusNotFound, "invalid_request_error", "model", "model_not_found", fmt.Sprintf("The model '%s' does not exist.", f["model"]))
		return false
	}
	if strings.TrimSpace(f["prompt"]) == "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "prompt", "", "Missing required parameter: 'prompt'.")
		return false
	}
	if len(f["prompt"]) > 32000 {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "prompt", "string_above_max_length", "Prompt too long.")
		return false
	}
	if strings.Contains(strings.ToLower(f["prompt"]), "forbidden") {
		apiError(w, http.StatusBadRequest, "image_generation_user_error", "", "content_policy_violation", "Your request was rejected as a result of our safety system.")
		return false
	}
	if size, ok := f["size"]; ok && !slices.Contains(m.sizes, size) {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "size", "invalid_size", fmt.Sprintf("Invalid size '%s'. Supported sizes are %s.", size, strings.Join(m.sizes, ", ")))
		return false
	}
	if n, ok := f["n"]; ok && n != "1" {
		if v, err := strconv.Atoi(n); err != nil || v < 1 || v > 10 {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "n", "", "Invalid 'n'.")
			return false
		}
	}
	if rf, ok := f["response_format"]; ok {
		if !m.formats {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "response_format", "unknown_parameter", "Unknown parameter: 'response_format'.")
			return false
		}
		if rf != "b64_json" && rf != "url" {
			apiError(w, http.StatusBadRequest, "invalid_request_error", "response_format", "", fmt.Sprintf("Invalid value: '%s'.", rf))
			return false
		}
	}
	return true
}

func (s *Server) handleGenerations(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r) {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "", "", "Content-Type must be application/json.")
		return
	}
	var raw map[string]any
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "", "", "We could not parse the JSON body of your request.")
		return
	}
	allowed := []string{"model", "prompt", "n", "size", "quality", "style", "user", "response_format", "background", "output_format", "moderation"}
	fields := map[string]string{}
	for k, v := range raw {
		if !slices.Contains(allowed, k) {
			apiError(w, http.StatusBadRequest, "invalid_request_error", k, "unknown_parameter", fmt.Sprintf("Unrecognized request argument supplied: %s", k))
			return
		}
		fields[k] = fmt.Sprint(v)
	}
	if _, ok := raw["prompt"].(string); !ok {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "prompt", "", "Missing required parameter: 'prompt'.")
		return
	}
	if !check(w, fields) {
		return
	}
	s.answer(w, fields, nil)
}

func (s *Server) handleEdits(w http.ResponseWriter, r *http.Request) {
	if !s.begin(w, r) {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "", "", "Invalid Content-Type header, expected multipart/form-data.")
		return
	}
	if err := r.ParseMultipartForm(50 << 20); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "", "", "Could not parse multipart form.")
		return
	}
	allowed := []string{"model", "prompt", "n", "size", "response_format", "user", "quality", "background", "output_format"}
	fields := map[string]string{}
	for k, v := range r.MultipartForm.Value {
		if !slices.Contains(allowed, k) {
			apiError(w, http.StatusBadRequest, "invalid_request_error", k, "unknown_parameter", fmt.Sprintf("Unrecognized request argument supplied: %s", k))
			return
		}
		fields[k] = v[0]
	}
	files := r.MultipartForm.File["image"]
	if len(files) == 0 {
		files = r.MultipartForm.File["image[]"]
	}
	if len(files) != 1 {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "image", "", "Missing required parameter: 'image'.")
		return
	}
	ct := files[0].Header.Get("Content-Type")
	if ct != "image/png" && ct != "image/jpeg" && ct != "image/webp" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "image", "invalid_image_format", fmt.Sprintf("Invalid file 'image': unsupported mimetype ('%s').", ct))
		return
	}
	f, _ := files[0].Open()
	ref, _ := io.ReadAll(f)
	f.Close()
	if _, _, err := image.DecodeConfig(bytes.NewReader(ref)); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "image", "invalid_image", "Invalid image file.")
		return
	}
	if !check(w, fields) {
		return
	}
	s.answer(w, fields, ref)
}

// answer renders the image and replies with b64_json or a url.
func (s *Server) answer(w http.ResponseWriter, f map[string]string, ref []byte) {
	width, height := 1024, 1024
	if size := f["size"]; size != "" && size != "auto" {
		fmt.Sscanf(size, "%dx%d", &width, &height)
	}
	sum := sha256.Sum256(append([]byte(f["prompt"]), ref...))
	img := image.NewNRGBA(image.Rect(0, 0, width, height))
	c := color.NRGBA{R: sum[0], G: sum[1], B: sum[2], A: 255}
	for y := range height {
		for x := range width {
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	s.mu.Lock()
	s.last = f
	s.mu.Unlock()
	item := map[string]any{"revised_prompt": f["prompt"]}
	if f["response_format"] == "url" {
		name := fmt.Sprintf("img-%x.png", sum[:8])
		s.mu.Lock()
		s.files[name] = append(buf.Bytes(), make([]byte, s.pad)...)
		s.mu.Unlock()
		item["url"] = s.URL + "/files/" + name
	} else {
		item["b64_json"] = base64.StdEncoding.EncodeToString(buf.Bytes())
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"created": time.Now().Unix(), "data": []any{item}})
}

func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data, ok := s.files[r.PathValue("name")]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(data)
}
