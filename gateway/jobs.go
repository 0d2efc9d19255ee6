package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegate/imagegate/store"
)

// jobStore keeps asynchronous jobs, so a gateway restart loses none, and
// leases each unfinished one to one gateway at a time, so that gateways
// sharing a database (PostgreSQL) run it once, and one of them takes over
// the jobs of another that died.
type jobStore interface {
	CreateJob(j store.Job, anonKey []byte) (store.Job, bool, error)
	Job(id string, anonKey []byte) (store.Job, error)
	UpdateJob(id string, fn func(*store.Job) error) (store.Job, error)
	ClaimJobs(ttl time.Duration) ([]store.Job, error)
	RenewJobLeases(ids []string, ttl time.Duration) ([]string, error)
	JobLeaseHolder() string
	SweepJobs(cutoff time.Time) (int, error)
}

// AsyncJobsConfig configures asynchronous generation jobs.
type AsyncJobsConfig struct {
	// After, when set, turns a plain request still waiting for the GPU
	// after this long into a job: it is answered 202 with the job, as if
	// it had asked with Prefer: respond-async, well before a CDN's origin
	// timeout (Cloudflare: 100 s) could cut it. Zero: requests wait up to
	// RequestTimeout instead. Edits are never deferred: their reference
	// image is not kept (promise C2).
	After time.Duration
	// Keep is how long a finished job (its request, prompt included, and
	// its outcome) is kept for its owner to read (24 h).
	Keep time.Duration
	// Lease is how long a gateway holds an unfinished job without
	// renewing its lease (30 s; renewed every third of it). A gateway that
	// dies mid-job has it taken over by another once the lease lapses.
	Lease time.Duration
}

// jobRunner runs the jobs of this gateway and remembers the running ones'
// progress, so /events can stream it.
type jobRunner struct {
	g  *Gateway
	st jobStore
	// outcomes counts jobs by what happened to them: submitted, deferred
	// (a plain request turned job), resumed (after a restart), succeeded,
	// failed, cancelled, requeued (stopped by a shutdown).
	outcomes *prometheus.CounterVec

	mu      sync.Mutex
	running map[string]*runningJob
	wg      sync.WaitGroup
	// ready closes once ResumeJobs made its first pass: from then on the
	// lease loop also claims jobs whose gateway stopped renewing them.
	ready     chan struct{}
	readyOnce sync.Once
}

type runningJob struct {
	watch  *genWatch
	cancel context.CancelCauseFunc // errJobCancelled or errGatewayStopping
	done   chan struct{}
}

func newJobRunner(g *Gateway, st jobStore, reg prometheus.Registerer) (*jobRunner, error) {
	r := &jobRunner{g: g, st: st, running: map[string]*runningJob{}, ready: make(chan struct{}), outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagegate_jobs_total",
		Help: "Asynchronous generation jobs by outcome (submitted, deferred, resumed, succeeded, failed, cancelled, requeued, lease_lost).",
	}, []string{"outcome"})}
	if err := reg.Register(r.outcomes); err != nil {
		return nil, err
	}
	return r, nil
}

// jobJSON is a job as the API shows it.
type jobJSON struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Status  string          `json:"status"`
	Created int64           `json:"created"`
	Token   string          `json:"token,omitempty"` // once, to an anonymous creator
	Result  *imagesResponse `json:"result,omitempty"`
	Error   *errorDetail    `json:"error,omitempty"`
}

const jobTokenPrefix = "igjt_"

// jobKeys derives what an anonymous job's token unlocks: the hash it is
// checked by and the key its request is sealed with.
func jobKeys(token string) (hash, sealKey []byte) {
	h := sha256.Sum256([]byte("imagegate job token\x00" + token))
	k := sha256.Sum256([]byte("imagegate job seal\x00" + token))
	return h[:], k[:]
}

// wantsAsync reports whether the request asks for a job (RFC 7240
// "Prefer: respond-async"). Without a job store the preference is
// ignored, as RFC 7240 allows.
func (g *Gateway) wantsAsync(c *fiber.Ctx) (bool, error) {
	if g.jobs == nil {
		return false, nil
	}
	for _, v := range c.Request().Header.PeekAll("Prefer") {
		if prefersAsync(string(v)) {
			return true, nil
		}
	}
	return false, nil
}

// prefersAsync reports whether a Prefer header value names respond-async
// among its comma-separated preferences (parameters after ";" ignored).
func prefersAsync(v string) bool {
	for _, pref := range strings.Split(v, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(pref), ";")
		if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
			return true
		}
	}
	return false
}

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// submitJob answers 202 with a job that generates p in the background. A
// retried POST under the same Idempotency-Key gets the same job.
func (g *Gateway) submitJob(c *fiber.Ctx, p params, body []byte, partials int) error {
	py := g.payerOf(c)
	if err := py.checkSize(p.Width, p.Height); err != nil {
		return err
	}
	idem := c.Get("Idempotency-Key")
	if idem != "" && !validIdempotencyKey(idem) {
		return badRequest("invalid_idempotency_key", "Idempotency-Key: 1 to 255 printable ASCII characters")
	}
	if idem != "" && py.accountID == "" {
		// Without an account there is nobody to scope the key to: another
		// visitor sending the same key must not get this job.
		return badRequest("idempotency_needs_account", "Idempotency-Key needs an account or API key")
	}
	if err := g.moderator.CheckPrompt(context.Background(), moderationSubject(py), moderationRequest(p)); err != nil {
		return err
	}
	reqHash := sha256.Sum256(body)
	j := store.Job{ID: store.NewJobID(), Owner: py.accountID, Request: append([]byte(nil), body...), RequestHash: reqHash[:], IdemKey: idem}
	var token string
	var sealKey []byte
	if py.accountID == "" {
		var b [32]byte
		rand.Read(b[:])
		token = jobTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
		j.TokenHash, sealKey = jobKeys(token)
	}
	j.LeaseUntil = g.now().Add(g.cfg.AsyncJobs.Lease)
	job, created, err := g.jobs.st.CreateJob(j, sealKey)
	if err != nil {
		return err
	}
	if !created && string(job.RequestHash) != string(reqHash[:]) {
		return &apiError{Status: fiber.StatusUnprocessableEntity, Type: "invalid_request_error", Code: "idempotency_key_reused",
			Msg: "Idempotency-Key was used for a different request"}
	}
	if created {
		g.jobs.outcomes.WithLabelValues("submitted").Inc()
		g.jobs.start(job, p, py, noCache(c.Get(fiber.HeaderCacheControl)), g.baseURL(c), partials)
	}
	c.Set(fiber.HeaderLocation, "/v1/jobs/"+job.ID)
	c.Set(fiber.HeaderCacheControl, "no-store")
	out := g.jobView(context.Background(), job, p.Format, g.baseURL(c))
	out.Token = token
	return c.Status(fiber.StatusAccepted).JSON(out)
}

// recordHolds returns the genWatch.held hook of job id: the run's credit
// holds are written to the job before its images reach the GPU.
func (r *jobRunner) recordHolds(id string) func([]string) {
	return func(ids []string) {
		if _, err := r.st.UpdateJob(id, func(j *store.Job) error { j.Holds = append(j.Holds, ids...); return nil }); err != nil {
			r.g.logger.Warn("job's credit holds not recorded; they expire instead", "job", id, "err", err)
			return
		}
		r.g.logger.Debug("job's credit holds recorded", "job", id, "holds", len(ids))
	}
}

// heldRecorder keeps the credit holds of a plain request's run until the
// request becomes a job (respondOrDefer), then records them, and any
// taken later, on the job.
type heldRecorder struct {
	r   *jobRunner
	mu  sync.Mutex
	ids []string
	job string
}

func (h *heldRecorder) add(ids []string) {
	h.mu.Lock()
	if h.job == "" {
		h.ids = append(h.ids, ids...)
		h.mu.Unlock()
		return
	}
	id := h.job
	h.mu.Unlock()
	h.r.recordHolds(id)(ids)
}

// handover makes later holds the job's and returns the earlier ones.
func (h *heldRecorder) handover(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.job = id
	return h.ids
}

// start runs job in the background on this gateway.
func (r *jobRunner) start(job store.Job, p params, py payer, refresh bool, base string, partials int) {
	tctx, cancelTimeout := context.WithTimeout(context.Background(), r.g.cfg.JobTimeout)
	ctx, cancel := context.WithCancelCause(tctx)
	rj := &runningJob{watch: newGenWatch(p, partials), cancel: cancel, done: make(chan struct{})}
	rj.watch.held = r.recordHolds(job.ID)
	r.mu.Lock()
	r.running[job.ID] = rj
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(rj.done)
		defer cancelTimeout()
		r.run(ctx, job.ID, p, py, refresh, base, rj)
		r.mu.Lock()
		delete(r.running, job.ID)
		r.mu.Unlock()
	}()
}

func (r *jobRunner) run(ctx context.Context, id string, p params, py payer, refresh bool, base string, rj *runningJob) {
	g := r.g
	me := r.st.JobLeaseHolder()
	if _, err := r.st.UpdateJob(id, func(j *store.Job) error {
		if j.Finished() {
			return errJobFinished
		}
		if j.LeaseHolder != "" && j.LeaseHolder != me {
			return errLeaseLost
		}
		j.Status, j.Runs, j.Holds = store.JobRunning, j.Runs+1, nil
		j.LeaseUntil = g.now().Add(g.cfg.AsyncJobs.Lease)
		return nil
	}); err != nil {
		rj.watch.finish(nil, err)
		return
	}
	results, err := g.generateWatched(ctx, p, py, refresh, rj.watch)
	r.record(ctx, id, base, rj, results, err)
}

// record stores a run's outcome and ends its watch.
func (r *jobRunner) record(ctx context.Context, id, base string, rj *runningJob, results []result, err error) {
	g := r.g
	var completed []imageEventJSON
	if err == nil {
		completed, err = g.completedEvents(ctx, base, results)
	}
	if errors.Is(context.Cause(ctx), errGatewayStopping) {
		r.requeue(id, rj)
		return
	}
	if errors.Is(context.Cause(ctx), errLeaseLost) {
		// Another gateway runs the job now (or it was cancelled there):
		// its outcome is that one's to record.
		r.outcomes.WithLabelValues("lease_lost").Inc()
		rj.watch.finish(nil, unavailable("the job moved to another gateway; follow it at /v1/jobs/"+id, 1, nil))
		return
	}
	cancelled := errors.Is(context.Cause(ctx), errJobCancelled)
	switch {
	case cancelled:
		r.outcomes.WithLabelValues("cancelled").Inc()
	case err != nil:
		r.outcomes.WithLabelValues("failed").Inc()
	default:
		r.outcomes.WithLabelValues("succeeded").Inc()
	}
	me := r.st.JobLeaseHolder()
	_, uerr := r.st.UpdateJob(id, func(j *store.Job) error {
		if j.Finished() {
			return errJobFinished // cancelled through another gateway meanwhile
		}
		if j.LeaseHolder != me {
			return errLeaseLost
		}
		j.Holds = nil // settled by the run's tickets
		switch {
		case cancelled:
			j.Status = store.JobCancelled
		case err != nil:
			ae := classify(err)
			j.Status, j.Error = store.JobFailed, &store.JobError{Status: ae.Status, Type: ae.Type, Code: ae.Code, Message: ae.Msg}
		default:
			j.Status = store.JobSucceeded
			for _, res := range results {
				j.Images = append(j.Images, store.JobImage{Object: res.entry.Object, Ext: res.entry.Ext, ContentType: res.entry.ContentType,
					Seed: res.entry.Seed, Width: res.entry.Width, Height: res.entry.Height})
			}
		}
		return nil
	})
	if uerr != nil && !errors.Is(uerr, errJobFinished) && !errors.Is(uerr, errLeaseLost) {
		g.logger.Error("job outcome not recorded", "job", id, "err", uerr)
	}
	if cancelled {
		err = errJobCancelledPublic
	}
	rj.watch.finish(completed, err)
}

var (
	errJobFinished        = errors.New("gateway: job already finished")
	errJobCancelled       = errors.New("gateway: job cancelled by its owner")
	errGatewayStopping    = errors.New("gateway: shutting down")
	errLeaseLost          = errors.New("gateway: the job's lease went to another gateway")
	errJobCancelledPublic = &apiError{Status: fiber.StatusConflict, Type: "invalid_request_error", Code: "job_cancelled", Msg: "the job was cancelled"}
	errNoJob              = &apiError{Status: fiber.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Msg: "no such job"}
)

// claim takes over the unfinished jobs nobody runs — left by an earlier
// run of this gateway, or by another gateway that stopped renewing their
// lease (killed, cut off) — and runs them here. The credit holds a dead
// run took are released first, at once, not when the holds expire. A
// job whose request can no longer be read (its owner erased) fails.
func (r *jobRunner) claim() error {
	jobs, err := r.st.ClaimJobs(r.g.cfg.AsyncJobs.Lease)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		r.mu.Lock()
		_, here := r.running[j.ID]
		r.mu.Unlock()
		if here {
			continue // this gateway runs it; the claim renewed its lease
		}
		if err := r.releaseHolds(j); err != nil {
			r.g.logger.Error("credit holds of an interrupted job not released", "job", j.ID, "err", err)
			continue
		}
		if j.Request == nil {
			r.fail(j.ID, unavailable("the job was interrupted and can no longer be run; submit it again", 1, nil))
			continue
		}
		py := payer{plan: r.g.cfg.Plans.plan(planAnonymous), planName: planAnonymous, prepaid: true}
		if j.Owner != "" {
			acct, err := r.g.store.Account(j.Owner)
			if err != nil {
				r.fail(j.ID, errNoJob)
				continue
			}
			py = payer{accountID: acct.ID, plan: r.g.cfg.Plans.plan(acct.Plan), planName: acct.Plan}
			if _, ok := r.g.cfg.Plans.Plans[py.planName]; !ok {
				py.planName = r.g.cfg.Plans.Default
			}
		}
		p, partials, err := r.g.parseGeneration(j.Request)
		if err != nil {
			r.fail(j.ID, err)
			continue
		}
		r.outcomes.WithLabelValues("resumed").Inc()
		r.start(j, p, py, false, r.g.jobBase(), partials)
	}
	return nil
}

// releaseHolds gives back the credits an interrupted run of j held (a
// hold its run settled is gone already: releasing it is a no-op) and
// forgets them.
func (r *jobRunner) releaseHolds(j store.Job) error {
	if len(j.Holds) == 0 {
		return nil
	}
	for _, id := range j.Holds {
		if err := r.g.store.ReleaseHold(id); err != nil {
			return err
		}
	}
	_, err := r.st.UpdateJob(j.ID, func(sj *store.Job) error { sj.Holds = nil; return nil })
	return err
}

// renew extends the leases of the jobs running here; a run whose lease
// went to another gateway (this one could not renew it in time) or whose
// job was finished elsewhere (cancelled) stops without recording.
func (r *jobRunner) renew() error {
	r.mu.Lock()
	ids := make([]string, 0, len(r.running))
	for id := range r.running {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	held, err := r.st.RenewJobLeases(ids, r.g.cfg.AsyncJobs.Lease)
	if err != nil {
		return err
	}
	keep := make(map[string]bool, len(held))
	for _, id := range held {
		keep[id] = true
	}
	r.mu.Lock()
	for _, id := range ids {
		if rj := r.running[id]; rj != nil && !keep[id] {
			rj.cancel(errLeaseLost)
		}
	}
	r.mu.Unlock()
	return nil
}

// loop renews this gateway's job leases every third of the lease and,
// once ResumeJobs ran, claims jobs left by gateways that stopped; it
// deletes finished jobs past their keep time every hour.
func (r *jobRunner) loop(ctx context.Context) {
	tick := time.NewTicker(r.g.cfg.AsyncJobs.Lease / 3)
	defer tick.Stop()
	lastSweep := r.g.now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := r.renew(); err != nil {
			r.g.logger.Warn("job leases not renewed", "err", err)
		}
		select {
		case <-r.ready:
		default:
			continue
		}
		if err := r.claim(); err != nil {
			r.g.logger.Warn("unfinished jobs not claimed", "err", err)
		}
		if r.g.now().Sub(lastSweep) >= time.Hour {
			lastSweep = r.g.now()
			if _, err := r.st.SweepJobs(lastSweep.Add(-r.g.cfg.AsyncJobs.Keep)); err != nil {
				r.g.logger.Warn("finished jobs not swept", "err", err)
			}
		}
	}
}

// requeue leaves a job stopped by a shutdown queued for the next start to
// run again; the credits of images not made came back when its run
// stopped waiting.
func (r *jobRunner) requeue(id string, rj *runningJob) {
	r.outcomes.WithLabelValues("requeued").Inc()
	me := r.st.JobLeaseHolder()
	if _, err := r.st.UpdateJob(id, func(j *store.Job) error {
		if j.Finished() || j.LeaseHolder != me {
			return errLeaseLost
		}
		// Unleased, so the next gateway to look (another one, or this one
		// started again) runs it at once.
		j.Status, j.Holds, j.LeaseUntil = store.JobQueued, nil, time.Time{}
		return nil
	}); err != nil && !errors.Is(err, errLeaseLost) {
		r.g.logger.Error("job not requeued", "job", id, "err", err)
	}
	rj.watch.finish(nil, unavailable("the gateway restarted; the job will run again", 1, nil))
}

// stop ends this gateway's runs without finishing their jobs: they stay
// queued for the next start.
func (r *jobRunner) stop(ctx context.Context) {
	r.mu.Lock()
	for _, rj := range r.running {
		rj.cancel(errGatewayStopping)
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// ResumeJobs runs the jobs a previous run of the gateway (or a gateway on
// the same database that stopped) left unfinished, and deletes finished
// jobs older than AsyncJobs.Keep; from then on the gateway keeps claiming
// jobs whose lease lapses. Call it once the
// model catalogue is known; it waits for it until ctx ends (a tier still
// down at start), since a job's model is only known from the catalogue.
func (g *Gateway) ResumeJobs(ctx context.Context) error {
	if g.jobs == nil {
		return nil
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for len(g.catalog.list()) == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if _, err := g.jobs.st.SweepJobs(g.now().Add(-g.cfg.AsyncJobs.Keep)); err != nil {
		return err
	}
	err := g.jobs.claim()
	g.jobs.readyOnce.Do(func() { close(g.jobs.ready) })
	return err
}

func (r *jobRunner) fail(id string, err error) {
	ae := classify(err)
	me := r.st.JobLeaseHolder()
	_, uerr := r.st.UpdateJob(id, func(j *store.Job) error {
		if j.Finished() || j.LeaseHolder != me {
			return errLeaseLost
		}
		j.Status, j.Error, j.Holds = store.JobFailed, &store.JobError{Status: ae.Status, Type: ae.Type, Code: ae.Code, Message: ae.Msg}, nil
		return nil
	})
	if uerr != nil && !errors.Is(uerr, errLeaseLost) {
		r.g.logger.Error("job outcome not recorded", "job", id, "err", uerr)
	}
}

// jobBase is the base of links in jobs resumed with no request to take a
// Host from.
func (g *Gateway) jobBase() string {
	switch {
	case g.cfg.CDNURL != "":
		return strings.TrimSuffix(g.cfg.CDNURL, "/")
	case g.cfg.PublicURL != "":
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	return ""
}

// ownJob loads the job named in the route if the caller may see it: its
// account's, or an anonymous job whose token came along (Job-Token header
// or ?token=, for EventSource). Anything else is 404: a job ID alone
// reveals nothing.
func (g *Gateway) ownJob(c *fiber.Ctx) (store.Job, error) {
	if g.jobs == nil {
		return store.Job{}, errNoJob
	}
	id := c.Params("id")
	if !strings.HasPrefix(id, "job_") || len(id) > 64 {
		return store.Job{}, errNoJob
	}
	var sealKey, hash []byte
	token := c.Get("Job-Token")
	if token == "" {
		token = c.Query("token")
	}
	if token != "" {
		hash, sealKey = jobKeys(token)
	}
	j, err := g.jobs.st.Job(id, sealKey)
	if errors.Is(err, store.ErrNotFound) {
		return store.Job{}, errNoJob
	}
	if err != nil {
		return store.Job{}, err
	}
	p := principalOf(c)
	switch {
	case j.Owner != "" && p.account != nil && p.account.ID == j.Owner:
	case j.Owner == "" && j.JobTokenMatches(hash):
	default:
		return store.Job{}, errNoJob
	}
	return j, nil
}

func (g *Gateway) getJob(c *fiber.Ctx) error {
	j, err := g.ownJob(c)
	if err != nil {
		return err
	}
	format := "url"
	if p, _, err := g.parseGeneration(j.Request); err == nil {
		format = p.Format
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(g.jobView(context.Background(), j, format, g.baseURL(c)))
}

// jobView renders j; a finished job's images in the format it asked for.
func (g *Gateway) jobView(ctx context.Context, j store.Job, format, base string) jobJSON {
	out := jobJSON{ID: j.ID, Object: "image.generation.job", Status: j.Status, Created: j.Created.Unix()}
	if j.Error != nil {
		out.Error = &errorDetail{Message: j.Error.Message, Type: j.Error.Type, Code: j.Error.Code}
	}
	if j.Status != store.JobSucceeded {
		return out
	}
	res := &imagesResponse{Created: j.Updated.Unix(), Data: make([]imageData, len(j.Images))}
	for i, im := range j.Images {
		res.Data[i].Seed = uint32(im.Seed)
		if format == "b64_json" {
			octx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
			data, err := g.cache.Object(octx, im.Object, im.Ext)
			cancel()
			if err == nil {
				res.Data[i].B64JSON = base64.StdEncoding.EncodeToString(data)
				continue
			}
		}
		res.Data[i].URL = base + g.signer.Sign("/o/"+im.Object+"."+im.Ext)
	}
	out.Result = res
	return out
}

// jobEvents streams a job's events: live when it runs on this gateway,
// else what the store says (polled each heartbeat until it finishes).
func (g *Gateway) jobEvents(c *fiber.Ctx) error {
	j, err := g.ownJob(c)
	if err != nil {
		return err
	}
	g.jobs.mu.Lock()
	rj := g.jobs.running[j.ID]
	g.jobs.mu.Unlock()
	base := g.baseURL(c)
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set("X-Accel-Buffering", "no")
	heartbeat := g.cfg.StreamHeartbeat
	if rj != nil {
		c.Context().SetBodyStreamWriter(func(bw *bufio.Writer) { writeEvents(bw, rj.watch, heartbeat) })
		return nil
	}
	id, token := j.ID, c.Get("Job-Token")
	if token == "" {
		token = c.Query("token")
	}
	_, sealKey := jobKeys(token)
	if j.Owner != "" {
		sealKey = nil
	}
	c.Context().SetBodyStreamWriter(func(bw *bufio.Writer) {
		w := &genWatch{changed: make(chan struct{})}
		for {
			if j.Finished() {
				g.finishFromStore(w, j, base)
				writeEvents(bw, w, heartbeat)
				return
			}
			bw.WriteString(": keep-alive\n\n")
			if bw.Flush() != nil {
				return
			}
			t := time.NewTimer(heartbeat)
			<-t.C
			next, err := g.jobs.st.Job(id, sealKey)
			if err != nil {
				return
			}
			j = next
		}
	})
	return nil
}

// finishFromStore ends w with a finished job's stored outcome.
func (g *Gateway) finishFromStore(w *genWatch, j store.Job, base string) {
	if j.Error != nil || j.Status != store.JobSucceeded {
		err := error(errJobCancelledPublic)
		if j.Error != nil {
			err = &apiError{Status: j.Error.Status, Type: j.Error.Type, Code: j.Error.Code, Msg: j.Error.Message}
		}
		w.finish(nil, err)
		return
	}
	results := make([]result, len(j.Images))
	for i, im := range j.Images {
		results[i].entry.Object, results[i].entry.Ext, results[i].entry.ContentType = im.Object, im.Ext, im.ContentType
		results[i].entry.Seed, results[i].entry.Width, results[i].entry.Height = im.Seed, im.Width, im.Height
	}
	completed, err := g.completedEvents(context.Background(), base, results)
	w.finish(completed, err)
}

// cancelJob stops the caller's job: it stops waiting for the GPU (which
// the tier then cancels if nobody else waits for the same image) and
// gives back the credits of images not yet made.
func (g *Gateway) cancelJob(c *fiber.Ctx) error {
	j, err := g.ownJob(c)
	if err != nil {
		return err
	}
	g.jobs.mu.Lock()
	rj := g.jobs.running[j.ID]
	g.jobs.mu.Unlock()
	if rj != nil {
		rj.cancel(errJobCancelled)
		<-rj.done
	} else if !j.Finished() {
		// Not running here (another gateway's, or not resumed): mark it,
		// so no restart runs it again.
		if _, err := g.jobs.st.UpdateJob(j.ID, func(sj *store.Job) error {
			if !sj.Finished() {
				sj.Status = store.JobCancelled
			}
			return nil
		}); err != nil {
			return err
		}
	}
	var sealKey []byte
	if j.Owner == "" {
		token := c.Get("Job-Token")
		if token == "" {
			token = c.Query("token")
		}
		_, sealKey = jobKeys(token)
	}
	j, err = g.jobs.st.Job(j.ID, sealKey)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(g.jobView(context.Background(), j, "url", g.baseURL(c)))
}

// parseGeneration reads a stored generation request body.
func (g *Gateway) parseGeneration(body []byte) (params, int, error) {
	var req generationJSON
	if err := json.Unmarshal(body, &req); err != nil {
		return params{}, 0, err
	}
	p, err := g.validate(raw{
		Prompt: req.Prompt, NegativePrompt: req.NegativePrompt, N: req.N, Size: req.Size,
		Format: req.ResponseFormat, Seed: req.Seed, Style: req.Style, Model: req.Model,
		Steps: req.Steps, Guidance: req.Guidance, Private: req.Private,
	})
	partials := 0
	if req.PartialImages != nil {
		partials = *req.PartialImages
	}
	return p, partials, err
}

// respondOrDefer answers like respond when the images come within
// AsyncJobs.After, and otherwise makes the running generation a job and
// answers 202 with it: nothing is generated twice, and the client follows
// the job instead of a connection a CDN would cut.
func (g *Gateway) respondOrDefer(c *fiber.Ctx, p params, py payer, refresh bool) error {
	w := newGenWatch(p, 0)
	holds := &heldRecorder{r: g.jobs}
	w.held = holds.add
	type outcome struct {
		results []result
		err     error
	}
	done := make(chan outcome, 1)
	tctx, cancelTimeout := context.WithTimeout(context.Background(), g.cfg.JobTimeout)
	ctx, cancel := context.WithCancelCause(tctx)
	go func() {
		results, err := g.generateWatched(ctx, p, py, refresh, w)
		done <- outcome{results, err}
	}()
	timer := time.NewTimer(g.cfg.AsyncJobs.After)
	defer timer.Stop()
	select {
	case o := <-done:
		cancel(nil)
		cancelTimeout()
		if o.err != nil {
			return o.err
		}
		return g.writeImages(c, p, o.results, refresh)
	case <-timer.C:
	}

	body := c.Body()
	reqHash := sha256.Sum256(body)
	j := store.Job{ID: store.NewJobID(), Owner: py.accountID, Request: append([]byte(nil), body...), RequestHash: reqHash[:]}
	var token string
	var sealKey []byte
	if py.accountID == "" {
		var b [32]byte
		rand.Read(b[:])
		token = jobTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
		j.TokenHash, sealKey = jobKeys(token)
	}
	j.LeaseUntil = g.now().Add(g.cfg.AsyncJobs.Lease)
	job, _, err := g.jobs.st.CreateJob(j, sealKey)
	if err == nil {
		ids := holds.handover(job.ID)
		job, err = g.jobs.st.UpdateJob(job.ID, func(sj *store.Job) error {
			sj.Status, sj.Runs, sj.Holds = store.JobRunning, 1, append(sj.Holds, ids...)
			return nil
		})
	}
	if err != nil {
		// No job to hand over: wait for the images after all.
		o := <-done
		cancel(nil)
		cancelTimeout()
		if o.err != nil {
			return o.err
		}
		return errors.Join(err, g.writeImages(c, p, o.results, refresh))
	}
	rj := &runningJob{watch: w, cancel: cancel, done: make(chan struct{})}
	r := g.jobs
	r.outcomes.WithLabelValues("deferred").Inc()
	r.mu.Lock()
	r.running[job.ID] = rj
	r.mu.Unlock()
	base := g.baseURL(c)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(rj.done)
		defer cancelTimeout()
		o := <-done
		if errors.Is(context.Cause(ctx), errGatewayStopping) {
			r.requeue(job.ID, rj)
		} else {
			r.record(ctx, job.ID, base, rj, o.results, o.err)
		}
		r.mu.Lock()
		delete(r.running, job.ID)
		r.mu.Unlock()
	}()
	c.Set(fiber.HeaderLocation, "/v1/jobs/"+job.ID)
	c.Set(fiber.HeaderCacheControl, "no-store")
	out := g.jobView(context.Background(), job, p.Format, base)
	out.Token = token
	return c.Status(fiber.StatusAccepted).JSON(out)
}
