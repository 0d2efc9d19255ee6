package mail

import (
	"context"
	"log/slog"
)

// Mailer is the transport Config selects: exactly one of SMTP and Outbox
// is set.
type Mailer struct {
	// SMTP is set when Config.SMTPURL is.
	SMTP *SMTP
	// Outbox is set otherwise; a retention sweep should call its Prune.
	Outbox *Outbox
}

// New validates cfg and returns the SMTP transport when cfg.SMTPURL is
// set, the outbox otherwise. logger receives no personal data.
func New(cfg Config, logger *slog.Logger) (*Mailer, error) {
	if cfg.SMTPURL != "" {
		s, err := NewSMTP(cfg, logger)
		if err != nil {
			return nil, err
		}
		return &Mailer{SMTP: s}, nil
	}
	o, err := NewOutbox(cfg, logger)
	if err != nil {
		return nil, err
	}
	return &Mailer{Outbox: o}, nil
}

// Send hands m to the selected transport; see SMTP.Send and Outbox.Send.
func (m *Mailer) Send(ctx context.Context, msg Message) error {
	if m.SMTP != nil {
		return m.SMTP.Send(ctx, msg)
	}
	return m.Outbox.Send(ctx, msg)
}
