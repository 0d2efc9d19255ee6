package sched

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// The fairness benchmark: 1,000 jobs from 50 fairness keys on 3 plans,
// against 4 simulated workers of 2 slots with a fixed service time. All
// jobs are queued before the workers start, each key's 20 in one burst,
// key after key and plan after plan (free first): the order in which a
// FIFO queue serves the first keys completely before the last start.
// Reported per plan: p50 and p99 wait, and Jain's fairness index over the
// keys of the plan, taken when half the plan's jobs have finished (1 is
// perfectly even service, 1/n is one key served alone), over the
// worker-seconds each key received (what the scheduler shares out) and
// over jobs finished. Throughput is reported as a fraction of the nominal
// capacity (slots over the service time; a sleeping simulated worker
// overshoots its service time, which lowers this for any scheduler), and
// utilization as the fraction of slot-seconds the workers were busy. The FIFO baseline is
// the same scheduler with every job under one key and class, measured in
// the same run.

const (
	benchJobsPerKey = 20
	benchWorkers    = 4
	benchSlots      = 2
	benchService    = 10 * time.Millisecond
)

type benchPlan struct {
	name   string
	keys   int
	weight int
}

var benchPlans = []benchPlan{{"free", 20, 1}, {"pro", 20, 2}, {"team", 10, 4}}

type benchResult struct {
	waits       map[string][]time.Duration // by plan
	jain        map[string]float64         // over worker-seconds received, what the scheduler shares
	jainJobs    map[string]float64         // over jobs finished
	throughput  float64                    // jobs per second over the nominal capacity
	utilization float64                    // slot-seconds busy over slot-seconds available
}

func runFairnessSim(b *testing.B, fifo bool) benchResult {
	b.Helper()
	classes := map[string]Class{}
	for _, p := range benchPlans {
		classes[p.name] = Class{Weight: p.weight}
	}
	var workers []Worker
	for i := range benchWorkers {
		workers = append(workers, Worker{ID: fmt.Sprintf("w%d", i), Slots: benchSlots, Models: []string{"m"}})
	}
	admitted := make(chan struct{}, 1)
	s, err := New(Config{Workers: workers, Classes: classes, DefaultClass: "free", MaxQueue: 10_000, MaxWait: time.Hour,
		Observer: admissions(admitted)})
	if err != nil {
		b.Fatal(err)
	}
	type job struct{ plan, key string }
	var jobs []job
	for _, p := range benchPlans {
		for k := range p.keys {
			for range benchJobsPerKey {
				jobs = append(jobs, job{p.name, fmt.Sprintf("%s-%d", p.name, k)})
			}
		}
	}

	var mu sync.Mutex
	res := benchResult{waits: map[string][]time.Duration{}, jain: map[string]float64{}, jainJobs: map[string]float64{}}
	done := map[string]map[string]int{}       // plan → key → finished
	served := map[string]map[string]float64{} // plan → key → seconds of service
	var busy time.Duration
	total := map[string]int{}
	for _, j := range jobs {
		total[j.plan]++
	}
	finished := map[string]int{}
	snapshot := map[string]map[string]int{}
	servedSnap := map[string]map[string]float64{}

	var wg sync.WaitGroup
	// All jobs arrive before the workers start, so every key is waiting
	// from the first moment; waits count from that moment.
	open := make(chan struct{})
	var began time.Time
	for _, j := range jobs {
		sj := Job{Model: "m", Key: j.key, Class: j.plan}
		if fifo {
			sj = Job{Model: "m", Key: "", Class: "free"}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Do(context.Background(), sj, func(ctx context.Context, a Attempt) error {
				<-open
				wait := time.Since(began)
				t0 := time.Now()
				time.Sleep(benchService) // the simulated GPU
				took := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				busy += took
				if served[j.plan] == nil {
					served[j.plan] = map[string]float64{}
				}
				served[j.plan][j.key] += took.Seconds()
				res.waits[j.plan] = append(res.waits[j.plan], wait)
				if done[j.plan] == nil {
					done[j.plan] = map[string]int{}
				}
				done[j.plan][j.key]++
				finished[j.plan]++
				if finished[j.plan] == total[j.plan]/2 {
					snapshot[j.plan] = cloneCounts(done[j.plan])
					servedSnap[j.plan] = cloneCounts(served[j.plan])
				}
				return nil
			})
			if err != nil {
				b.Error(err)
			}
		}()
		// Submissions arrive in order: the next waits until this one is
		// queued, as requests from one burst would.
		<-admitted
	}
	began = time.Now()
	close(open)
	wg.Wait()
	elapsed := time.Since(began)
	capacity := float64(benchWorkers*benchSlots) / benchService.Seconds()
	res.throughput = float64(len(jobs)) / elapsed.Seconds() / capacity
	res.utilization = busy.Seconds() / (elapsed.Seconds() * benchWorkers * benchSlots)
	for _, p := range benchPlans {
		var jobs, secs []float64
		for k := range p.keys {
			key := fmt.Sprintf("%s-%d", p.name, k)
			jobs = append(jobs, float64(snapshot[p.name][key]))
			secs = append(secs, servedSnap[p.name][key])
		}
		res.jainJobs[p.name] = jain(jobs)
		res.jain[p.name] = jain(secs)
	}
	return res
}

// admissions signals once per admitted job.
type admissions chan struct{}

func (a admissions) Queued(string, string, int)                          { a <- struct{}{} }
func (admissions) Started(string, string, string, time.Duration, int)    {}
func (admissions) Finished(string, string, string, time.Duration, error) {}
func (admissions) Rejected(string, string, string)                       {}
func (admissions) Canceled(string, string, bool)                         {}

func cloneCounts[V int | float64](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// jain is Jain's fairness index: (Σx)² / (n·Σx²).
func jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

func BenchmarkFairShare(b *testing.B) {
	for _, mode := range []struct {
		name string
		fifo bool
	}{{"fair", false}, {"fifo-baseline", true}} {
		b.Run(mode.name, func(b *testing.B) {
			var last benchResult
			for b.Loop() {
				last = runFairnessSim(b, mode.fifo)
			}
			for _, p := range benchPlans {
				b.ReportMetric(float64(percentile(last.waits[p.name], 0.5).Milliseconds()), p.name+"-p50-wait-ms")
				b.ReportMetric(float64(percentile(last.waits[p.name], 0.99).Milliseconds()), p.name+"-p99-wait-ms")
				b.ReportMetric(last.jain[p.name], p.name+"-jain")
				b.ReportMetric(last.jainJobs[p.name], p.name+"-jain-jobs")
			}
			b.ReportMetric(last.throughput, "of-capacity")
			b.ReportMetric(last.utilization, "utilization")
		})
	}
}

// BenchmarkDispatchManyKeys is the cost of one job's admission, dispatch
// and release with 10,000 other keys waiting, against the same with one
// key waiting: what fair queueing costs per job as keys grow.
func BenchmarkDispatchManyKeys(b *testing.B) {
	for _, keys := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			s, err := New(Config{Workers: []Worker{{ID: "w", Slots: 1, Models: []string{"m"}}}, MaxQueue: keys + 10, MaxWait: 1 << 62})
			if err != nil {
				b.Fatal(err)
			}
			// Occupy the slot, then queue one job per key behind it.
			hold := make(chan struct{})
			go s.Do(context.Background(), Job{Model: "m", Key: "holder"}, func(context.Context, Attempt) error { <-hold; return nil })
			for s.Stats().Running == 0 {
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range keys - 1 {
				go s.Do(ctx, Job{Model: "m", Key: fmt.Sprint("k", i)}, func(context.Context, Attempt) error { return nil })
			}
			for s.Stats().Queued < keys-1 {
			}
			b.ReportAllocs()
			b.ResetTimer()
			// Each op: one more job from a fresh key is admitted and
			// canceled before it starts: admission, a dispatch attempt
			// and removal, with every other key still waiting.
			for i := 0; b.Loop(); i++ {
				jctx, jcancel := context.WithCancel(context.Background())
				jcancel()
				s.Do(jctx, Job{Model: "m", Key: fmt.Sprint("b", i)}, func(context.Context, Attempt) error { return nil })
			}
			b.StopTimer()
			cancel()
			close(hold)
		})
	}
}
