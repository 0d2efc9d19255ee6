package gateway

import (
	"bytes"
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
	"strings"
	"testing"
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

// TestEditKeepsNoReference checks promise C2: the reference image is used
// for the task and stored nowhere — not in the object store, the cache
// files or anywhere else under the data directory.
func TestEditKeepsNoReference(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ref := testPNG(t, 128, 96)
	resp, raw := e.edit(t, editOptions{prompt: "pixel", image: ref, fields: map[string]string{"size": "256x256"}})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	e.close()
	// The decoded pixels are what the tier saw; look for a long run of the
	// encoded upload and of its raw pixel rows alike.
	needle := ref[len(ref)/2 : len(ref)/2+64]
	row := testImage(128, 96).Pix[40*128*4 : 40*128*4+256]
	for _, f := range filesUnder(t, e.dir) {
		data := readFile(t, f)
		if bytes.Contains(data, needle) || bytes.Contains(data, row) {
			t.Errorf("%s holds reference image bytes", f)
		}
	}
}
