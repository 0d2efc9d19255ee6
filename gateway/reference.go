package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"image"
	"image/draw"
	_ "image/gif" // registered decoders: the formats /v1/images/edits accepts
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/webp"
)

// checkReference validates an uploaded reference image without trusting
// it: the header is read first and the pixel count bounded before a single
// pixel is decoded (a 50 KB PNG can claim 100,000² pixels), the decoder is
// run under recover, and the result is the SHA-256 of the decoded pixels in
// canonical NRGBA form — the reference's identity in the cache key, so
// re-encoding the same picture (or renaming the file) does not change it.
func (g *Gateway) checkReference(data []byte) (string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", badRequest("invalid_image", "image: not a PNG, JPEG, GIF or WebP image")
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > int64(g.cfg.MaxUploadPixels) {
		return "", badRequest("image_too_large", fmt.Sprintf("image: %dx%d exceeds the limit of %d pixels", cfg.Width, cfg.Height, g.cfg.MaxUploadPixels))
	}
	// Decoding allocates width×height×4 bytes or more: bound how many run at
	// once so a burst of uploads cannot exhaust memory.
	g.decodes <- struct{}{}
	defer func() { <-g.decodes }()
	img, err := safeDecode(data)
	if err != nil {
		return "", badRequest("invalid_image", fmt.Sprintf("image: could not decode the %s data", format))
	}
	return pixelHash(img), nil
}

func safeDecode(data []byte) (img image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, errDecodePanic
		}
	}()
	img, _, err = image.Decode(bytes.NewReader(data))
	return img, err
}

// pixelHash is the SHA-256 of the image's size and its pixels as
// non-premultiplied RGBA.
func pixelHash(img image.Image) string {
	b := img.Bounds()
	n, ok := img.(*image.NRGBA)
	if !ok || b.Min != (image.Point{}) || n.Stride != 4*b.Dx() {
		n = image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		draw.Draw(n, n.Bounds(), img, b.Min, draw.Src)
	}
	h := sha256.New()
	var dims [8]byte
	binary.BigEndian.PutUint32(dims[:4], uint32(b.Dx()))
	binary.BigEndian.PutUint32(dims[4:], uint32(b.Dy()))
	h.Write(dims[:])
	h.Write(n.Pix)
	return hex.EncodeToString(h.Sum(nil))
}
