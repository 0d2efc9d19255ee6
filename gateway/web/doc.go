// Package web renders imagegate's own website: the generator, gallery,
// sign-up and sign-in, account and privacy centre, pricing, policies and
// the cookie banner. It owns the HTML templates, the embedded CSS and the
// one small script, and the Content-Security-Policy those pages need.
//
// It knows nothing of accounts, sessions or the store: package gateway
// gathers each page's data and calls Site.Render. Every page works with
// forms alone; assets/app.js only enhances them (fetch, progress,
// copy-link, the banner without a reload). The script is the only one the
// pages load, it comes from this origin with a per-response nonce, and no
// page uses inline handlers, inline styles or third-party anything
// (promise K3).
package web
