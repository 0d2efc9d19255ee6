// Package mail sends imagegate's email: password-reset links, email-change
// verification, account-deletion confirmations, security incident
// notifications and, for those who have not opted out, optional news.
//
// A Message is validated before anything leaves the process (one
// syntactically valid recipient, no line breaks or control characters in
// any header field, bounded lengths), then composed once as RFC 5322 text by
// github.com/wneessen/go-mail and handed to one of two transports with the
// same Send(ctx, Message) method:
//
//   - SMTP submits it to the server named by an smtp:// or smtps:// URL
//     (opportunistic STARTTLS unless ?starttls=required; smtps is TLS from
//     the first byte), one connection per message, bounded by the send
//     context and Config.Timeout.
//   - Outbox writes it as an .eml file into a directory under the data
//     directory. It is the embedded default: with no SMTP URL nothing is
//     delivered, and an operator (or a test) reads the files.
//
// New picks one from Config. Consumers declare their own one-method
// interface, for example
//
//	type mailer interface {
//		Send(ctx context.Context, m mail.Message) error
//	}
//
// # Categories and opt-outs
//
// Every Message has a Category. Account and security mail is essential and
// is always sent. News is not: it must carry a one-click unsubscribe link
// (RFC 8058), and the caller must check the recipient's opt-out before
// calling Send (promise R4) — this package does not know who opted out.
//
// # Personal data
//
// Recipients, subjects and bodies are personal data, and bodies hold
// secrets such as reset links. This package never logs them, and its
// errors name neither the recipient nor the SMTP password (server replies
// that echo the recipient are scrubbed). The SMTP URL carries a password:
// it is never logged or put into an error; logs name only host and port.
//
// The outbox holds complete messages, reset links included, in plain
// files. Treat it like the rest of the data directory: files are 0600 in a
// 0700 directory, and Outbox.Prune deletes files older than a cut-off so a
// retention sweep can keep it from growing into an archive of personal
// data. Anyone who can read the outbox can take over any account whose
// reset link is still valid.
package mail
