// Package compliance owns the engines behind the privacy promises that
// need an operator: incident notifications (promise S5) — the operator's
// notice template, the message each recipient gets, and the Notifier that
// mails a job's recipients at its pace, at most once each, resuming after
// a restart — and the checks of a rights request received by email
// (promise R5): its kind, address, received day and notes, and how long a
// closed one is kept.
//
// It is plain Go: the gateway's operator routes (/v1/admin/dsar,
// /v1/admin/notify, /v1/admin/stats) parse the JSON, call into this
// package and the store, and send the answers. Refusals are
// *apierror.Error values the gateway's error handler sends as they are.
package compliance
