package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/inference/retro"
)

// previewBackend is retro on a worker of its own (a Placed backend, as
// GPU backends are), which reports progress and a preview image once let
// go, then holds the image until released.
type previewBackend struct {
	inference.Backend
	began     chan struct{} // a generation started
	proceed   chan struct{} // let it report progress and a preview
	release   chan struct{} // let it finish
	cancelled chan struct{} // a generation saw its context end
}

func newPreviewBackend() *previewBackend {
	return &previewBackend{Backend: retro.New(), began: make(chan struct{}, 16), proceed: make(chan struct{}, 16),
		release: make(chan struct{}), cancelled: make(chan struct{}, 16)}
}

func (b *previewBackend) Workers() []inference.Worker {
	return []inference.Worker{{ID: "gpu-1", Slots: 4}}
}

func (b *previewBackend) GenerateOn(ctx context.Context, _ string, req inference.Request, progress inference.ProgressFunc, preview inference.PreviewFunc) (inference.Result, error) {
	b.began <- struct{}{}
	wait := func(ch <-chan struct{}) error {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			b.cancelled <- struct{}{}
			return ctx.Err()
		}
	}
	if err := wait(b.proceed); err != nil {
		return inference.Result{}, err
	}
	preview(previewPNG(), "image/png") // sent with the next progress
	progress(0.5, "sampling")
	if err := wait(b.release); err != nil {
		return inference.Result{}, err
	}
	return b.Backend.Generate(ctx, req, nil)
}

func previewPNG() []byte {
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	img.Set(1, 1, color.White)
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

type sse struct {
	name string
	data []byte
	// comment is a heartbeat line (": ...") instead of an event.
	comment bool
}

// openStream POSTs body with stream on and returns the response and its
// events, as they arrive, on a channel closed at the end of the stream.
func (e *env) openStream(t *testing.T, path, method, body string, headers ...string) (*http.Response, <-chan sse) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	out := make(chan sse, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var cur sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, ":"):
				out <- sse{comment: true}
			case strings.HasPrefix(line, "event: "):
				cur.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				cur.data = []byte(strings.TrimPrefix(line, "data: "))
			case line == "" && cur.name != "":
				out <- cur
				cur = sse{}
			}
		}
	}()
	return resp, out
}

// nextEvent returns the next event (not heartbeat) named name, failing on
// any other event but progress.
func nextEvent(t *testing.T, events <-chan sse, name string) map[string]any {
	t.Helper()
	for ev := range events {
		if ev.comment || (ev.name == "imagegate.progress" && name != ev.name) {
			continue
		}
		if ev.name != name {
			t.Fatalf("event %s %s, want %s", ev.name, ev.data, name)
		}
		var v map[string]any
		if err := json.Unmarshal(ev.data, &v); err != nil {
			t.Fatalf("event %s: %v", ev.data, err)
		}
		if v["type"] != name {
			t.Fatalf("event %s has type %v", name, v["type"])
		}
		return v
	}
	t.Fatalf("stream ended before %s", name)
	return nil
}

// waitFor waits until cond holds, checking whenever the scheduler lets it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (g *Gateway) waitingFor() int {
	g.progress.mu.Lock()
	defer g.progress.mu.Unlock()
	n := 0
	for _, c := range g.progress.waiting {
		n += c
	}
	return n
}

// Two streams of one request share one generation and its one progress
// stream: both see the progress, the partial image in OpenAI's shape, and
// the same completed image, made once.
func TestStreamSharesProgressBetweenCoalescedWaiters(t *testing.T) {
	t.Parallel()
	b := newPreviewBackend()
	e := newEnv(t, envOptions{backend: b})
	const body = `{"prompt":"a slow lighthouse","size":"256x256","stream":true,"partial_images":2}`
	resp1, ev1 := e.openStream(t, "/v1/images/generations", "POST", body)
	if resp1.StatusCode != 200 || resp1.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answered %d %s", resp1.StatusCode, resp1.Header.Get("Content-Type"))
	}
	<-b.began
	_, ev2 := e.openStream(t, "/v1/images/generations", "POST", body)
	waitFor(t, "the second stream to join", func() bool { return e.gw.waitingFor() == 2 })
	b.proceed <- struct{}{}

	for _, evs := range []<-chan sse{ev1, ev2} {
		pr := nextEvent(t, evs, "imagegate.progress")
		if pr["progress"].(float64) != 0.5 || pr["stage"] != "sampling" {
			t.Errorf("progress %v", pr)
		}
		part := nextEvent(t, evs, "image_generation.partial_image")
		data, _ := base64.StdEncoding.DecodeString(part["b64_json"].(string))
		if !bytes.Equal(data, previewPNG()) || part["partial_image_index"].(float64) != 0 || part["size"] != "256x256" || part["output_format"] != "png" {
			t.Errorf("partial image event %v", part)
		}
	}
	close(b.release)
	var images [][]byte
	for _, evs := range []<-chan sse{ev1, ev2} {
		done := nextEvent(t, evs, "image_generation.completed")
		data, err := base64.StdEncoding.DecodeString(done["b64_json"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.DecodeConfig(bytes.NewReader(data)); err != nil || done["size"] != "256x256" {
			t.Errorf("completed image: %v, size %v", err, done["size"])
		}
		images = append(images, data)
		if _, more := <-evs; more {
			t.Error("events after completed")
		}
	}
	if !bytes.Equal(images[0], images[1]) {
		t.Error("coalesced streams got different images")
	}
	if n := e.generations(); n != 1 {
		t.Errorf("%v generations, want 1", n)
	}
}

// A cached image streams as one completed event: no progress, nothing else.
func TestStreamOfCacheHitIsOneCompletedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	resp, body := e.postJSON(`{"prompt":"a cached kite","size":"256x256","response_format":"b64_json"}`)
	want(t, resp, 200)
	var plain imagesResponse
	if err := json.Unmarshal(body, &plain); err != nil {
		t.Fatal(err)
	}
	_, evs := e.openStream(t, "/v1/images/generations", "POST", `{"prompt":"a cached kite","size":"256x256","stream":true}`)
	var got []sse
	for ev := range evs {
		if !ev.comment {
			got = append(got, ev)
		}
	}
	if len(got) != 1 || got[0].name != "image_generation.completed" {
		t.Fatalf("events %v, want one completed", got)
	}
	var done imageEventJSON
	json.Unmarshal(got[0].data, &done)
	if done.B64JSON != plain.Data[0].B64JSON || done.Seed != plain.Data[0].Seed {
		t.Error("the completed event is not the cached image")
	}
	if n := e.generations(); n != 1 {
		t.Errorf("%v generations, want 1", n)
	}
}

// An idle stream gets heartbeat comments, so a CDN's idle timeout (100 s
// at Cloudflare) never ends a long generation; and bad input is refused
// as JSON before any stream begins.
func TestStreamHeartbeatsWhileTheGPUWorks(t *testing.T) {
	t.Parallel()
	b := newPreviewBackend()
	e := newEnv(t, envOptions{backend: b, cfg: Config{StreamHeartbeat: time.Millisecond}})
	_, evs := e.openStream(t, "/v1/images/generations", "POST", `{"prompt":"a very slow kite","size":"256x256","stream":true}`)
	<-b.began
	beats := 0
	for ev := range evs {
		if !ev.comment {
			t.Fatalf("event %s before the generation progressed", ev.name)
		}
		if beats++; beats == 4 { // the opening comment and three beats
			break
		}
	}
	b.proceed <- struct{}{}
	close(b.release)
	nextEvent(t, evs, "image_generation.completed")

	resp, body := e.postJSON(`{"prompt":"x","stream":true,"partial_images":4}`)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "invalid_partial_images") {
		t.Errorf("partial_images 4: %d %s", resp.StatusCode, body)
	}
}
