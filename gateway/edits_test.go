package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/imagegate/imagegate/edge"
)

// testImage draws a deterministic gradient.
func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	return img
}

// testPNG encodes testImage.
func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, testImage(w, h)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bombPNG is a tiny PNG whose header claims w×h pixels.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, c.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

type editOptions struct {
	prompt   string
	image    []byte
	filename string
	fields   map[string]string
	rawBody  []byte // sent as-is with rawType
	rawType  string
}

func (e *env) edit(t *testing.T, o editOptions) (*http.Response, []byte) {
	t.Helper()
	var body bytes.Buffer
	ctype := o.rawType
	if o.rawBody != nil {
		body.Write(o.rawBody)
	} else {
		mw := multipart.NewWriter(&body)
		if o.prompt != "" {
			mw.WriteField("prompt", o.prompt)
		}
		for k, v := range o.fields {
			mw.WriteField(k, v)
		}
		if o.image != nil {
			name := o.filename
			if name == "" {
				name = "ref.png"
			}
			fw, err := mw.CreateFormFile("image", name)
			if err != nil {
				t.Fatal(err)
			}
			fw.Write(o.image)
		}
		mw.Close()
		ctype = mw.FormDataContentType()
	}
	req, err := http.NewRequest("POST", e.url+"/v1/images/edits", &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	return e.do(req)
}

func TestEditReturnsTransformedImageOfRequestedSize(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ref := testPNG(t, 300, 200)
	resp, raw := e.edit(t, editOptions{prompt: "gameboy", image: ref, fields: map[string]string{"size": "256x256", "strength": "1"}})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	r := decodeImages(t, raw)
	_, out := e.get(r.Data[0].URL)
	img := decodePNG(t, out)
	if b := img.Bounds(); b.Dx() != 256 || b.Dy() != 256 {
		t.Fatalf("edit output is %dx%d, want 256x256", b.Dx(), b.Dy())
	}
	if bytes.Equal(out, ref) {
		t.Errorf("edit returned its input")
	}
	if e.generations() != 1 {
		t.Errorf("tier generations = %v, want 1", e.generations())
	}

	// The same picture re-encoded as JPEG-free PNG with another filename
	// is the same reference: its identity is its pixels. Edits are private,
	// so even the same request is not served from another visitor's entry.
	resp, _ = e.edit(t, editOptions{prompt: "gameboy", image: ref, filename: "other.png", fields: map[string]string{"size": "256x256", "strength": "1"}})
	if got := resp.Header.Get("Cache-Status"); strings.Contains(got, "hit") {
		t.Errorf("a private edit was served from a shared cache entry: %q", got)
	}

	// JPEG references work too.
	var jb bytes.Buffer
	src, _ := png.Decode(bytes.NewReader(ref))
	jpeg.Encode(&jb, src, nil)
	if resp, raw := e.edit(t, editOptions{prompt: "cga", image: jb.Bytes(), filename: "ref.jpg"}); resp.StatusCode != 200 {
		t.Errorf("jpeg reference: %d %s", resp.StatusCode, raw)
	}
}

func TestBadEditsChangeNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{MaxUploadBytes: 256 << 10, MaxUploadPixels: 1000 * 1000}})
	good := testPNG(t, 64, 64)
	truncated := testPNG(t, 200, 200)
	truncated = truncated[:len(truncated)/2]
	cases := []struct {
		name   string
		opts   editOptions
		status int
		field  string
	}{
		{"not multipart", editOptions{rawBody: []byte(`{"prompt":"x"}`), rawType: "application/json"}, 400, "multipart"},
		{"malformed multipart", editOptions{rawBody: []byte("--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhello"), rawType: "multipart/form-data; boundary=xyz"}, 400, "multipart"},
		{"no image", editOptions{prompt: "x"}, 400, "image"},
		{"not an image", editOptions{prompt: "x", image: []byte("GIF89a but not really")}, 400, "image"},
		{"text file", editOptions{prompt: "x", image: []byte("hello world")}, 400, "image"},
		{"image bomb", editOptions{prompt: "x", image: bombPNG(100000, 100000)}, 400, "pixels"},
		{"over pixel limit", editOptions{prompt: "x", image: bombPNG(1001, 1000)}, 400, "pixels"},
		{"truncated png", editOptions{prompt: "x", image: truncated}, 400, "decode"},
		{"too many bytes", editOptions{prompt: "x", image: append(testPNG(t, 8, 8), make([]byte, 300<<10)...)}, 413, ""},
		{"no prompt", editOptions{image: good}, 400, "prompt"},
		{"strength too high", editOptions{prompt: "x", image: good, fields: map[string]string{"strength": "2"}}, 400, "strength"},
		{"strength not a number", editOptions{prompt: "x", image: good, fields: map[string]string{"strength": "lots"}}, 400, "strength"},
		{"unknown field", editOptions{prompt: "x", image: good, fields: map[string]string{"mask_color": "red"}}, 400, "mask_color"},
		{"unknown size", editOptions{prompt: "x", image: good, fields: map[string]string{"size": "640x480"}}, 400, "size"},
		{"n too big", editOptions{prompt: "x", image: good, fields: map[string]string{"n": "9"}}, 400, "n:"},
		{"bad format", editOptions{prompt: "x", image: good, fields: map[string]string{"response_format": "gif"}}, 400, "response_format"},
		{"invalid UTF-8 prompt", editOptions{prompt: "cat \xff", image: good}, 400, "prompt"},
		{"NUL-only prompt", editOptions{prompt: "\x00\x00", image: good}, 400, "prompt"},
		{"control negative prompt", editOptions{prompt: "x", image: good, fields: map[string]string{"negative_prompt": "\x1b\x07"}}, 400, "negative_prompt"},
		{"thousands of parts", editOptions{rawBody: manyParts(5000, false, good), rawType: "multipart/form-data; boundary=flood"}, 400, "multipart"},
		{"thousands of files", editOptions{rawBody: manyParts(3000, true, good), rawType: "multipart/form-data; boundary=flood"}, 400, "multipart"},
		{"repeated field", editOptions{rawBody: manyParts(2, false, good), rawType: "multipart/form-data; boundary=flood"}, 400, "user"},
	}
	objects := e.objectCount()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, raw := e.edit(t, tc.opts)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			var eb errorBody
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("error body %s lacks the error shape", raw)
			}
			if !strings.Contains(eb.Error.Message, tc.field) {
				t.Errorf("message %q does not name %q", eb.Error.Message, tc.field)
			}
		})
	}
	if e.generations() != 0 || e.objectCount() != objects || e.cache.Stats().Loads != 0 {
		t.Errorf("bad edits changed state: generations %v, objects %d→%d", e.generations(), objects, e.objectCount())
	}
}

// manyParts is a multipart body (boundary "flood") with n "user" fields, or
// n image files when files, and one image.
func manyParts(n int, files bool, image []byte) []byte {
	var b bytes.Buffer
	b.WriteString("--flood\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\ncat\r\n")
	for range n {
		if files {
			b.WriteString("--flood\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nx\r\n")
		} else {
			b.WriteString("--flood\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nu\r\n")
		}
	}
	b.WriteString("--flood\r\nContent-Disposition: form-data; name=\"image\"; filename=\"ref.png\"\r\nContent-Type: image/png\r\n\r\n")
	b.Write(image)
	b.WriteString("\r\n--flood--\r\n")
	return b.Bytes()
}

// FuzzEditForm feeds arbitrary multipart bodies through the form reader,
// editRequest and validation: nothing panics and every refusal is a clean
// 4xx naming what is wrong.
func FuzzEditForm(f *testing.F) {
	good := testPNG(f, 8, 8)
	f.Add(manyParts(0, false, good))
	f.Add(manyParts(2, false, good))
	f.Add(manyParts(3, true, good))
	f.Add([]byte("--flood\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n\xff\x00\r\n--flood--\r\n"))
	f.Add([]byte("--flood\r\nContent-Disposition: form-data; name=\"seed\"\r\n\r\n99999999999999999999999\r\n--flood--\r\n"))
	f.Add([]byte("--flood\r\nContent-Disposition: form-data; name=\"guidance\"\r\n\r\nNaN\r\n--flood--\r\n"))
	f.Add([]byte("--flood\r\n\r\n--flood--"))
	g := paramsGateway()
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := multipart.NewReader(bytes.NewReader(body), "flood").ReadForm(1 << 20)
		if err != nil {
			return // the handler answers this with invalid_multipart
		}
		defer form.RemoveAll()
		r, image, err := editRequest(form)
		if err == nil {
			if image == nil {
				t.Fatal("accepted a form without its image")
			}
			_, err = g.validate(r)
			if err == nil {
				return
			}
		}
		var ae *apiError
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Msg == "" || strings.Contains(ae.Msg, "\n") {
			t.Fatalf("refusal %v is not a clean 400", err)
		}
	})
}

func FuzzCheckReference(f *testing.F) {
	f.Add(testPNG(f, 16, 16))
	f.Add(bombPNG(100000, 100000))
	f.Add(bombPNG(3, 3))
	full := testPNG(f, 40, 40)
	f.Add(full[:len(full)/2])
	f.Add([]byte("GIF89a\x01\x00\x01\x00"))
	f.Add([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "))
	f.Add([]byte{0xff, 0xd8, 0xff, 0xe0})
	g := &Gateway{cfg: Config{MaxUploadPixels: 1 << 20}, decodes: make(chan struct{}, 1)}
	f.Fuzz(func(t *testing.T, data []byte) {
		sum, err := g.checkReference(data)
		if err != nil {
			ae, ok := err.(*apiError)
			if !ok || ae.Status != 400 {
				t.Fatalf("bad input gave %v, want a 400 apiError", err)
			}
			return
		}
		if len(sum) != 64 {
			t.Fatalf("accepted image has hash %q", sum)
		}
		again, _ := g.checkReference(data)
		if again != sum {
			t.Fatalf("reference hash not deterministic")
		}
	})
}

// recordingObjects is the object store with every write recorded, so a
// test can say exactly what an operation stored.
type recordingObjects struct {
	envObjects
	mu   sync.Mutex
	puts []recordedPut
}

type recordedPut struct {
	name string
	data []byte
}

func (r *recordingObjects) Put(ctx context.Context, name string, data []byte, contentType string) (bool, error) {
	r.mu.Lock()
	r.puts = append(r.puts, recordedPut{name, bytes.Clone(data)})
	r.mu.Unlock()
	return r.envObjects.Put(ctx, name, data, contentType)
}

func (r *recordingObjects) written() []recordedPut {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.puts)
}

// paddedPNG is testPNG(w, h) with a private ancillary chunk of pad bytes
// before IEND: a valid reference of any size, whose padding is its own.
func paddedPNG(t testing.TB, w, h int, pad []byte) []byte {
	t.Helper()
	p := testPNG(t, w, h)
	iend := len(p) - 12
	if string(p[iend+4:iend+8]) != "IEND" {
		t.Fatalf("no IEND at the end of the test PNG")
	}
	var chunk bytes.Buffer
	binary.Write(&chunk, binary.BigEndian, uint32(len(pad)))
	body := append([]byte("prVt"), pad...)
	chunk.Write(body)
	binary.Write(&chunk, binary.BigEndian, crc32.ChecksumIEEE(body))
	return slices.Concat(p[:iend], chunk.Bytes(), p[iend:])
}

// TestEditKeepsNoReference checks promise C2: the reference image is used
// for the task and stored nowhere. The object store is wrapped in a
// recorder: an edit writes only its outputs (named by the hash of the
// bytes written, and returned to the caller) and their manifests, and no
// write holds the reference. No file under the data directory (object
// store, L2 cache file, store) holds its bytes or pixel rows, and the
// process's temporary directory is left empty. A reference above the
// multipart parser's 16 MiB in-memory limit runs with TMPDIR pointing
// nowhere, so spooling it to a temporary file would fail the edit.
//
// Not parallel: it sets TMPDIR for the process.
func TestEditKeepsNoReference(t *testing.T) {
	spool := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	pad := make([]byte, 17<<20)
	rand.Read(pad)
	for _, c := range []struct {
		name   string
		ref    []byte
		tmpdir string
		needle []byte // a run of the upload's bytes no output can hold
	}{
		{"small", testPNG(t, 128, 96), spool, nil},
		{"larger than in-memory multipart", paddedPNG(t, 128, 96, pad), filepath.Join(spool, "missing"), pad[len(pad)/2 : len(pad)/2+64]},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir() // before TMPDIR moves
			t.Setenv("TMPDIR", c.tmpdir)
			rec := &recordingObjects{}
			e := newEnv(t, envOptions{dir: dir, objects: func(l *edge.Local) envObjects { rec.envObjects = l; return rec }})
			resp, raw := e.edit(t, editOptions{prompt: "pixel", image: c.ref, fields: map[string]string{"size": "256x256"}})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s\n%s", resp.StatusCode, raw, e.logs)
			}
			outputs := map[string]bool{}
			for _, d := range decodeImages(t, raw).Data {
				outputs[strings.TrimSuffix(strings.TrimPrefix(pathOf(t, d.URL), "/o/"), ".png")] = true
			}
			e.close()

			// The decoded pixels are what the tier saw; look for a long run
			// of the encoded upload and of its raw pixel rows alike.
			needles := [][]byte{c.ref[len(c.ref)/2 : len(c.ref)/2+64], testImage(128, 96).Pix[40*128*4 : 40*128*4+256]}
			if c.needle != nil {
				needles = append(needles, c.needle)
			}
			holdsReference := func(data []byte) bool {
				for _, n := range needles {
					if bytes.Contains(data, n) {
						return true
					}
				}
				return false
			}

			var stored, manifests int
			for _, p := range rec.written() {
				if holdsReference(p.data) {
					t.Errorf("object %s holds reference image bytes", p.name)
				}
				switch {
				case strings.HasPrefix(p.name, "o/"):
					hash, ext, ok := strings.Cut(strings.TrimPrefix(p.name, "o/"), ".")
					if !ok || ext != "png" || hash != edge.HashHex(p.data) {
						t.Errorf("object %s is not named by the SHA-256 of its bytes", p.name)
					}
					if !outputs[hash] {
						t.Errorf("object %s is not an output of the edit (outputs %v)", p.name, outputs)
					}
					stored++
				case strings.HasPrefix(p.name, "k/") && strings.HasSuffix(p.name, ".json"):
					var m struct {
						Object string `json:"object"`
					}
					if err := json.Unmarshal(p.data, &m); err != nil || !outputs[m.Object] {
						t.Errorf("manifest %s (%v) names %q, not an output of the edit", p.name, err, m.Object)
					}
					manifests++
				default:
					t.Errorf("the edit wrote %s (%d bytes): neither an output nor a manifest", p.name, len(p.data))
				}
			}
			if stored != len(outputs) || manifests == 0 {
				t.Errorf("the edit stored %d outputs and %d manifests; want its %d outputs and their manifests", stored, manifests, len(outputs))
			}
			for _, f := range filesUnder(t, e.dir) {
				if holdsReference(readFile(t, f)) {
					t.Errorf("%s holds reference image bytes", f)
				}
			}
			left, err := os.ReadDir(spool)
			if err != nil || len(left) != 0 {
				t.Errorf("the temporary directory holds %v (%v), want nothing", left, err)
			}
		})
	}
}
