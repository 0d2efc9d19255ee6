package edge

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidName reports an object name that a store refuses. Names are
// relative, slash-separated, made of [a-z0-9._/-] only, with no empty
// segment and no segment starting with a dot (so neither "..", nor hidden
// files, nor a store's temporary files can be named), at most maxNameLen
// bytes in all and maxSegmentLen per segment.
var ErrInvalidName = errors.New("edge: invalid object name")

const (
	maxNameLen    = 512
	maxSegmentLen = 255 // NAME_MAX on common file systems
)

// validateName returns nil if name may name an object, else an error
// wrapping ErrInvalidName that says why without repeating the name.
func validateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, maxNameLen)
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			c := name[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("%w: byte %#x outside [a-z0-9._/-]", ErrInvalidName, c)
			}
			continue
		}
		seg := name[start:i]
		switch {
		case seg == "":
			return fmt.Errorf("%w: empty segment (absolute, trailing or double slash)", ErrInvalidName)
		case seg[0] == '.':
			return fmt.Errorf("%w: segment starts with a dot", ErrInvalidName)
		case len(seg) > maxSegmentLen:
			return fmt.Errorf("%w: segment longer than %d bytes", ErrInvalidName, maxSegmentLen)
		}
		start = i + 1
	}
	return nil
}

// HashHex returns the lowercase hex SHA-256 of data: the identity of an
// output and the hash part of its name.
func HashHex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// OutputName returns the object store name of an output, "o/<hash>.<ext>".
// It does not validate: hash should come from HashHex and ext be one of the
// output extensions ParseOutputPath accepts.
func OutputName(hash, ext string) string {
	return "o/" + hash + "." + ext
}

// ParseOutputPath splits a public output path "/o/<hash>.<ext>" into its
// hash and extension. It accepts exactly 64 lowercase hex digits and one of
// png, jpg, webp or gif, and nothing else: no query, no escapes, no
// uppercase, no other prefix. The results are substrings of path.
func ParseOutputPath(path string) (hash, ext string, ok bool) {
	const prefix = "/o/"
	const hexLen = 2 * sha256.Size
	if len(path) < len(prefix)+hexLen+1+3 || !strings.HasPrefix(path, prefix) || path[len(prefix)+hexLen] != '.' {
		return "", "", false
	}
	hash = path[len(prefix) : len(prefix)+hexLen]
	for i := 0; i < len(hash); i++ {
		if c := hash[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", "", false
		}
	}
	switch ext = path[len(prefix)+hexLen+1:]; ext {
	case "png", "jpg", "webp", "gif":
		return hash, ext, true
	}
	return "", "", false
}

// ContentTypeForExt returns the media type for a file extension, given with
// or without its leading dot and in any case: the image formats imagegate
// produces or accepts, and JSON for metadata objects. Anything else is
// "application/octet-stream".
func ContentTypeForExt(ext string) string {
	switch strings.ToLower(strings.TrimPrefix(ext, ".")) {
	case "png":
		return "image/png"
	case "jpg", "jpeg":
		return "image/jpeg"
	case "webp":
		return "image/webp"
	case "gif":
		return "image/gif"
	case "json":
		return "application/json"
	}
	return "application/octet-stream"
}
