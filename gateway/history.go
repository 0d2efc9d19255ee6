package gateway

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/store"
)

// historyStore records who uses which output, and for how long to keep it.
type historyStore interface {
	RecordGeneration(accountID string, g store.Generation, retention time.Duration) (store.Generation, bool, error)
	TouchAnonymousOutput(hash, ext, model, version, contentKey string, retention time.Duration) error
	Generations(accountID string, fn func(store.Generation) error) error
	DeleteGeneration(accountID, genID string) error
}

// historyItem is one image served to someone.
type historyItem struct {
	accountID string // "" for visitors without an account
	gen       store.Generation
	retention time.Duration
	flushed   chan struct{} // set only on flush markers
}

// historian keeps each account's generation history and, for every output
// served, the reference that keeps it for the plan's retention (promise
// C3). Outputs nobody references any more are deleted by the reaper.
//
// A miss is recorded before the response, so an output never exists
// unreferenced. A hit is recorded off the request path (the output is
// referenced already); when the queue is full the request writes itself,
// so nothing is dropped.
type historian struct {
	st     historyStore
	queue  chan historyItem
	logger interface{ Error(string, ...any) }
	wg     sync.WaitGroup
	now    func() time.Time

	// qmu guards sends against close: after close, items are written by
	// the caller instead of sent on the closed queue.
	qmu    sync.RWMutex
	closed bool

	// recent remembers what was recorded lately, so a popular hit neither
	// wakes the worker nor reaches the store before its record needs
	// renewing (the store renews at most hourly anyway).
	mu     sync.RWMutex
	recent map[recentKey]time.Time
}

// recentKey names one recorded item: who was served which content key.
// Two strings, not one concatenated, so a hit builds no key string.
type recentKey struct{ account, content string }

// historyRenewEvery is how long a recorded item is not recorded again.
const historyRenewEvery = 30 * time.Minute

// maxRecent bounds the recent-records memory; it is emptied when full.
const maxRecent = 1 << 16

func newHistorian(st historyStore, logger interface{ Error(string, ...any) }, now func() time.Time) *historian {
	h := &historian{st: st, queue: make(chan historyItem, 4096), logger: logger, recent: map[recentKey]time.Time{}, now: now}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for it := range h.queue {
			if it.flushed != nil {
				close(it.flushed)
				continue
			}
			h.write(it)
		}
	}()
	return h
}

// fresh reports whether it was recorded within historyRenewEvery, and if
// not, notes that it is being recorded now.
func (h *historian) fresh(it historyItem) bool { return h.freshAt(it, h.now()) }

// freshAt is fresh at now, h's clock read by the caller.
func (h *historian) freshAt(it historyItem, now time.Time) bool {
	k := recentKey{it.accountID, it.gen.ContentKey}
	// Mostly fresh (a popular hit): a shared lock, so hits on both cores
	// do not queue for each other.
	h.mu.RLock()
	last, ok := h.recent[k]
	h.mu.RUnlock()
	if ok && now.Sub(last) < historyRenewEvery {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if last, ok := h.recent[k]; ok && now.Sub(last) < historyRenewEvery {
		return true
	}
	if len(h.recent) >= maxRecent {
		clear(h.recent)
	}
	h.recent[k] = now
	return false
}

// enqueue hands it to the worker, or writes it here when the queue is
// full or closed: nothing is dropped.
func (h *historian) enqueue(it historyItem) {
	h.qmu.RLock()
	if !h.closed {
		select {
		case h.queue <- it:
			h.qmu.RUnlock()
			return
		default:
		}
	}
	h.qmu.RUnlock()
	h.write(it)
}

// flush returns once everything queued before it was written.
func (h *historian) flush() {
	done := make(chan struct{})
	h.qmu.RLock()
	if h.closed {
		h.qmu.RUnlock()
		return // close wrote everything
	}
	h.queue <- historyItem{flushed: done}
	h.qmu.RUnlock()
	<-done
}

// forget drops it from the recent records, so it is recorded again.
func (h *historian) forget(it historyItem) {
	h.mu.Lock()
	delete(h.recent, recentKey{it.accountID, it.gen.ContentKey})
	h.mu.Unlock()
}

// close stops the worker after it has written everything queued.
func (h *historian) close() {
	h.qmu.Lock()
	if !h.closed {
		h.closed = true
		close(h.queue)
	}
	h.qmu.Unlock()
	h.wg.Wait()
}

// write records it; the error is logged, and returned only when it says
// the output is being deleted (store.ErrOutputGone).
func (h *historian) write(it historyItem) error {
	var err error
	if it.accountID == "" {
		err = h.st.TouchAnonymousOutput(it.gen.Object, it.gen.Ext, it.gen.Model, it.gen.ModelVersion, it.gen.ContentKey, it.retention)
	} else {
		_, _, err = h.st.RecordGeneration(it.accountID, it.gen, it.retention)
	}
	switch {
	case errors.Is(err, store.ErrOutputGone):
		// Only a reference queued on another node, or before its reap,
		// gets here: the request that made it already answered.
		h.forget(it)
		return err
	case err != nil && !errors.Is(err, store.ErrAccountInactive):
		h.logger.Error("generation not recorded", "err", err)
	}
	return nil
}

// remember records that py was served e for request p.
//
// It returns store.ErrOutputGone only for a hit on an output a reaper on
// this node has begun deleting: the caller must generate it again.
// The latency recorded is the time since start, read only when a record
// is written (a popular hit's record is fresh and costs no clock read).
func (g *Gateway) remember(py payer, p params, key string, e cache.Entry, o cache.Outcome, start time.Time) error {
	return g.rememberAt(py, p, key, e, o, start, time.Time{})
}

// rememberAt is remember for a hit at now (g.now() read by the caller;
// zero: read here).
func (g *Gateway) rememberAt(py payer, p params, key string, e cache.Entry, o cache.Outcome, start, now time.Time) error {
	it := historyItem{
		accountID: py.accountID,
		retention: time.Duration(py.plan.RetentionDays) * 24 * time.Hour,
		gen: store.Generation{
			Prompt: p.Prompt, NegativePrompt: p.NegativePrompt,
			Model: e.Model, ModelVersion: e.ModelVersion, Width: e.Width, Height: e.Height, Seed: e.Seed,
			Steps: p.Steps, Guidance: p.Guidance, Style: p.Style,
			Edit: p.Reference != nil, Strength: p.Strength, Private: p.Private || p.Reference != nil,
			Object: e.Object, Ext: e.Ext, ContentKey: key,
			Cached: o.Tier != cache.TierMiss,
		},
	}
	if !it.gen.Edit {
		it.gen.Strength = 0
	}
	if o.Tier == cache.TierMiss {
		it.gen.LatencyMS = time.Since(start).Milliseconds()
		g.history.write(it)
		g.history.fresh(it)
		return nil
	}
	g.life.gate.RLock()
	if !g.life.reaping {
		// The common case: the output is referenced already, so the
		// reference is renewed off the request path.
		if now.IsZero() {
			now = g.history.now()
		}
		if !g.history.freshAt(it, now) {
			it.gen.LatencyMS = time.Since(start).Milliseconds()
			g.history.enqueue(it)
		}
		g.life.gate.RUnlock()
		return nil
	}
	g.life.gate.RUnlock()
	g.life.step(reapStepReferencing, e.Object)
	// A reap is under way, and this output may be the one going: record
	// the reference before answering, so the reaper's claim sees it, or
	// learn that the bytes are gone and generate them again.
	g.life.deleting.Lock()
	var err error
	if k, perr := cache.ParseKey(key); perr == nil && !g.stillCached(k, e) {
		// Dropped from the tiers since it was found: the reaper deleted
		// it (and may have finished). Referencing it would keep a link to
		// nothing.
		err = store.ErrOutputGone
	} else {
		it.gen.LatencyMS = time.Since(start).Milliseconds()
		err = g.history.write(it)
	}
	g.life.deleting.Unlock()
	if err != nil {
		return err
	}
	g.history.fresh(it)
	return nil
}

// stillCached reports whether this node's tiers still map k to e's output.
func (g *Gateway) stillCached(k cache.Key, e cache.Entry) bool {
	now, _, ok := g.cache.Peek(k)
	return ok && now.Object == e.Object
}

// parseHistoryQuery reads ?limit= (1–100, default 50) and ?before= (a
// generation id, or empty) of the history route. before is copied: it
// outlives the request's buffers.
func parseHistoryQuery(limit, before string) (int, string, error) {
	n := 50
	if limit != "" {
		v, err := strconv.Atoi(limit)
		if err != nil || v < 1 || v > 100 {
			return 0, "", badRequest("invalid_limit", "limit: a number from 1 to 100")
		}
		n = v
	}
	if len(before) > 64 || !utf8.ValidString(before) || strings.ContainsFunc(before, unicode.IsControl) {
		return 0, "", badRequest("invalid_before", "before: a generation id")
	}
	return n, strings.Clone(before), nil
}

// historyEntryJSON is one entry of GET /v1/account/generations.
type historyEntryJSON struct {
	store.Generation
	URL string `json:"url"`
}

// listGenerations returns the signed-in account's history, newest first,
// with fresh signed links: ?limit= (1–100, default 50) and ?before=<id>.
func (g *Gateway) listGenerations(c *fiber.Ctx) error {
	limit, before, err := parseHistoryQuery(c.Query("limit"), c.Query("before"))
	if err != nil {
		return err
	}
	var all []store.Generation
	err = g.store.Generations(principalOf(c).account.ID, func(gen store.Generation) error {
		if before == "" || gen.ID < before {
			all = append(all, gen)
		}
		return nil
	})
	if err != nil {
		return err
	}
	base := g.baseURL(c)
	out := make([]historyEntryJSON, 0, limit)
	for i := len(all) - 1; i >= 0 && len(out) < limit; i-- {
		gen := all[i]
		out = append(out, historyEntryJSON{Generation: gen, URL: base + g.signer.Sign("/o/"+gen.Object+"."+gen.Ext)})
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"data": out, "has_more": len(all) > len(out)})
}

// deleteGeneration removes one entry of the account's history; its output
// goes when nobody else uses it.
func (g *Gateway) deleteGeneration(c *fiber.Ctx) error {
	id := strings.Clone(c.Params("id"))
	err := g.store.DeleteGeneration(principalOf(c).account.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such generation"}
	}
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
