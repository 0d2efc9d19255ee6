// Package retro is imagegate's CPU backend: a deterministic procedural
// generator of retro art. It is not a neural model and does not pretend
// to be one; its ModelInfo says Kind "procedural".
//
// For text-to-image, words in the prompt pick motifs (sun, moon, stars,
// grid, mountains, city, ocean, palms, clouds, trees, spheres) and colour
// families (neon, pastel, ice, fire, green, amber, mono); words in the
// negative prompt remove motifs; the seed varies the layout; the style
// sets the composition: a synthwave sun over a perspective grid, a
// vaporwave checker floor, a pixel-art skyline, a handheld-console or CGA
// vista, or a blueprint. Gradients are ordered-dithered into a small
// palette and the result is a paletted PNG.
//
// For image-to-image, the reference is decoded defensively (PNG, JPEG,
// GIF, WebP; header checked before pixels are allocated; at most 40
// megapixels), cover-fitted to the requested size and given a retro
// treatment: gradient maps, palette quantization with ordered or
// Floyd–Steinberg dithering, pixelation, scanlines, or blueprint edge
// inking. Strength blends from the resized original (0) to the full
// treatment (1).
//
// # Determinism
//
// The prompt is read in canonical form (NFC, case-folded, whitespace
// collapsed), so prompts that differ only in case produce identical
// bytes and ModelInfo.CaseInsensitive is true. Layout randomness comes
// from a PCG generator seeded with SHA-256 of the canonical request;
// there is no global state, no clock and no map iteration in the output
// path, and PNGs are written at a fixed compression level. The same
// request therefore gives byte-identical output on a given platform and
// Go toolchain. Floating-point results may differ across architectures
// that fuse multiply-adds, so bytes are not promised to match between,
// say, amd64 and arm64.
package retro
