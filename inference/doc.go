// Package inference is imagegate's generation tier: the Backend interface that
// turns generation parameters into image bytes, the Connect-RPC Server that
// exposes backends as imagegate.inference.v1.InferenceService, and the Pool
// the gateway uses to reach a set of such servers.
//
// Nothing here learns who asked for an image (promise X1): requests carry
// generation parameters and transient inputs only, and neither the server
// nor the pool ever logs prompts or image bytes.
//
// # Server
//
// [NewServer] validates requests, bounds concurrent backend work, and
// coalesces identical requests arriving at the same time (for example the
// same popular prompt missing the cache on several gateways at once) into one
// backend call. The shared call is detached from every caller's context and
// bounded by its own timeout, so one caller hanging up never cancels a
// generation others wait for; when the last one leaves, the generation is
// canceled (dequeued, or interrupted on the GPU), since the tier keeps no
// results. Generations queue in package sched's fair, admission-controlled
// scheduler, which places them on workers: the local one for in-process
// backends such as retro, and the GPU servers of Placed backends
// (inference/comfyui, inference/openaiimg), retrying on another worker when
// one fails. Image bytes are never compressed on the wire:
// they are PNGs already.
//
// # Pool
//
// [NewPool] balances calls over several servers: it probes each one with the
// gRPC health protocol, prefers healthy servers with the fewest calls in
// flight, and retries failures that are safe to retry on the next server.
// Generate is idempotent (identical requests produce identical bytes), so a
// retry never does harm beyond the wasted work.
package inference
