// Package gateway is imagegate's HTTP edge: a Fiber app that validates
// generation requests, answers them from the content-hash cache when it can,
// reaches the inference tier when it must, and serves the output objects
// behind signed, expiring URLs.
//
// Request path: security headers → validate → cache (L1 → L2 → L3) → on a
// miss, one coalesced call to the inference tier per distinct request.
//
// fiber.Ctx never leaves this package: handlers derive a real
// context.Context with a deadline, and every string kept beyond a handler is
// copied first, because Fiber reuses its buffers once the handler returns
// while a coalesced generation may still be running.
//
// # Where things live
//
// Package gateway is the composition root: routes, middleware order, the
// error handler, and the HTTP glue of accounts, sessions, generations,
// edits, objects, export, erasure, credits and billing. New wires the engines
// below through small interfaces it declares itself:
//
//   - apierror: the public face of an error (status, type, code, message)
//     that every package returns and the error handler sends.
//   - clientip: whose request this is (TCP peer or trusted proxy header).
//   - ratelimit: rate limits per address, account and key, the free daily
//     quota, the login guard and small per-key throttles.
//   - moderation: the content policy for prompts and outputs (promise C6)
//     and reports of apparent CSAM.
//   - consent: the cookie registry (every cookie, its category and
//     attributes) and the consent rules — the stored choice, staleness
//     against the policy revision, the GPC veto, proof-of-consent records;
//     the gateway filters Set-Cookie and serves the consent routes.
//   - analytics: what a consented page view is reduced to before it is
//     counted.
//   - billing: payments through Stripe — the catalogue, Checkout, the
//     customer portal and the verified, exactly-once webhook.
//   - compliance: incident notifications (the notice template and the
//     paced, resumable notifier) and the checks of a rights request
//     received by email.
//   - mail: SMTP and the outbox.
//   - web: the website's templates, embedded assets and page CSP; the
//     gateway gathers each page's data (web_routes.go).
//   - partner: partner sites' keys, origins, rate limits, monthly quotas,
//     embed tokens and signed completion callbacks.
//   - widget: the embed widget as browsers get it (embed.js, the frame).
//   - dashboard: the operator dashboard's pages and server-drawn charts.
package gateway
