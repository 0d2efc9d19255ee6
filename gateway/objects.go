package gateway

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"
	"github.com/valyala/fasthttp"

	"github.com/imagegate/imagegate/edge"
)

// object serves GET /o/<sha256>.<ext>?verify=<token>. The bytes behind a
// content-addressed name never change, so they are cached forever by every
// tier between us and the visitor; the signature is checked first so that
// an unsigned or expired link gets nothing, not even a 404 that would
// confirm the object exists.
func (g *Gateway) object(c *fiber.Ctx) error {
	path := c.Path()
	// Verify keeps nothing of the query: it may read the request's bytes.
	if err := g.signer.Verify(path, utils.UnsafeString(c.Request().URI().QueryString())); err != nil {
		msg := "link signature is invalid"
		if errors.Is(err, edge.ErrSignatureExpired) {
			msg = "link has expired; request the image again for a fresh link"
		} else if errors.Is(err, edge.ErrSignatureMissing) {
			msg = "link is not signed"
		}
		return &apiError{Status: fiber.StatusForbidden, Type: "invalid_request_error", Code: "invalid_signature", Msg: msg}
	}
	hash, ext, ok := edge.ParseOutputPath(path)
	if !ok {
		return fiber.ErrNotFound
	}
	var etagBuf [80]byte
	etag := objectETag(&etagBuf, hash)
	h := &c.Response().Header
	if inm := c.Request().Header.Peek(fiber.HeaderIfNoneMatch); bytes.Equal(inm, etag) ||
		(len(inm) == len(etag)+2 && inm[0] == 'W' && inm[1] == '/' && bytes.Equal(inm[2:], etag)) {
		setObjectValidators(h, etag)
		return c.SendStatus(fiber.StatusNotModified)
	}
	data, ok := g.cache.PeekObject(hash, ext)
	if !ok {
		// Not in memory: the object store may take time, so bound it.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		data, err = g.cache.Object(ctx, hash, ext)
		cancel()
		if errors.Is(err, fs.ErrNotExist) {
			return fiber.ErrNotFound
		}
		if err != nil {
			return err
		}
	}
	g.setObjectHeaders(h, hash, ext, etag)
	// The slice is shared with the L1 cache and never mutated.
	c.Response().SetBodyRaw(data)
	return nil
}

// objectETag is the ETag of the output named hash ("<hash>"), in buf.
func objectETag(buf *[80]byte, hash string) []byte {
	return append(append(append(buf[:0], '"'), hash...), '"')
}

// setObjectValidators sets what a 304 for an output carries: its
// forever-caching Cache-Control and its ETag.
func setObjectValidators(h *fasthttp.ResponseHeader, etag []byte) {
	h.SetCanonical(headerCacheControl, outputCacheControl)
	h.SetCanonical(headerETag, etag)
}

// setObjectHeaders sets the headers of an output's bytes, set only once
// the bytes are in hand, so that no error is cached for a year: its
// validators, its type and its CDN purge tags.
func (g *Gateway) setObjectHeaders(h *fasthttp.ResponseHeader, hash, ext string, etag []byte) {
	setObjectValidators(h, etag)
	h.SetContentType(edge.ContentTypeForExt(ext))
	h.SetCanonical(headerCacheTag, utils.UnsafeBytes(g.cacheTags(hash))) // copied by SetCanonical
}

// Header names and values of the object route, as bytes in fasthttp's
// normal form.
var (
	headerETag         = []byte("Etag") // fiber.HeaderETag, normalised
	headerCacheTag     = []byte("Cache-Tag")
	outputCacheControl = []byte(edge.OutputCacheControl)
)

// maxOwnerTags bounds the owner tags on one output, keeping Cache-Tag far
// under Cloudflare's 16 KB; outputs are also purged by URL and object tag
// when their owners go, so a missing owner tag loses nothing.
const maxOwnerTags = 64

// cacheTags names an output for CDN purges (Cache-Tag, comma-separated):
// every output, this object, the model version that made it when known,
// and an opaque tag per account that owns it, so an account's outputs can
// be purged without listing URLs (and without telling the CDN who owns
// them).
func (g *Gateway) cacheTags(hash string) string {
	now := g.now()
	if t, ok := g.tags.get(hash, now); ok {
		return t
	}
	tags := g.computeCacheTags(hash)
	g.tags.put(hash, tags, now)
	return tags
}

func (g *Gateway) computeCacheTags(hash string) string {
	tags := edge.OutputsTag + "," + edge.ObjectTag(hash)
	if model, version, ok := g.cache.ObjectModel(hash); ok {
		tags += "," + edge.ModelTag(model, version)
	}
	if g.owners != nil {
		owners, err := g.store.ObjectOwners(hash)
		if err != nil {
			g.logger.Warn("object owners unreadable", "err", err)
		}
		for i, o := range owners {
			if i == maxOwnerTags {
				break
			}
			tags += "," + g.owners.Tag(o)
		}
	}
	return tags
}

// tagCacheTTL is how long an output's computed Cache-Tag is reused. Owners
// change rarely and a CDN copy made in this window may lack a new owner's
// tag, which loses nothing: outputs are purged by URL and object tag too.
const tagCacheTTL = time.Minute

// tagCache keeps recently computed Cache-Tag values, so serving a popular
// output does not read the store on every request. It is emptied when full.
type tagCache struct {
	mu sync.Mutex
	m  map[string]tagEntry
}

type tagEntry struct {
	tags    string
	expires time.Time
}

const maxTagCache = 1 << 14

func (t *tagCache) get(hash string, now time.Time) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[hash]
	if !ok || now.After(e.expires) {
		return "", false
	}
	return e.tags, true
}

func (t *tagCache) put(hash, tags string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil || len(t.m) >= maxTagCache {
		t.m = make(map[string]tagEntry)
	}
	t.m[hash] = tagEntry{tags, now.Add(tagCacheTTL)}
}

// forget drops an output's tags (it was deleted or purged).
func (t *tagCache) forget(hash string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, hash)
}
