package gateway

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/store"
)

// exportStore is what an account's export reads.
type exportStore interface {
	Account(id string) (store.Account, error)
	Consents(subject string) ([]store.Consent, error)
	Generations(accountID string, fn func(store.Generation) error) error
	Ledger(accountID string) ([]store.LedgerEntry, error)
	SecurityEvents(accountID string) ([]store.SecurityEvent, error)
	Profile(accountID string) (store.Profile, error)
}

// exportReadme documents the archive's schema (promise R1:
// machine-readable, documented).
const exportReadme = `imagegate data export
=====================

Everything this service keeps about your account, as JSON (UTF-8), plus
your images. Times are RFC 3339 in UTC.

account.json          your account: id, email, email_verified,
                      display_name, plan, credits, created, age_attested,
                      google_linked and google_subject (the only thing kept
                      from Google besides the address), settings
                      (product_email, analytics, model_improvement)
consents.json         every cookie choice you made while signed in:
                      [{subject, visitor, revision, preferences,
                      analytics, source, time}]
generations.json      every image in your history: [{id, created,
                      last_access, expires, prompt, negative_prompt,
                      model, model_version, width, height, seed, steps,
                      guidance, style, edit, strength, private, object,
                      ext, content_key, latency_ms, cached}]; the image
                      is images/<object>.<ext>. Reference images you
                      uploaded for edits are never kept, so none are here.
jobs.json             your asynchronous generation jobs still kept
                      (finished ones for a day): [{id, status, created,
                      updated, request, images, error}]; request is the
                      body you sent, prompt included
transactions.json     your credit ledger: [{seq, time, kind, amount,
                      balance, ref, money_minor, currency}]; kind is
                      grant, purchase, charge, refund, reversal or adjust
security-events.json  sign-ins and other security events of the last
                      retention period: [{time, kind, ip, user_agent}]
images/               your images, named by their SHA-256
missing.json          images of your history that were no longer stored
                      when the export ran (normally empty)
`

// accountJobs lists an account's jobs for its export.
type accountJobs interface {
	AccountJobs(accountID string) ([]store.Job, error)
}

type exportJobJSON struct {
	ID      string           `json:"id"`
	Status  string           `json:"status"`
	Created time.Time        `json:"created"`
	Updated time.Time        `json:"updated"`
	Request json.RawMessage  `json:"request"`
	Images  []store.JobImage `json:"images,omitempty"`
	Error   *store.JobError  `json:"error,omitempty"`
}

// export streams the signed-in account's data as one ZIP (promise R1):
// documents first, then images, written as they are read, so memory
// stays bounded whatever the history's length. Only the requesting
// account's records are read.
func (g *Gateway) export(c *fiber.Ctx) error {
	acct := *principalOf(c).account
	c.Set(fiber.HeaderContentType, "application/zip")
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="imagegate-export-%s.zip"`, g.now().UTC().Format("2006-01-02")))
	c.Set(fiber.HeaderCacheControl, "no-store")
	// The writer runs after the handler returns: it must not touch c.
	// It may outlast the server's write timeout, which covers a whole
	// response; the connection's deadline is pushed back before each
	// entry instead, so a long export lives while it makes progress.
	// The server sets its own deadline after the handler returns and
	// before it reads the body, so the writer starts on the first read:
	// started any earlier, its first pushes could be overwritten by the
	// server's deadline and the export cut off at the write timeout.
	conn := c.Context().Conn()
	pr, pw := io.Pipe()
	body := &exportBody{PipeReader: pr, start: make(chan struct{})}
	c.Context().Response.SetBodyStream(body, -1)
	go func() {
		<-body.start
		if body.closed.Load() {
			return // the body was never read (HEAD, a dropped connection)
		}
		ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
		defer cancel()
		progress := func() {
			if err := conn.SetWriteDeadline(time.Now().Add(exportEntryGrace)); err != nil {
				cancel() // the connection is gone: stop reading
			}
		}
		w := bufio.NewWriterSize(pw, 32<<10)
		if err := g.writeExport(ctx, w, acct, progress); err != nil {
			// The status is already sent; a truncated ZIP fails to open.
			g.logger.Error("export failed", "err", err)
		}
		w.Flush()
		pw.Close()
	}()
	return nil
}

// exportBody is an export's response body: start closes on the server's
// first read, or on Close if the body is never read.
type exportBody struct {
	*io.PipeReader
	once   sync.Once
	start  chan struct{}
	closed atomic.Bool
}

func (b *exportBody) Read(p []byte) (int, error) {
	b.once.Do(func() { close(b.start) })
	return b.PipeReader.Read(p)
}

func (b *exportBody) Close() error {
	b.closed.Store(true)
	b.once.Do(func() { close(b.start) })
	return b.PipeReader.Close()
}

// exportTimeout bounds a whole export; exportEntryGrace is how long one
// entry's bytes may take to reach the client.
const (
	exportTimeout    = 30 * time.Minute
	exportEntryGrace = 2 * time.Minute
)

// writeExport writes the ZIP to w, calling progress before each entry.
func (g *Gateway) writeExport(ctx context.Context, w io.Writer, acct store.Account, progress func()) error {
	zw := zip.NewWriter(w)
	doc := func(name string, v any) error {
		progress()
		f, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: g.now()})
		if err != nil {
			return err
		}
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	progress()
	f, err := zw.Create("README.txt")
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, exportReadme); err != nil {
		return err
	}
	profile, err := g.store.Profile(acct.ID)
	if err != nil {
		return err
	}
	if err := doc("account.json", struct {
		ID            string       `json:"id"`
		Email         string       `json:"email"`
		EmailVerified bool         `json:"email_verified"`
		DisplayName   string       `json:"display_name,omitempty"`
		Plan          string       `json:"plan"`
		Credits       int64        `json:"credits"`
		Created       time.Time    `json:"created"`
		AgeAttested   time.Time    `json:"age_attested"`
		GoogleLinked  bool         `json:"google_linked"`
		GoogleSubject string       `json:"google_subject,omitempty"`
		Settings      settingsJSON `json:"settings"`
	}{acct.ID, acct.Email, acct.EmailVerified, profile.DisplayName, acct.Plan, acct.Credits, acct.Created, acct.AgeAttested,
		acct.GoogleSubject != "", acct.GoogleSubject, settingsView(acct.Settings, false)}); err != nil {
		return err
	}
	consents, err := g.store.Consents(acct.ID)
	if err != nil {
		return err
	}
	if err := doc("consents.json", nonNil(consents)); err != nil {
		return err
	}
	if js, ok := g.store.(accountJobs); ok {
		jobs, err := js.AccountJobs(acct.ID)
		if err != nil {
			return err
		}
		views := make([]exportJobJSON, len(jobs))
		for i, j := range jobs {
			views[i] = exportJobJSON{j.ID, j.Status, j.Created, j.Updated, json.RawMessage(j.Request), j.Images, j.Error}
		}
		if err := doc("jobs.json", views); err != nil {
			return err
		}
	}

	// generations.json is written element by element.
	type image struct{ hash, ext string }
	var images []image
	seen := map[string]bool{}
	progress()
	gf, err := zw.CreateHeader(&zip.FileHeader{Name: "generations.json", Method: zip.Deflate, Modified: g.now()})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(gf, "["); err != nil {
		return err
	}
	first := true
	err = g.store.Generations(acct.ID, func(gen store.Generation) error {
		b, err := json.Marshal(gen)
		if err != nil {
			return err
		}
		sep := ",\n"
		if first {
			sep, first = "\n", false
		}
		if _, err := io.WriteString(gf, sep); err != nil {
			return err
		}
		if _, err := gf.Write(b); err != nil {
			return err
		}
		if !seen[gen.Object] {
			seen[gen.Object] = true
			images = append(images, image{gen.Object, gen.Ext})
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(gf, "\n]\n"); err != nil {
		return err
	}

	ledger, err := g.store.Ledger(acct.ID)
	if err != nil {
		return err
	}
	if err := doc("transactions.json", nonNil(ledger)); err != nil {
		return err
	}
	events, err := g.store.SecurityEvents(acct.ID)
	if err != nil {
		return err
	}
	if err := doc("security-events.json", nonNil(events)); err != nil {
		return err
	}

	missing := []string{}
	for _, im := range images {
		progress()
		data, err := g.exportObject(ctx, im.hash, im.ext)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, im.hash+"."+im.ext)
			continue
		}
		if err != nil {
			// Not knowing is not the same as gone: fail the export (the
			// truncated ZIP will not open) rather than call it missing.
			return err
		}
		// Images are compressed already: stored, not deflated.
		f, err := zw.CreateHeader(&zip.FileHeader{Name: "images/" + im.hash + "." + im.ext, Method: zip.Store, Modified: g.now()})
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
	}
	if err := doc("missing.json", missing); err != nil {
		return err
	}
	return zw.Close()
}

// exportObject reads one output for an export, retrying once: an object
// store blip should not fail an export of thousands of images.
func (g *Gateway) exportObject(ctx context.Context, hash, ext string) ([]byte, error) {
	data, err := g.cache.Object(ctx, hash, ext)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
		data, err = g.cache.Object(ctx, hash, ext)
	}
	return data, err
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
