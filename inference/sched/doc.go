// Package sched is the inference tier's scheduler: a queue in front of a set
// of workers (GPU servers, or CPU slots for procedural backends), each with a
// fixed number of slots.
//
// Jobs are admitted or refused up front: when the queue is full, a plan
// class's cap is reached, or the expected wait exceeds the limit or the
// caller's deadline, [Scheduler.Do] fails at once with an [*OverloadError]
// carrying a Retry-After hint, instead of letting the caller time out.
//
// Admitted jobs are dispatched by weighted fair queueing at two levels:
// plan classes share capacity by weight (paid classes weigh more), and
// within a class every fairness key gets an equal share, so no one key can
// starve the others however many jobs it queues. Both levels use stride
// scheduling: each dispatch advances the chosen class's and key's pass by
// the job's expected cost over its weight, and the smallest pass goes next.
// A class or key that was idle rejoins at the current pass, so idleness
// banks no credit.
//
// A job runs on a worker that serves its model, preferring one that ran the
// same model last (it has it loaded) and one that has not just failed. A
// failed attempt is retried on another worker up to an attempt cap; a
// watchdog ends attempts that stop reporting progress.
//
// The scheduler never learns who asked (promise X1): a fairness key is an
// opaque string compared for equality, and it never appears in metrics or
// logs.
package sched
