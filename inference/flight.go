package inference

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"sync"

	"github.com/imagegate/imagegate/inference/sched"
)

// progressSteps is how finely progress is reported: a generation announces
// at most progressSteps+1 fractions, however often its backend reports.
const progressSteps = 20

// flightKey identifies identical requests: SHA-256 of the deterministic
// protobuf encoding of the normalized request.
type flightKey [sha256.Size]byte

// flightGroup coalesces identical generations in flight, like
// golang.org/x/sync/singleflight, with two differences the server needs:
// waiters can follow the shared generation's progress, and each waiter
// selects on the flight's done channel with its own context, so leaving
// early never disturbs the others.
type flightGroup struct {
	mu      sync.Mutex
	flights map[flightKey]*flight
	// joined, when set (tests only), runs each time a request joins a
	// flight already in progress.
	joined func()
}

// flight is one shared generation.
type flight struct {
	done chan struct{} // closed once res and err are final
	res  Result
	err  error

	key     flightKey
	waiters int                // callers waiting, guarded by the group's mu
	abandon context.CancelFunc // ends the work when the last waiter leaves
	// promote carries a heavier class to the queued work when a caller of
	// that class joins (sched.Job.Promote); weight is the heaviest so far.
	promote chan sched.Job

	mu       sync.Mutex
	step     int // progress step last announced, -1 before any
	fraction float32
	stage    string
	changed  chan struct{} // closed and replaced on every announcement
	// The backend's latest preview, numbered from 1; waiters get it with
	// the next announcement, so previews cost no more events than
	// progress does.
	previewSeq  int
	previewImg  []byte
	previewType string
	weight      int
}

// do returns the flight in progress for key, or starts one running work in
// a new goroutine. joined reports whether the flight already existed.
// work receives the flight's progress reporter.
//
// work runs under ctx, which the group cancels when every waiter has left
// (see leave): a generation nobody waits for is worth no GPU time, and the
// tier keeps no results.
func (g *flightGroup) do(ctx context.Context, key flightKey, weight int, work func(ctx context.Context, progress ProgressFunc, preview PreviewFunc, promote <-chan sched.Job) (Result, error)) (f *flight, joined bool) {
	g.mu.Lock()
	if f, ok := g.flights[key]; ok {
		f.waiters++
		hook := g.joined
		g.mu.Unlock()
		if hook != nil {
			hook()
		}
		return f, true
	}
	ctx, abandon := context.WithCancel(ctx)
	f = &flight{done: make(chan struct{}), step: -1, changed: make(chan struct{}), key: key, waiters: 1, abandon: abandon,
		promote: make(chan sched.Job, 1), weight: weight}
	if g.flights == nil {
		g.flights = make(map[flightKey]*flight)
	}
	g.flights[key] = f
	g.mu.Unlock()

	go func() {
		defer func() {
			if r := recover(); r != nil {
				f.res, f.err = Result{}, fmt.Errorf("inference: backend panicked: %v", r)
			}
			// Forget the flight before announcing it: a request arriving
			// after this point starts a fresh generation rather than
			// receiving a result that may be an error. An abandoned
			// flight may have been replaced already.
			g.mu.Lock()
			if g.flights[key] == f {
				delete(g.flights, key)
			}
			g.mu.Unlock()
			abandon()
			close(f.done)
		}()
		f.res, f.err = work(ctx, f.report, f.showPreview, f.promote)
	}()
	return f, false
}

// offer queues the flight's work as job's class and key if that class
// (of the given weight) weighs more than any caller's so far.
func (f *flight) offer(job sched.Job, weight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if weight <= f.weight {
		return
	}
	f.weight = weight
	select {
	case <-f.promote: // replaced by the heavier one
	default:
	}
	f.promote <- sched.Job{Class: job.Class, Key: job.Key}
}

// leave records that one waiter of f stopped waiting. When it was the
// last, the flight is forgotten (a request arriving later starts afresh)
// and its work canceled: dequeued if it still waits for a worker,
// interrupted on the GPU if it runs.
func (g *flightGroup) leave(f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	select {
	case <-f.done:
		return // finished: nothing to cancel
	default:
	}
	if g.flights[f.key] == f {
		delete(g.flights, f.key)
	}
	f.abandon()
}

// report is the flight's ProgressFunc. It keeps progress monotonic and
// announces only when the fraction crosses into a new step, so a backend
// reporting every few milliseconds costs waiters at most progressSteps+1
// events.
func (f *flight) report(fraction float32, stage string) {
	if math.IsNaN(float64(fraction)) {
		return
	}
	fraction = min(max(fraction, 0), 1)
	step := int(fraction * progressSteps)
	f.mu.Lock()
	defer f.mu.Unlock()
	if step <= f.step {
		return
	}
	f.step, f.fraction, f.stage = step, fraction, stage
	close(f.changed)
	f.changed = make(chan struct{})
}

// showPreview is the flight's PreviewFunc: it keeps the latest preview.
func (f *flight) showPreview(img []byte, contentType string) {
	if len(img) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.previewSeq++
	f.previewImg, f.previewType = img, contentType
}

// latestPreview returns the latest preview and its number (0: none yet).
func (f *flight) latestPreview() (seq int, img []byte, contentType string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.previewSeq, f.previewImg, f.previewType
}

// progress returns the latest announcement (step -1 before the first) and a
// channel closed at the next one.
func (f *flight) progress() (step int, fraction float32, stage string, changed <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.step, f.fraction, f.stage, f.changed
}
