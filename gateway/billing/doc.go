// Package billing owns payments through Stripe (promises M1–M3): the
// catalogue of credit packs and subscription plans and its configuration,
// Checkout sessions and the customer portal (card data never reaches
// imagegate; Stripe is sent our random account id, never an email), and
// the webhook — signature verification with rotating secrets, a bounded
// clock window and the pinned API version — that turns Stripe's events
// into store changes applied exactly once.
//
// It is plain Go: New returns a *Stripe the gateway wires with a Store;
// the gateway's /v1/billing routes decode the request, check the session
// and call Item, Checkout, Portal and HandleWebhook. Refusals are
// *apierror.Error values the gateway's error handler sends as they are.
package billing
