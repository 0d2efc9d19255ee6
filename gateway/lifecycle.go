package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/edge"
	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/store"
)

// lifecycleStore is the data layer's side of retention and erasure.
type lifecycleStore interface {
	ExpireOutputs(batch int) (int, error)
	DoomedObjects(after string, limit int) ([]store.DoomedObject, error)
	ObjectReferenced(hash string) (bool, error)
	PendingObject(hash, ext, model, version, contentKey string, until time.Time) error
	ObjectDeleted(hash string) error
	ClaimDoomed(hash string) (bool, error)
	DoomedGone(hash string) error
	ObjectOwners(hash string) ([]string, error)
	BeginErasure(accountID, reason string) (store.ErasureJob, error)
	PendingErasures() ([]store.ErasureJob, error)
	EraseStep(accountID string, batch int) (bool, error)
	ErasureEmail(accountID string) (string, error)
	MarkErasureMailed(accountID string) error
	FinishErasure(accountID string) error
}

// lifecycleStats counts what the lifecycle worker removed since start; the
// metrics export them.
type lifecycleStats struct {
	referencesExpired atomic.Uint64
	objectsDeleted    atomic.Uint64
	accountsErased    atomic.Uint64
	failures          atomic.Uint64
}

// lifecycle runs the work that makes retention and erasure true
// everywhere data lives (promises C3, R3): it expires references past
// their plan's retention, deletes outputs nobody references from the
// object store, every gateway's tiers and the CDN, and carries erasure
// jobs to the end. Every step is durable in the store, so a process that
// dies midway resumes where it stopped.
type lifecycle struct {
	mu    sync.Mutex // one pass at a time
	kick  chan struct{}
	stats lifecycleStats

	// gate orders hit references against the reaper: while reaping is
	// set, hits record their reference before answering (see remember),
	// and the reaper sets it under the write lock, so every hit that chose
	// the queue instead has queued before the reaper flushes the queue
	// and claims. deleting is held from a claim until the output's bytes
	// are gone, and by every reference made while reaping, so a request
	// never meets an output half deleted by this node.
	gate     sync.RWMutex
	reaping  bool
	deleting sync.Mutex

	// hook, for tests only, is called at each step of a reap with the
	// output's hash, to force interleavings.
	hook atomic.Pointer[func(step, hash string)]
}

// Steps of a reap that lifecycle.hook sees.
const (
	reapStepBeforeClaim = "before-claim"
	reapStepClaimed     = "claimed"
	reapStepGone        = "gone"
	// reapStepReferencing is a request about to reference an output
	// while a reap is under way.
	reapStepReferencing = "referencing"
)

func (l *lifecycle) step(step, hash string) {
	if h := l.hook.Load(); h != nil {
		(*h)(step, hash)
	}
}

// setReaping switches hits between queued and immediate references.
func (l *lifecycle) setReaping(on bool) {
	l.gate.Lock()
	l.reaping = on
	l.gate.Unlock()
}

func newLifecycle() *lifecycle { return &lifecycle{kick: make(chan struct{}, 1)} }

// wake asks for a pass soon (after an erasure request).
func (l *lifecycle) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// runLifecycle passes every interval, and when woken, until ctx ends.
func (g *Gateway) runLifecycle(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := g.LifecyclePass(ctx); err != nil && ctx.Err() == nil {
			g.logger.Error("lifecycle pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.life.kick:
		}
	}
}

// LifecyclePass does one round of retention and erasure work now:
// expiring references, finishing erasures, deleting unreferenced outputs.
// Tests call it instead of waiting for the ticker.
func (g *Gateway) LifecyclePass(ctx context.Context) error {
	g.life.mu.Lock()
	defer g.life.mu.Unlock()
	var errs []error
	for {
		n, err := g.store.ExpireOutputs(500)
		g.life.stats.referencesExpired.Add(uint64(n))
		if err != nil {
			errs = append(errs, err)
			break
		}
		if n < 500 {
			break
		}
	}
	jobs, err := g.store.PendingErasures()
	errs = append(errs, err)
	// Erase every job's data first, then delete what that left without
	// owners, and only then tell the account holders it is done.
	var ready []store.ErasureJob
	for _, job := range jobs {
		if ctx.Err() != nil {
			break
		}
		if err := g.eraseData(ctx, job); err != nil {
			errs = append(errs, err)
			continue
		}
		ready = append(ready, job)
	}
	errs = append(errs, g.reap(ctx))
	for _, job := range ready {
		errs = append(errs, g.finishErasure(ctx, job))
	}
	err = errors.Join(errs...)
	if err != nil {
		g.life.stats.failures.Add(1)
	}
	return err
}

// erasureBatch is how many generations one erasure step deletes.
const erasureBatch = 200

// eraseData deletes an erasing account's data in steps (its outputs that
// nobody else uses join the deletion queue) and purges its CDN owner tag.
func (g *Gateway) eraseData(ctx context.Context, job store.ErasureJob) error {
	for {
		done, err := g.store.EraseStep(job.AccountID, erasureBatch)
		if err != nil {
			return err
		}
		if done {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if g.purger != nil && g.owners != nil {
		// Every CDN copy tagged with this owner goes; shared outputs are
		// simply fetched again from the origin by whoever still uses them.
		if _, err := g.purger.Purge(ctx, edge.PurgeRequest{Tags: []string{g.owners.Tag(job.AccountID)}}); err != nil {
			return err
		}
	}
	return nil
}

// finishErasure ends a job whose data is gone: the confirmation mail, then
// the account record and its key.
func (g *Gateway) finishErasure(ctx context.Context, job store.ErasureJob) error {
	if !job.Mailed {
		email, err := g.store.ErasureEmail(job.AccountID)
		if err == nil {
			mctx, cancel := context.WithTimeout(ctx, mailTimeout)
			err = g.mail.m.Send(mctx, erasedMail(email))
			cancel()
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err // retried next pass; the mail is part of the job
		}
		if err := g.store.MarkErasureMailed(job.AccountID); err != nil {
			return err
		}
	}
	if err := g.store.FinishErasure(job.AccountID); err != nil {
		return err
	}
	g.life.stats.accountsErased.Add(1)
	return nil
}

func erasedMail(to string) mail.Message {
	return mail.Message{To: to, Category: mail.CategoryAccount, Subject: "Your account has been deleted",
		Text: "Your account and its data have been deleted: your generations and prompts, your consent records, " +
			"security log entries and profile. Your outputs that nobody else uses have been deleted from our storage " +
			"and caches and purged from our CDN; a copy a cache somewhere could not yet drop is retried until it is. " +
			"What the law requires us to keep (payment records for accounting) is kept without your name or " +
			"address.\n\nThis is the last email you will receive from us.\n"}
}

// reapBatch is how many queued outputs one round of reap handles.
const reapBatch = 100

// reap deletes outputs nobody references: from the object store shared by
// every gateway (with their cache manifests), from this node's tiers and
// every peer's, and from the CDN. An output leaves the queue only when
// every part succeeded; it pages through the whole queue, so outputs whose
// deletion keeps failing (a peer down) never hold up the others, and are
// tried again next pass.
func (g *Gateway) reap(ctx context.Context) error {
	var errs []error
	after := ""
	for ctx.Err() == nil {
		doomed, err := g.store.DoomedObjects(after, reapBatch)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		if len(doomed) == 0 {
			return errors.Join(errs...)
		}
		after = doomed[len(doomed)-1].Hash
		errs = append(errs, g.reapBatch(ctx, doomed))
		if len(doomed) < reapBatch {
			return errors.Join(errs...)
		}
	}
	return errors.Join(append(errs, ctx.Err())...)
}

func (g *Gateway) reapBatch(ctx context.Context, doomed []store.DoomedObject) error {
	var errs []error
	var hashes []string
	cdn := edge.PurgeRequest{}
	// From here on hits reference synchronously; those queued before now
	// reach the store before any claim.
	g.life.setReaping(true)
	defer g.life.setReaping(false)
	g.history.flush()
	for _, d := range doomed {
		g.life.step(reapStepBeforeClaim, d.Hash)
		err := g.reapOne(ctx, d)
		if errors.Is(err, errStillUsed) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hashes = append(hashes, d.Hash)
		cdn.Tags = append(cdn.Tags, edge.ObjectTag(d.Hash))
		if g.cfg.CDNURL != "" {
			cdn.URLs = append(cdn.URLs, edge.OutputURL(g.cfg.CDNURL, d.Hash, d.Ext))
		}
	}
	if len(hashes) == 0 {
		return errors.Join(errs...)
	}
	ok := true
	for _, n := range g.peers.invalidate(ctx, purgeJSON{Objects: hashes}) {
		if !n.OK {
			ok = false
			errs = append(errs, errors.New("peer "+n.Node+": "+n.Error))
		}
	}
	if g.purger != nil {
		if rep, err := g.purger.Purge(ctx, cdn); err != nil || len(rep.Failed()) > 0 {
			ok = false
			errs = append(errs, errors.Join(err, errors.New("CDN purge incomplete")))
		}
	}
	if !ok {
		return errors.Join(errs...)
	}
	for _, h := range hashes {
		if err := g.store.ObjectDeleted(h); err != nil {
			return errors.Join(append(errs, err)...)
		}
		g.life.stats.objectsDeleted.Add(1)
	}
	return errors.Join(errs...)
}

// errStillUsed reports an output referenced again before its claim: the
// reference won and the output stays.
var errStillUsed = errors.New("gateway: output referenced again")

// reapOne claims an output and deletes it from the object store and this
// node's tiers. The claim and the deletion happen under life.deleting, so
// no reference made on this node sees an output half deleted: it either
// committed before the claim (and the output stays) or comes after the
// bytes are gone (and its request generates them again).
func (g *Gateway) reapOne(ctx context.Context, d store.DoomedObject) error {
	g.life.deleting.Lock()
	defer g.life.deleting.Unlock()
	claimed, err := g.store.ClaimDoomed(d.Hash)
	if err != nil {
		return err // unknown: leave it queued
	}
	if !claimed {
		return errStillUsed
	}
	g.life.step(reapStepClaimed, d.Hash)
	if err := g.deleteStored(ctx, d); err != nil {
		return err // still claimed: the next pass deletes again
	}
	g.tags.forget(d.Hash)
	if err := g.cache.InvalidateObject(d.Hash); err != nil {
		return err
	}
	if err := g.store.DoomedGone(d.Hash); err != nil {
		return err
	}
	g.life.step(reapStepGone, d.Hash)
	return nil
}

// deleteStored removes an output and its cache manifests from the object
// store.
func (g *Gateway) deleteStored(ctx context.Context, d store.DoomedObject) error {
	if err := g.objects.Delete(ctx, edge.OutputName(d.Hash, d.Ext)); err != nil {
		return err
	}
	// Manifests go too: they would only be misses, but nothing of an
	// erased account's requests should outlive it.
	var errs []error
	for _, k := range d.Keys {
		errs = append(errs, g.objects.Delete(ctx, cache.ManifestName(k)))
	}
	return errors.Join(errs...)
}
