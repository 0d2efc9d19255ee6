package mail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagegate/imagegate/edge"
)

// outboxTimeLayout starts every outbox file name: fixed width and UTC, so
// names sort in the order the messages were written.
const outboxTimeLayout = "20060102T150405.000000000Z"

// Outbox writes each message as an RFC 5322 .eml file into a directory
// instead of delivering it. It is safe for concurrent use.
//
// File names are <UTC time>-<32 hex digits>.eml: they sort by time, and
// the 128 random bits (also the local part of the Message-ID) keep
// concurrent writers from colliding. A file appears complete or not at all
// (written to a temporary dot-file, synced, then renamed). The files hold
// personal data; see the package documentation.
type Outbox struct {
	dir    string
	from   *netmail.Address
	now    func() time.Time
	logger *slog.Logger
}

// NewOutbox returns the outbox transport for cfg, creating cfg.OutboxDir
// with mode 0700 (and tightening an existing directory to 0700).
func NewOutbox(cfg Config, logger *slog.Logger) (*Outbox, error) {
	if cfg.OutboxDir == "" {
		return nil, errors.New("mail: no outbox directory")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.OutboxDir, 0o700); err != nil {
		return nil, fmt.Errorf("mail: outbox: %w", err)
	}
	if err := os.Chmod(cfg.OutboxDir, 0o700); err != nil {
		return nil, fmt.Errorf("mail: outbox: %w", err)
	}
	from, _ := parseFrom(cfg.From) // checked by Validate
	logger.Warn("mail is written to the outbox, not delivered; it holds personal data and reset links (set --smtp-url to deliver)", "dir", cfg.OutboxDir)
	return &Outbox{dir: cfg.OutboxDir, from: from, now: cfg.Now, logger: logger}, nil
}

// Dir is the directory the outbox writes to.
func (o *Outbox) Dir() string { return o.dir }

// Send validates m and writes it as a new .eml file. Validation failures
// match ErrInvalidMessage and write nothing.
func (o *Outbox) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := o.now()
	msg, token, err := compose(o.from, m, now)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		return fmt.Errorf("mail: outbox: compose: %w", err)
	}
	name := now.UTC().Format(outboxTimeLayout) + "-" + token + ".eml"
	// edge.WriteFile's temporary files start with .tmp-, which Prune
	// removes when a crash leaves one behind.
	if err := edge.WriteFile(filepath.Join(o.dir, name), buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("mail: outbox: %w", err)
	}
	o.logger.Debug("mail sent", "transport", "outbox", "category", m.Category, "file", name)
	return nil
}

// Prune deletes outbox files written before the cut-off, and temporary
// files a crash left behind that were last modified before it. It
// returns how many files it deleted. A retention sweep calls it so the
// outbox does not keep personal data longer than the mail is useful.
func (o *Outbox) Prune(ctx context.Context, before time.Time) (int, error) {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return 0, fmt.Errorf("mail: outbox prune: %w", err)
	}
	removed := 0
	var errs []error
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		var when time.Time
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			info, err := e.Info()
			if err != nil {
				continue // gone already: renamed or removed
			}
			when = info.ModTime()
		case strings.HasSuffix(name, ".eml") && len(name) > len(outboxTimeLayout):
			t, err := time.Parse(outboxTimeLayout, name[:len(outboxTimeLayout)])
			if err != nil {
				continue // not ours
			}
			when = t
		default:
			continue
		}
		if !when.Before(before) {
			continue
		}
		if err := os.Remove(filepath.Join(o.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("mail: outbox prune: %w", err)
	}
	return removed, nil
}
