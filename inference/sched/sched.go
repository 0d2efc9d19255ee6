package sched

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Defaults.
const (
	DefaultMaxAttempts  = 3
	DefaultMaxQueue     = 1000
	DefaultMaxWait      = 5 * time.Minute
	DefaultStallTimeout = 2 * time.Minute
	// defaultCost is the expected run time assumed for a model before any
	// job of it has finished.
	defaultCost = 10 * time.Second
)

// ErrOverloaded marks a job refused at admission; the error is an
// *OverloadError.
var ErrOverloaded = errors.New("sched: overloaded")

// ErrNoWorker means no worker serves the job's model: a configuration
// error, not a busy tier.
var ErrNoWorker = errors.New("sched: no worker serves this model")

// ErrStalled is the cause of an attempt the watchdog ended because it
// reported no progress for Config.StallTimeout.
var ErrStalled = errors.New("sched: attempt stalled")

// OverloadError is a job refused at admission. RetryAfter is when trying
// again is likely to succeed.
type OverloadError struct {
	Reason     string // "queue_full", "class_full", "wait" or "deadline"
	RetryAfter time.Duration
}

func (e *OverloadError) Error() string {
	return fmt.Sprintf("sched: overloaded (%s), retry after %v", e.Reason, e.RetryAfter)
}

// Is makes errors.Is(err, ErrOverloaded) true.
func (e *OverloadError) Is(target error) bool { return target == ErrOverloaded }

// Worker is one place jobs run: a GPU server, or a pool of CPU slots.
type Worker struct {
	// ID is unique among workers and appears in metrics; never a secret.
	ID string
	// Slots is how many jobs it runs at once (at least 1).
	Slots int
	// Models are the models it can run.
	Models []string
}

// Class configures one plan class.
type Class struct {
	// Weight is the class's share of capacity relative to the others
	// (at least 1).
	Weight int
	// MaxQueued caps the class's jobs waiting (0: no cap beyond MaxQueue).
	MaxQueued int
	// MaxRunning caps the class's jobs running at once (0: no cap).
	MaxRunning int
}

// Config configures a Scheduler.
type Config struct {
	Workers []Worker
	// Classes by name. A job naming an unknown class, or none, is in
	// DefaultClass, which must be among them. With no classes at all, one
	// class named "default" of weight 1.
	Classes      map[string]Class
	DefaultClass string
	// MaxQueue caps waiting jobs over all classes. Zero means 1000.
	MaxQueue int
	// MaxWait refuses jobs whose expected wait is longer. Zero means five
	// minutes.
	MaxWait time.Duration
	// MaxAttempts bounds tries of one job, the first included. Zero means 3.
	MaxAttempts int
	// StallTimeout ends an attempt that reports no progress for this long.
	// Zero means two minutes.
	StallTimeout time.Duration
	// Retryable reports whether a failed attempt may be tried again on
	// another worker. Nil means every error is.
	Retryable func(error) bool
	// Observer, when set, is told what happens to jobs (for metrics).
	Observer Observer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Observer receives the scheduler's events. Calls are made without the
// scheduler's lock held but may be concurrent.
type Observer interface {
	// Queued reports the class's queued jobs for model after a change.
	Queued(model, class string, depth int)
	// Started reports a job's wait before an attempt began on worker.
	Started(model, class, worker string, wait time.Duration, attempt int)
	// Finished reports an attempt's run time and outcome.
	Finished(model, class, worker string, run time.Duration, err error)
	// Rejected reports a job refused at admission.
	Rejected(model, class, reason string)
	// Canceled reports a job whose context ended while queued or running.
	Canceled(model, class string, running bool)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	return errors.Join(c.validateWorkers(), c.ValidateQueue())
}

func (c Config) validateWorkers() error {
	var errs []error
	if len(c.Workers) == 0 {
		errs = append(errs, errors.New("sched: no workers"))
	}
	seen := map[string]bool{}
	for i, w := range c.Workers {
		if w.ID == "" {
			errs = append(errs, fmt.Errorf("sched: worker %d has no ID", i))
		}
		if seen[w.ID] {
			errs = append(errs, fmt.Errorf("sched: two workers with ID %q", w.ID))
		}
		seen[w.ID] = true
		if w.Slots < 1 {
			errs = append(errs, fmt.Errorf("sched: worker %q has %d slots", w.ID, w.Slots))
		}
		if len(w.Models) == 0 {
			errs = append(errs, fmt.Errorf("sched: worker %q serves no model", w.ID))
		}
	}
	return errors.Join(errs...)
}

// ValidateQueue checks everything but the workers, for callers that learn
// the workers later.
func (c Config) ValidateQueue() error {
	var errs []error
	for name, cl := range c.Classes {
		if name == "" {
			errs = append(errs, errors.New("sched: a class has no name"))
		}
		if cl.Weight < 1 {
			errs = append(errs, fmt.Errorf("sched: class %q weight %d below 1", name, cl.Weight))
		}
		if cl.MaxQueued < 0 || cl.MaxRunning < 0 {
			errs = append(errs, fmt.Errorf("sched: class %q has a negative cap", name))
		}
	}
	if len(c.Classes) > 0 {
		if _, ok := c.Classes[c.DefaultClass]; !ok {
			errs = append(errs, fmt.Errorf("sched: default class %q is not configured", c.DefaultClass))
		}
	}
	if c.MaxQueue < 0 || c.MaxWait < 0 || c.MaxAttempts < 0 || c.StallTimeout < 0 {
		errs = append(errs, errors.New("sched: negative limit"))
	}
	return errors.Join(errs...)
}

// Job describes one unit of work to the scheduler.
type Job struct {
	Model string
	// Key is the opaque fairness key; jobs with equal keys share one
	// share of their class.
	Key string
	// Class names the plan class; unknown means the default class.
	Class string
	// AdmitBy, when set, refuses the job at admission if its expected
	// wait ends later; otherwise ctx's deadline is used. Set it when the
	// job outlives the caller that asked first (a shared generation).
	AdmitBy time.Time
	// Promote, when set, moves the job while it waits to the class and key
	// of a Job received on it, if that class weighs more than the job's:
	// a shared generation a free caller started is queued as paid once a
	// paid caller waits for it too. Model and the rest are ignored.
	Promote <-chan Job
}

// Attempt is what one try of a job gets: the worker chosen and a function
// to call on every sign of progress, which keeps the watchdog away.
type Attempt struct {
	Worker string
	Number int // 1 for the first try
	Beat   func()
}

// Scheduler queues jobs and runs them on workers. It is safe for
// concurrent use.
type Scheduler struct {
	cfg Config
	now func() time.Time

	mu      sync.Mutex
	classes map[string]*class
	workers []*worker
	queued  int
	vtime   float64 // pass of the class dispatched last
	cost    map[string]float64
	// capacity by model: total slots of the workers serving it.
	capacity map[string]int
	running  map[*waiter]struct{}
}

type class struct {
	name    string
	cfg     Class
	pass    float64
	vtime   float64 // pass of the key dispatched last
	keys    map[string]*flow
	backlog backlog // flows with jobs waiting, lowest pass first
	queued  int
	byModel map[string]int // queued jobs by model
	running int
}

// flow is one fairness key's queue within a class.
type flow struct {
	key   string
	pass  float64
	queue []*waiter
	idx   int // in the class's backlog, or -1
	// joinPass is pass when the flow last (re)joined; a flow still at it
	// has been charged nothing since.
	joinPass float64
	running  int // its jobs running now
}

type worker struct {
	Worker
	serves   map[string]bool
	busy     int
	loaded   string // model of the last job started here
	failures int    // consecutive failed attempts
}

// waiter is a job in the queue.
type waiter struct {
	job      Job
	class    *class
	flow     *flow
	since    time.Time
	attempt  int
	excluded map[string]bool
	ready    chan *worker // receives the worker once dispatched; buffered
	charged  float64      // cost charged at dispatch, corrected at release
	// Passes of the class and flow when the job was dispatched.
	classStart, flowStart float64
}

// New returns a scheduler for cfg.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Classes) == 0 {
		cfg.Classes = map[string]Class{"default": {Weight: 1}}
		cfg.DefaultClass = "default"
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = DefaultMaxQueue
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.Retryable == nil {
		cfg.Retryable = func(error) bool { return true }
	}
	s := &Scheduler{
		cfg:      cfg,
		now:      cfg.Now,
		classes:  map[string]*class{},
		cost:     map[string]float64{},
		capacity: map[string]int{},
		running:  map[*waiter]struct{}{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	for name, c := range cfg.Classes {
		s.classes[name] = &class{name: name, cfg: c, keys: map[string]*flow{}, byModel: map[string]int{}}
	}
	for _, w := range cfg.Workers {
		ws := &worker{Worker: w, serves: map[string]bool{}}
		for _, m := range w.Models {
			if !ws.serves[m] {
				ws.serves[m] = true
				s.capacity[m] += w.Slots
			}
		}
		s.workers = append(s.workers, ws)
	}
	return s, nil
}

// ClassOf returns the class a job naming name belongs to.
func (s *Scheduler) ClassOf(name string) string {
	if _, ok := s.classes[name]; ok {
		return name
	}
	return s.cfg.DefaultClass
}

// Do admits job, waits for its turn and runs fn on a worker, retrying on
// another worker when fn fails retryably, up to the attempt cap. ctx bounds
// the whole job, waiting included; fn's context also ends when the watchdog
// finds the attempt stalled. Refusals at admission are *OverloadError.
func (s *Scheduler) Do(ctx context.Context, job Job, fn func(ctx context.Context, a Attempt) error) error {
	job.Class = s.ClassOf(job.Class)
	w, err := s.admit(ctx, job)
	if err != nil {
		return err
	}
	for {
		wk, err := s.wait(ctx, w)
		if err != nil {
			return err
		}
		job = w.job // promotion may have moved it
		began := s.now()
		s.observe(func(o Observer) { o.Started(job.Model, job.Class, wk.ID, began.Sub(w.since), w.attempt) })
		err = s.runAttempt(ctx, wk, w.attempt, fn)
		run := s.now().Sub(began)
		s.release(wk, w, run, err, ctx.Err() == nil)
		s.observe(func(o Observer) { o.Finished(job.Model, job.Class, wk.ID, run, err) })
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			s.observe(func(o Observer) { o.Canceled(job.Model, job.Class, true) })
			return fmt.Errorf("sched: %w (last attempt: %w)", ctx.Err(), err)
		}
		if w.attempt >= s.cfg.MaxAttempts || !s.cfg.Retryable(err) {
			return err
		}
		s.requeue(w, wk.ID)
	}
}

// runAttempt runs fn under a watchdog: the attempt's context ends if Beat
// is not called for StallTimeout.
func (s *Scheduler) runAttempt(ctx context.Context, wk *worker, n int, fn func(context.Context, Attempt) error) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	dog := time.AfterFunc(s.cfg.StallTimeout, func() { cancel(ErrStalled) })
	defer dog.Stop()
	err := fn(actx, Attempt{Worker: wk.ID, Number: n, Beat: func() { dog.Reset(s.cfg.StallTimeout) }})
	if err != nil && errors.Is(context.Cause(actx), ErrStalled) {
		return fmt.Errorf("%w: %w", ErrStalled, err)
	}
	return err
}

// admit queues job or refuses it.
func (s *Scheduler) admit(ctx context.Context, job Job) (*waiter, error) {
	s.mu.Lock()
	cl := s.classes[job.Class]
	if s.capacity[job.Model] == 0 {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNoWorker, job.Model)
	}
	wait := s.expectedWaitLocked(cl, job.Model)
	reason := ""
	switch {
	case s.queued >= s.cfg.MaxQueue:
		reason = "queue_full"
	case cl.cfg.MaxQueued > 0 && cl.queued >= cl.cfg.MaxQueued:
		reason = "class_full"
	case wait > s.cfg.MaxWait:
		reason = "wait"
	}
	deadline, ok := ctx.Deadline()
	if !job.AdmitBy.IsZero() && (!ok || job.AdmitBy.Before(deadline)) {
		deadline, ok = job.AdmitBy, true
	}
	if ok && reason == "" && s.now().Add(wait).After(deadline) {
		reason = "deadline"
	}
	if reason != "" {
		s.mu.Unlock()
		s.observe(func(o Observer) { o.Rejected(job.Model, job.Class, reason) })
		return nil, &OverloadError{Reason: reason, RetryAfter: max(time.Second, wait.Round(time.Second))}
	}
	w := &waiter{job: job, class: cl, since: s.now(), attempt: 1, ready: make(chan *worker, 1)}
	s.enqueueLocked(w, false)
	s.dispatchLocked()
	depth := cl.byModel[job.Model]
	s.mu.Unlock()
	s.observe(func(o Observer) { o.Queued(job.Model, job.Class, depth) })
	return w, nil
}

// expectedWaitLocked estimates how long a new job of model in cl waits:
// the class's jobs ahead of it for that model, served at the class's
// weighted share of the model's slots, at the model's mean run time.
func (s *Scheduler) expectedWaitLocked(cl *class, model string) time.Duration {
	ahead := cl.byModel[model]
	if ahead == 0 && s.freeSlotsLocked(model) > 0 {
		return 0
	}
	total := cl.cfg.Weight
	for _, other := range s.classes {
		if other != cl && other.queued > 0 {
			total += other.cfg.Weight
		}
	}
	share := float64(cl.cfg.Weight) / float64(total)
	slots := float64(s.capacity[model]) * share
	secs := float64(ahead+1) * s.costLocked(model) / slots
	return time.Duration(secs * float64(time.Second))
}

func (s *Scheduler) freeSlotsLocked(model string) int {
	n := 0
	for _, w := range s.workers {
		if w.serves[model] {
			n += w.Slots - w.busy
		}
	}
	return n
}

// costLocked is the model's expected run time in seconds: a moving average
// of finished attempts.
func (s *Scheduler) costLocked(model string) float64 {
	if c, ok := s.cost[model]; ok {
		return c
	}
	return defaultCost.Seconds()
}

// enqueueLocked adds w to its flow, at the front when it is a retry (a
// retried job keeps its place).
func (s *Scheduler) enqueueLocked(w *waiter, front bool) {
	cl := w.class
	f := cl.keys[w.job.Key]
	if f == nil {
		f = &flow{key: w.job.Key, idx: -1} // its pass is raised to the floor just below
		cl.keys[w.job.Key] = f
		cl.sweep()
	}
	if len(f.queue) == 0 {
		// A flow rejoining after idling starts no lower than the flows
		// waiting now (or, with none, the last one served): idle time
		// banks no credit.
		f.pass = max(f.pass, s.flowFloorLocked(cl))
		f.joinPass = f.pass
	}
	if cl.queued == 0 {
		cl.pass = max(cl.pass, s.classFloorLocked())
	}
	w.flow = f
	if front {
		f.queue = slices.Insert(f.queue, 0, w)
	} else {
		f.queue = append(f.queue, w)
	}
	cl.queued++
	cl.byModel[w.job.Model]++
	s.queued++
	cl.fix(f)
}

// backlog is a min-heap of flows by pass, then key (container/heap).
type backlog []*flow

func (b backlog) Len() int           { return len(b) }
func (b backlog) Less(i, j int) bool { return cmpPass(b[i].pass, b[j].pass, b[i].key, b[j].key) < 0 }
func (b backlog) Swap(i, j int) {
	b[i], b[j] = b[j], b[i]
	b[i].idx, b[j].idx = i, j
}
func (b *backlog) Push(x any) {
	f := x.(*flow)
	f.idx = len(*b)
	*b = append(*b, f)
}
func (b *backlog) Pop() any {
	old := *b
	f := old[len(old)-1]
	old[len(old)-1] = nil
	*b = old[:len(old)-1]
	f.idx = -1
	return f
}

// fix puts f where it belongs in the backlog after its queue or pass
// changed: in order if it has jobs waiting, out otherwise.
func (cl *class) fix(f *flow) {
	switch {
	case f.idx >= 0 && len(f.queue) > 0:
		heap.Fix(&cl.backlog, f.idx)
	case f.idx >= 0:
		heap.Remove(&cl.backlog, f.idx)
	case len(f.queue) > 0:
		heap.Push(&cl.backlog, f)
	}
}

// sweep forgets idle flows that carry no charge beyond the class's pass,
// once the idle outnumber the waiting: amortized, it costs O(1) a new key.
func (cl *class) sweep() {
	if len(cl.keys) < 2*len(cl.backlog)+64 {
		return
	}
	for k, f := range cl.keys {
		if len(f.queue) == 0 && f.running == 0 && f.pass <= cl.vtime {
			delete(cl.keys, k)
		}
	}
}

// classFloorLocked is the scheduler's virtual time: the lowest of the
// passes of classes with jobs waiting and the start passes of jobs
// running, or the start pass of the job dispatched last when there are
// neither. A class rejoining starts there. Taking it from what waits and
// runs now, rather than from the last dispatch alone, keeps it right when
// release corrects an estimated charge.
func (s *Scheduler) classFloorLocked() float64 {
	floor, found := 0.0, false
	lower := func(p float64) {
		if !found || p < floor {
			floor, found = p, true
		}
	}
	for _, cl := range s.classes {
		if cl.queued > 0 {
			lower(cl.pass)
		}
	}
	for w := range s.running {
		lower(w.classStart)
	}
	if !found {
		return s.vtime
	}
	return floor
}

// flowFloorLocked is classFloorLocked within a class, over its flows.
func (s *Scheduler) flowFloorLocked(cl *class) float64 {
	floor, found := 0.0, false
	lower := func(p float64) {
		if !found || p < floor {
			floor, found = p, true
		}
	}
	if len(cl.backlog) > 0 {
		lower(cl.backlog[0].pass)
	}
	for w := range s.running {
		if w.class == cl {
			lower(w.flowStart)
		}
	}
	if !found {
		return cl.vtime
	}
	return floor
}

// removeLocked takes w out of its flow's queue.
func (s *Scheduler) removeLocked(w *waiter) bool {
	f := w.flow
	i := slices.Index(f.queue, w)
	if i < 0 {
		return false
	}
	f.queue = slices.Delete(f.queue, i, i+1)
	w.class.fix(f)
	s.dequeuedLocked(w)
	return true
}

func (s *Scheduler) dequeuedLocked(w *waiter) {
	cl := w.class
	cl.queued--
	cl.byModel[w.job.Model]--
	s.queued--
	s.pruneLocked(cl, w.job.Key, w.flow)
}

// pruneLocked forgets an idle flow that carries no charge a rejoin would
// not give it anyway, so keys seen once do not pile up: one with nothing
// queued or running whose pass is at most the class's, or that was charged
// nothing since it joined.
func (s *Scheduler) pruneLocked(cl *class, key string, f *flow) {
	if len(f.queue) > 0 || f.running > 0 || cl.keys[key] != f {
		return
	}
	if f.pass <= cl.vtime || f.pass == f.joinPass {
		delete(cl.keys, key)
	}
}

// dispatchLocked starts every job that can start now, in fair order.
func (s *Scheduler) dispatchLocked() {
	for {
		w, wk := s.pickLocked()
		if w == nil {
			return
		}
		w.flow.queue = w.flow.queue[1:]
		w.flow.running++ // before dequeuing, so the flow is not pruned
		cost := s.costLocked(w.job.Model)
		cl := w.class
		w.classStart, w.flowStart = cl.pass, w.flow.pass
		s.running[w] = struct{}{}
		s.vtime = cl.pass
		cl.pass += cost / float64(cl.cfg.Weight)
		cl.vtime = w.flow.pass
		w.flow.pass += cost
		w.charged = cost
		cl.fix(w.flow)
		s.dequeuedLocked(w)
		cl.running++
		wk.busy++
		wk.loaded = w.job.Model
		w.ready <- wk
	}
}

// pickLocked returns the next job to start and its worker: among classes
// under their running cap by pass, among their flows by pass, the first
// flow head some worker can take.
func (s *Scheduler) pickLocked() (*waiter, *worker) {
	if s.queued == 0 || !s.anyFreeSlotLocked() {
		return nil, nil
	}
	classes := make([]*class, 0, len(s.classes))
	for _, cl := range s.classes {
		if cl.queued > 0 && (cl.cfg.MaxRunning == 0 || cl.running < cl.cfg.MaxRunning) {
			classes = append(classes, cl)
		}
	}
	slices.SortFunc(classes, func(a, b *class) int { return cmpPass(a.pass, b.pass, a.name, b.name) })
	for _, cl := range classes {
		// Usually the flow with the lowest pass can start; only when its
		// head cannot (no free worker serves its model) are the others
		// tried, in order.
		if len(cl.backlog) == 0 {
			continue
		}
		best := cl.backlog[0]
		if wk := s.workerForLocked(best.queue[0]); wk != nil {
			return best.queue[0], wk
		}
		flows := slices.Clone(cl.backlog[1:])
		slices.SortFunc(flows, func(a, b *flow) int { return cmpPass(a.pass, b.pass, a.key, b.key) })
		for _, f := range flows {
			if wk := s.workerForLocked(f.queue[0]); wk != nil {
				return f.queue[0], wk
			}
		}
	}
	return nil, nil
}

func (s *Scheduler) anyFreeSlotLocked() bool {
	for _, w := range s.workers {
		if w.busy < w.Slots {
			return true
		}
	}
	return false
}

func cmpPass(a, b float64, an, bn string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	switch {
	case an < bn:
		return -1
	case an > bn:
		return 1
	}
	return 0
}

// workerForLocked picks a worker with a free slot for w: one that serves
// the model and was not excluded by an earlier failed attempt (unless every
// such worker was), preferring no recent failures, then the model loaded,
// then the most free slots.
func (s *Scheduler) workerForLocked(w *waiter) *worker {
	allExcluded := true
	for _, wk := range s.workers {
		if wk.serves[w.job.Model] && !w.excluded[wk.ID] {
			allExcluded = false
			break
		}
	}
	var best *worker
	// Higher is better: no recent failure, then the model loaded (2),
	// nothing loaded (1) over another model that would be evicted (0), then
	// free slots.
	score := func(wk *worker) (int, int, int) {
		healthy, loaded := 0, 0
		if wk.failures == 0 {
			healthy = 1
		}
		switch wk.loaded {
		case w.job.Model:
			loaded = 2
		case "":
			loaded = 1
		}
		return healthy, loaded, wk.Slots - wk.busy
	}
	for _, wk := range s.workers {
		if !wk.serves[w.job.Model] || wk.busy >= wk.Slots || (!allExcluded && w.excluded[wk.ID]) {
			continue
		}
		if best == nil {
			best = wk
			continue
		}
		h1, l1, f1 := score(wk)
		h0, l0, f0 := score(best)
		if h1 > h0 || (h1 == h0 && (l1 > l0 || (l1 == l0 && f1 > f0))) {
			best = wk
		}
	}
	return best
}

// wait blocks until w is dispatched or ctx ends.
func (s *Scheduler) wait(ctx context.Context, w *waiter) (*worker, error) {
	for waiting := true; waiting; {
		select {
		case wk := <-w.ready:
			return wk, nil
		case <-ctx.Done():
			waiting = false
		case p := <-w.job.Promote:
			s.promote(w, p)
		}
	}
	s.mu.Lock()
	removed := s.removeLocked(w)
	depth := w.class.byModel[w.job.Model]
	s.mu.Unlock()
	if !removed {
		// Dispatched as ctx ended: give the slot back.
		wk := <-w.ready
		s.release(wk, w, 0, ctx.Err(), false)
	} else {
		s.observe(func(o Observer) { o.Queued(w.job.Model, w.job.Class, depth) })
	}
	s.observe(func(o Observer) { o.Canceled(w.job.Model, w.job.Class, false) })
	return nil, fmt.Errorf("sched: while queued: %w", ctx.Err())
}

// promote moves a waiting job to p's class and key when that class weighs
// more. A job already dispatched stays as it is.
func (s *Scheduler) promote(w *waiter, p Job) {
	s.mu.Lock()
	to := s.classes[s.ClassOf(p.Class)]
	from := w.class
	if to.cfg.Weight <= from.cfg.Weight || !s.removeLocked(w) {
		s.mu.Unlock()
		return
	}
	w.job.Class, w.job.Key = to.name, p.Key
	w.class = to
	s.enqueueLocked(w, false)
	s.dispatchLocked()
	fromDepth, toDepth := from.byModel[w.job.Model], to.byModel[w.job.Model]
	s.mu.Unlock()
	s.observe(func(o Observer) {
		o.Queued(w.job.Model, from.name, fromDepth)
		o.Queued(w.job.Model, to.name, toDepth)
	})
}

// Weight returns the weight of the class a job naming class belongs to.
func (s *Scheduler) Weight(class string) int {
	return s.classes[s.ClassOf(class)].cfg.Weight
}

// release frees wk's slot and dispatches what can start. attempted says
// whether an attempt ran there (its outcome then counts for the worker).
//
// Dispatch charged the job's expected cost; here the charge is corrected
// to the time the attempt actually held the slot, so shares are in
// worker-seconds used, whatever the models cost.
func (s *Scheduler) release(wk *worker, w *waiter, run time.Duration, err error, attempted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	job := w.job
	delete(s.running, w)
	w.flow.running--
	defer s.pruneLocked(w.class, job.Key, w.flow)
	wk.busy--
	w.class.running--
	delta := run.Seconds() - w.charged
	w.flow.pass += delta
	w.class.fix(w.flow)
	w.class.pass += delta / float64(w.class.cfg.Weight)
	w.charged = 0
	switch {
	case err == nil:
		wk.failures = 0
		// Exponential moving average of successful run times.
		secs := run.Seconds()
		if old, ok := s.cost[job.Model]; ok {
			secs = 0.8*old + 0.2*secs
		}
		s.cost[job.Model] = math.Max(secs, 1e-6)
	case attempted:
		wk.failures++
	}
	s.dispatchLocked()
}

// requeue puts a job whose attempt failed on wk back at the front of its
// flow, to be tried elsewhere.
func (s *Scheduler) requeue(w *waiter, failed string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.excluded == nil {
		w.excluded = map[string]bool{}
	}
	w.excluded[failed] = true
	w.attempt++
	w.ready = make(chan *worker, 1)
	s.enqueueLocked(w, true)
	s.dispatchLocked()
}

// Stats is a snapshot of the scheduler.
type Stats struct {
	Queued  int
	Running int
}

// Stats returns the queued and running job counts.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Queued: s.queued}
	for _, cl := range s.classes {
		st.Running += cl.running
	}
	return st
}

func (s *Scheduler) observe(f func(Observer)) {
	if s.cfg.Observer != nil {
		f(s.cfg.Observer)
	}
}
