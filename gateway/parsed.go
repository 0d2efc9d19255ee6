package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/imagegate/imagegate/cache"
)

// parsedGeneration is a generation body decoded, validated and keyed: what
// every request with exactly these bytes would compute again before its
// cache lookup. Only requests whose content keys depend on nothing but
// the body are kept (not private ones, whose keys are scoped to the
// requester): for them decoding, validation, canonicalisation and hashing
// are pure functions of the body and the model catalogue.
type parsedGeneration struct {
	catalog *[]model // the catalogue validated against
	p       params
	// stream and partials are the body's stream and partial_images.
	stream   bool
	partials int
	keys     []cache.Key // one per image, for seeds seed, seed+1, …
	refs     []string    // keys[i].String()
	seed     uint32
	// links[i] is the last signed link path of image i: a hit in the
	// same second reuses it (Sign would make the very same bytes).
	links []atomic.Pointer[signedLink]
	// hit is the hit path's last response body for these bytes.
	hit atomic.Pointer[hitBody]
}

// hitBody is a whole images response body as appendImagesJSON wrote it,
// and what it depends on: a hit in the same second, for the same images,
// host and scheme, is the very same bytes. It is never modified, so it is
// sent without a copy.
type hitBody struct {
	created, issued int64
	scheme, host    string
	objects         [maxImages]string
	seeds           [maxImages]uint64
	body            []byte
}

// signedLink is a signed output path ("/o/<hash>.<ext>?verify=…") and
// what it was signed for.
type signedLink struct {
	issued      int64
	object, ext string
	path        []byte
}

// parsedGenerations remembers the last few thousand distinct bodies, so a
// popular prompt is decoded and hashed once, not on every hit. A hit
// still runs every check that depends on who asks or when (rate limits,
// plan size, moderation, re-judging, quota and history). Entries
// validated against another catalogue than the current one are not used.
type parsedGenerations struct {
	mu sync.RWMutex
	m  map[string]*parsedGeneration
}

// Bounds: bodies longer than maxParsedBody are not kept (real prompts are
// short; a long body would cost more memory than its parse), and the map
// is emptied when it reaches maxParsed.
const (
	maxParsed     = 4096
	maxParsedBody = 2048
)

func (pg *parsedGenerations) get(body []byte, catalog *[]model) *parsedGeneration {
	pg.mu.RLock()
	e := pg.m[string(body)] // no copy: the conversion is only a lookup
	pg.mu.RUnlock()
	if e == nil || e.catalog != catalog {
		return nil
	}
	return e
}

func (pg *parsedGenerations) put(body []byte, e *parsedGeneration) {
	if len(body) > maxParsedBody {
		return
	}
	pg.mu.Lock()
	if pg.m == nil || len(pg.m) >= maxParsed {
		pg.m = make(map[string]*parsedGeneration, 64)
	}
	pg.m[string(body)] = e
	pg.mu.Unlock()
}

// len counts the bodies remembered.
func (pg *parsedGenerations) len() int {
	pg.mu.RLock()
	defer pg.mu.RUnlock()
	return len(pg.m)
}
