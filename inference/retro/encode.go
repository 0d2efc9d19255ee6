package retro

import (
	"bytes"
	"image"
	"image/png"
	"sync"
)

// encoder writes PNGs with a fixed compression level (so output bytes
// depend only on the image) and reuses the encoder's scratch buffers
// across requests.
type encoder struct {
	png  png.Encoder
	bufs sync.Pool
}

func newEncoder() *encoder {
	e := &encoder{}
	e.png = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: e}
	return e
}

// Get and Put make encoder a png.EncoderBufferPool.
func (e *encoder) Get() *png.EncoderBuffer {
	b, _ := e.bufs.Get().(*png.EncoderBuffer)
	return b
}

func (e *encoder) Put(b *png.EncoderBuffer) { e.bufs.Put(b) }

func (e *encoder) encode(img image.Image) ([]byte, error) {
	var buf bytes.Buffer
	b := img.Bounds()
	buf.Grow(b.Dx() * b.Dy() / 4)
	if err := e.png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
