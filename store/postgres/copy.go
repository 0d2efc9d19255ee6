package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagegate/imagegate/store"
)

// ErrNotEmpty reports a copy into a database that already has accounts.
var ErrNotEmpty = errors.New("postgres: the target database is not empty")

// CopyReport is what a copy moved, per table, and the checksums that
// prove it arrived unchanged: each is computed from the source records
// and again from the rows read back.
type CopyReport struct {
	Counts    map[string]int    // table → rows written
	Checksums map[string]string // table → sha256 over its canonical rows
}

// raw mirrors of the bbolt store's records (its JSON encodings).
type (
	boltAccount struct {
		ID            string              `json:"id"`
		Slot          uint64              `json:"slot"`
		EmailSealed   []byte              `json:"email"`
		EmailIndex    []byte              `json:"email_index"`
		EmailVerified bool                `json:"email_verified"`
		GoogleSealed  []byte              `json:"google,omitempty"`
		GoogleIndex   []byte              `json:"google_index,omitempty"`
		PasswordHash  string              `json:"password_hash,omitempty"`
		Plan          string              `json:"plan"`
		Status        store.AccountStatus `json:"status"`
		Created       time.Time           `json:"created"`
		AgeAttested   time.Time           `json:"age_attested"`
		Settings      store.Settings      `json:"settings"`
		Balance       int64               `json:"balance"`
		Held          int64               `json:"held"`
		LedgerSeq     uint64              `json:"ledger_seq"`
		GrantPeriod   string              `json:"grant_period,omitempty"`
	}
	boltSession struct {
		AccountID string        `json:"account"`
		Created   time.Time     `json:"created"`
		LastSeen  time.Time     `json:"last_seen"`
		Idle      time.Duration `json:"idle"`
		Expires   time.Time     `json:"expires"`
	}
	boltToken struct {
		AccountID string    `json:"account"`
		Purpose   string    `json:"purpose"`
		Expires   time.Time `json:"expires"`
		NewEmail  []byte    `json:"new_email,omitempty"`
	}
	boltSecurity struct {
		Time      time.Time `json:"time"`
		Kind      string    `json:"kind"`
		AccountID string    `json:"account,omitempty"`
		Day       uint64    `json:"day"`
		Client    []byte    `json:"client,omitempty"`
		Detail    string    `json:"detail,omitempty"`
	}
	boltEvent struct {
		Type     string    `json:"type"`
		Created  time.Time `json:"created"`
		Received time.Time `json:"received"`
	}
	boltGen struct {
		store.Generation
		Prompt         []byte `json:"prompt"`
		NegativePrompt []byte `json:"negative_prompt,omitempty"`
	}
	boltObject struct {
		Ext          string    `json:"ext"`
		Refs         int       `json:"refs"`
		Model        string    `json:"model"`
		ModelVersion string    `json:"model_version"`
		Created      time.Time `json:"created"`
		Keys         []string  `json:"keys,omitempty"`
	}
	boltProfile struct {
		DisplayName []byte `json:"display_name,omitempty"`
	}
	boltReport struct {
		ID        string    `json:"id"`
		Slot      uint64    `json:"slot"`
		Created   time.Time `json:"created"`
		HoldUntil time.Time `json:"hold_until"`
		Category  string    `json:"category"`
		Source    string    `json:"source"`
		ImageSize int       `json:"image_size,omitempty"`
		Details   []byte    `json:"details"`
	}
	boltDSAR struct {
		ID          string         `json:"id"`
		Slot        uint64         `json:"slot"`
		Kind        store.DSARKind `json:"kind"`
		EmailSealed []byte         `json:"email,omitempty"`
		NoteSealed  []byte         `json:"note,omitempty"`
		Received    time.Time      `json:"received"`
		Deadline    time.Time      `json:"deadline"`
		Created     time.Time      `json:"created"`
		Closed      time.Time      `json:"closed,omitzero"`
		CloseSealed []byte         `json:"close_note,omitempty"`
		Erased      bool           `json:"erased,omitempty"`
	}
	boltJob struct {
		store.Job
		Sealed       []byte `json:"request"`
		ResumeSlot   uint64 `json:"resume_slot,omitempty"`
		ResumeSealed []byte `json:"resume,omitempty"`
	}
	boltNotifyJob struct {
		store.NotifyJob
		ListAfter string `json:"list_after,omitempty"`
		SendAfter []byte `json:"send_after,omitempty"`
	}
)

// copyTables are the tables a copy fills, in the order it reports them.
var copyTables = []string{
	"accounts", "sessions", "email_tokens", "api_keys", "ledger", "holds", "consents", "security_log",
	"billing", "stripe_payments", "webhook_events", "billing_flags", "generations", "objects", "object_refs",
	"doomed_objects", "erasures", "profiles", "analytics_days", "reports", "dsar_requests", "notify_jobs",
	"notify_recipients", "partners", "partner_usage", "jobs", "meta",
}

// CopyFromBolt copies every record of the bbolt store src into this empty
// database in one transaction, sealed fields as they are: the copy opens
// with the same key files (src's Path+".keys" and the others), which must
// be the files this DB was opened with. It refuses a database that has
// accounts. After the commit it reads the rows back and checks counts and
// checksums against the source.
func (db *DB) CopyFromBolt(ctx context.Context, src *store.DB) (CopyReport, error) {
	var recs []rawRecord
	seqs := map[string]uint64{}
	err := src.EachRaw(func(bucket string, k, v []byte) error {
		recs = append(recs, rawRecord{bucket, k, v})
		return nil
	}, func(bucket string, n uint64) { seqs[bucket] = n })
	if err != nil {
		return CopyReport{}, fmt.Errorf("postgres: read the bbolt store: %w", err)
	}
	want := CopyReport{Counts: map[string]int{}, Checksums: map[string]string{}}
	sums := newChecksums()
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrNotEmpty
		}
		// The target's own meta (its index fingerprint) is replaced by the
		// source's, which names the same key file.
		if _, err := tx.Exec(ctx, `DELETE FROM meta`); err != nil {
			return err
		}
		c := &copier{ctx: ctx, tx: tx, counts: want.Counts, sums: sums, partnerSecrets: map[string][]byte{}}
		for _, r := range recs {
			if err := c.put(r); err != nil {
				return fmt.Errorf("postgres: copy %s record %q: %w", r.bucket, printable(r.key), err)
			}
		}
		if err := c.putPartners(); err != nil {
			return fmt.Errorf("postgres: copy partners: %w", err)
		}
		// A source that never rotated its lookup-index key uses slot 0;
		// the row must exist for index writers to lock it.
		tag, err := tx.Exec(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, metaIndexSlot, slotBytes(0))
		if err != nil {
			return err
		}
		want.Counts["meta"] += int(tag.RowsAffected())
		return c.setSequences(seqs)
	})
	if err != nil {
		return CopyReport{}, err
	}
	want.Checksums = sums.final()
	// The lookup-index key is now the source's. If bbolt had rotated it,
	// slot 0 holds only the key this database made for itself at Open
	// (bbolt destroyed its own): nothing is indexed under it.
	if _, err := db.indexKeyIn(ctx, db.pool, ""); err != nil {
		return want, err
	}
	if db.index.Load().slot != 0 {
		if err := db.keys.DestroyIndexKey(0); err != nil {
			return want, err
		}
	}
	got, err := db.copyChecksums(ctx)
	if err != nil {
		return want, err
	}
	var bad []string
	for _, t := range copyTables {
		var rows int
		if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&rows); err != nil {
			return want, err
		}
		if rows != want.Counts[t] {
			bad = append(bad, fmt.Sprintf("%s: %d rows, %d copied", t, rows, want.Counts[t]))
		}
	}
	for t, sum := range want.Checksums {
		if got[t] != sum {
			bad = append(bad, fmt.Sprintf("%s: checksum differs", t))
		}
	}
	if len(bad) > 0 {
		return want, fmt.Errorf("postgres: the copy does not match its source: %s", strings.Join(bad, "; "))
	}
	return want, nil
}

type rawRecord struct {
	bucket string
	key    []byte
	value  []byte
}

func printable(k []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 32 || r > 126 {
			return '.'
		}
		return r
	}, string(k))
}

type copier struct {
	ctx    context.Context
	tx     pgx.Tx
	counts map[string]int
	sums   *checksums
	// A partner row needs its secret's hash (bbolt's partner_secrets
	// index) and comes before its usage (the foreign key): the three
	// buckets are gathered and written by putPartners.
	partners       []store.Partner
	partnerSecrets map[string][]byte // partner id → secret hash
	partnerUsage   []rawRecord
}

// putPartners writes the gathered partner records and their usage.
func (c *copier) putPartners() error {
	for _, p := range c.partners {
		hash, ok := c.partnerSecrets[p.ID]
		if !ok {
			return fmt.Errorf("partner %s has no secret key", p.ID)
		}
		origins := p.Origins
		if origins == nil {
			origins = []string{}
		}
		c.sums.add("partners", p.ID, p.PublishableKey, hex.EncodeToString(hash), strings.Join(origins, " "),
			fmt.Sprint(p.MonthlyQuota, p.RateLimit, p.Disabled), p.Plan, p.WebhookURL, p.WebhookSecret)
		if err := c.exec("partners", `INSERT INTO partners (`+partnerCols+`, secret_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
			p.ID, p.Name, origins, p.MonthlyQuota, p.RateLimit, p.Plan, p.Disabled, p.PublishableKey,
			p.SecretHint, p.WebhookURL, p.WebhookSecret, p.Created, p.Updated, hash); err != nil {
			return err
		}
	}
	for _, r := range c.partnerUsage {
		parts, err := splitKey(r.key, 2)
		if err != nil {
			return err
		}
		if len(r.value) != 8 {
			return fmt.Errorf("partner usage %q: bad count", printable(r.key))
		}
		day, err := time.Parse(time.DateOnly, parts[1])
		if err != nil {
			return fmt.Errorf("partner usage %q: %w", printable(r.key), err)
		}
		images := binary.BigEndian.Uint64(r.value)
		c.sums.add("partner_usage", parts[0], parts[1], fmt.Sprint(images))
		if err := c.exec("partner_usage", `INSERT INTO partner_usage (partner_id, day, images) VALUES ($1, $2, $3)`,
			parts[0], day, int64(images)); err != nil {
			return err
		}
	}
	return nil
}

func (c *copier) exec(table, sql string, args ...any) error {
	if _, err := c.tx.Exec(c.ctx, sql, args...); err != nil {
		return err
	}
	c.counts[table]++
	return nil
}

func splitKey(k []byte, n int) ([]string, error) {
	parts := bytes.SplitN(k, []byte{0}, n)
	if len(parts) != n {
		return nil, errors.New("bad composite key")
	}
	out := make([]string, n)
	for i, p := range parts {
		out[i] = string(p)
	}
	return out, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// put writes one bbolt record; index buckets (derived data) are skipped.
func (c *copier) put(r rawRecord) error {
	k, v := r.key, r.value
	switch r.bucket {
	case "account_emails", "account_google", "account_sessions", "account_api_keys", "ledger_refs",
		"account_security_log", "stripe_customers", "generation_keys", "generation_expiry":
		return nil // indexes, rebuilt by the schema's columns
	case "job_owners", "job_idempotency":
		return nil // indexes: the jobs table's owner and idem_key columns
	case "jobs":
		// Every job, finished or not, sealed as it is (same key files);
		// leases are dropped, the old process being stopped, so the first
		// gateway on the database runs the unfinished ones at once.
		var j boltJob
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		job := j.Job
		job.LeaseHolder, job.LeaseUntil = "", time.Time{}
		rec, err := jobRecord(job)
		if err != nil {
			return err
		}
		var resume []byte
		if !job.Finished() {
			resume = j.ResumeSealed
		}
		c.sums.add("jobs", job.ID, job.Owner, job.Status, hex.EncodeToString(j.Sealed), hex.EncodeToString(resume))
		return c.exec("jobs", `INSERT INTO jobs (id, owner, status, created, updated, idem_key, record, request_sealed, resume_slot, resume_sealed)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, job.ID, job.Owner, job.Status, job.Created, job.Updated, job.IdemKey,
			rec, j.Sealed, int64(j.ResumeSlot), resume)
	case "meta":
		switch string(k) {
		case "schema":
			return nil
		case "index_key_fingerprint", "models", "day_keys_floor", metaIndexSlot, metaIndexRetired:
			return c.exec("meta", `INSERT INTO meta (key, value) VALUES ($1, $2)`, string(k), v)
		}
		return fmt.Errorf("unknown meta key")
	case "accounts":
		var a boltAccount
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		c.sums.add("accounts", a.ID, hex.EncodeToString(a.EmailSealed), string(a.Status), fmt.Sprint(a.Balance, a.Held, a.LedgerSeq))
		return c.exec("accounts", `INSERT INTO accounts (`+accountCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
			a.ID, int64(a.Slot), a.EmailSealed, a.EmailIndex, a.EmailVerified, a.GoogleSealed, a.GoogleIndex, a.PasswordHash,
			a.Plan, a.Status, a.Created, a.AgeAttested, a.Settings, a.Balance, a.Held, int64(a.LedgerSeq), a.GrantPeriod)
	case "sessions":
		var s boltSession
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		return c.exec("sessions", `INSERT INTO sessions (hash, account_id, created, last_seen, idle_ns, expires) VALUES ($1, $2, $3, $4, $5, $6)`,
			k, s.AccountID, s.Created, s.LastSeen, int64(s.Idle), s.Expires)
	case "email_tokens":
		var t boltToken
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		return c.exec("email_tokens", `INSERT INTO email_tokens (hash, account_id, purpose, expires, new_email) VALUES ($1, $2, $3, $4, $5)`,
			k, t.AccountID, t.Purpose, t.Expires, t.NewEmail)
	case "api_keys":
		var a store.APIKey
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		scopes := a.Scopes
		if scopes == nil {
			scopes = []string{} // an old record: reads as the default scopes
		}
		return c.exec("api_keys", `INSERT INTO api_keys (hash, `+apiKeyCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			k, a.ID, a.AccountID, a.Name, a.Hint, a.Created, a.LastUsed, scopes, nullTime(a.Flagged), a.FlaggedBy)
	case "ledger":
		parts, err := splitKey(k, 2)
		if err != nil {
			return err
		}
		var e store.LedgerEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		c.sums.add("ledger", parts[0], fmt.Sprint(e.Seq), e.Kind, fmt.Sprint(e.Amount, e.Balance), e.Ref)
		return c.exec("ledger", `INSERT INTO ledger (account_id, `+ledgerCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			parts[0], int64(e.Seq), e.Time, e.Kind, e.Amount, e.Balance, e.Ref, e.MoneyMinor, e.Currency)
	case "credit_holds":
		var h store.Hold
		if err := json.Unmarshal(v, &h); err != nil {
			return err
		}
		return c.exec("holds", `INSERT INTO holds (id, account_id, amount, ref, created) VALUES ($1, $2, $3, $4, $5)`,
			h.ID, h.AccountID, h.Amount, h.Ref, h.Created)
	case "consents":
		var cs store.Consent
		if err := json.Unmarshal(v, &cs); err != nil {
			return err
		}
		return c.exec("consents", `INSERT INTO consents (subject, visitor, revision, preferences, analytics, source, time)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, cs.Subject, cs.Visitor, cs.Revision, cs.Preferences, cs.Analytics, cs.Source, cs.Time)
	case "security_log":
		var s boltSecurity
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		return c.exec("security_log", `INSERT INTO security_log (id, time, kind, account_id, day, client, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			k, s.Time, s.Kind, s.AccountID, int64(s.Day), s.Client, s.Detail)
	case "billing":
		parts, err := splitKey(k, 2)
		if err != nil {
			return err
		}
		switch parts[0] {
		case "account":
			var b store.Billing
			if err := json.Unmarshal(v, &b); err != nil {
				return err
			}
			return c.exec("billing", `INSERT INTO billing (account_id, customer_id, state) VALUES ($1, nullif($2, ''), $3)`, b.AccountID, b.CustomerID, v)
		case "payment":
			return c.exec("stripe_payments", `INSERT INTO stripe_payments (key, record) VALUES ($1, $2)`, parts[1], v)
		}
		return fmt.Errorf("unknown billing record")
	case "webhook_events":
		var e boltEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		return c.exec("webhook_events", `INSERT INTO webhook_events (id, type, created, received) VALUES ($1, $2, $3, $4)`, string(k), e.Type, e.Created, e.Received)
	case "billing_flags":
		return c.exec("billing_flags", `INSERT INTO billing_flags (id, flag) VALUES ($1, $2)`, string(k), v)
	case "generations":
		parts, err := splitKey(k, 2)
		if err != nil {
			return err
		}
		var g boltGen
		if err := json.Unmarshal(v, &g); err != nil {
			return err
		}
		gen := g.Generation
		gen.Prompt, gen.NegativePrompt = "", ""
		rec, err := json.Marshal(gen)
		if err != nil {
			return err
		}
		c.sums.add("generations", parts[0], gen.ID, gen.Object, hex.EncodeToString(g.Prompt))
		return c.exec("generations", `INSERT INTO generations (account_id, id, content_key, object, last_access, expires, record, prompt_sealed, negative_sealed)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, parts[0], gen.ID, gen.ContentKey, gen.Object, gen.LastAccess, gen.Expires, rec, g.Prompt, g.NegativePrompt)
	case "objects":
		var o boltObject
		if err := json.Unmarshal(v, &o); err != nil {
			return err
		}
		keys := o.Keys
		if keys == nil {
			keys = []string{}
		}
		c.sums.add("objects", string(k), fmt.Sprint(o.Refs))
		return c.exec("objects", `INSERT INTO objects (hash, ext, model, model_version, created, refs, keys) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			string(k), o.Ext, o.Model, o.ModelVersion, o.Created, o.Refs, keys)
	case "object_refs":
		parts, err := splitKey(k, 3)
		if err != nil {
			return err
		}
		var expires *time.Time
		if len(v) == 8 {
			t := time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
			expires = &t
		}
		return c.exec("object_refs", `INSERT INTO object_refs (hash, owner, ref_id, expires) VALUES ($1, $2, $3, $4)`, parts[0], parts[1], parts[2], expires)
	case "doomed_objects":
		var d store.DoomedObject
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		keys := d.Keys
		if keys == nil {
			keys = []string{}
		}
		return c.exec("doomed_objects", `INSERT INTO doomed_objects (hash, ext, since, keys, state) VALUES ($1, $2, $3, $4, $5)`, d.Hash, d.Ext, d.Since, keys, d.State)
	case "erasures":
		var j store.ErasureJob
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		return c.exec("erasures", `INSERT INTO erasures (account_id, reason, started, mailed, slot) VALUES ($1, $2, $3, $4, $5)`,
			j.AccountID, j.Reason, j.Started, j.Mailed, int64(j.Slot))
	case "profiles":
		var p boltProfile
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		return c.exec("profiles", `INSERT INTO profiles (account_id, display_name) VALUES ($1, $2)`, string(k), p.DisplayName)
	case "analytics":
		return c.exec("analytics_days", `INSERT INTO analytics_days (day, record) VALUES ($1, $2)`, string(k), v)
	case "reports":
		if id, ok := bytes.CutSuffix(k, []byte("\x00image")); ok {
			// Images are written with their report; this runs after it
			// (the key sorts after the report's id).
			_, err := c.tx.Exec(c.ctx, `UPDATE reports SET image_sealed = $2 WHERE id = $1`, string(id), v)
			return err
		}
		var rp boltReport
		if err := json.Unmarshal(v, &rp); err != nil {
			return err
		}
		c.sums.add("reports", rp.ID, hex.EncodeToString(rp.Details))
		return c.exec("reports", `INSERT INTO reports (id, slot, created, hold_until, category, source, image_size, details)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, rp.ID, int64(rp.Slot), rp.Created, rp.HoldUntil, rp.Category, rp.Source, rp.ImageSize, rp.Details)
	case "dsar_requests":
		var d boltDSAR
		if err := json.Unmarshal(v, &d); err != nil {
			return err
		}
		return c.exec("dsar_requests", `INSERT INTO dsar_requests (id, slot, kind, email_sealed, note_sealed, received, deadline, created, closed, close_sealed, erased)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`, d.ID, int64(d.Slot), d.Kind, d.EmailSealed, d.NoteSealed,
			d.Received, d.Deadline, d.Created, nullTime(d.Closed), d.CloseSealed, d.Erased)
	case "notify_jobs":
		var j boltNotifyJob
		if err := json.Unmarshal(v, &j); err != nil {
			return err
		}
		seq, err := notifySeq(j.ID)
		if err != nil {
			return err
		}
		rec := notifyJobRecord{NotifyJob: j.NotifyJob, ListAfter: j.ListAfter, SendAfter: string(j.SendAfter)}
		raw, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return c.exec("notify_jobs", `INSERT INTO notify_jobs (id, seq, state, record) VALUES ($1, $2, $3, $4)`, j.ID, seq, j.State, raw)
	case "partner_publishable":
		return nil // an index, the partners table's unique column
	case "partner_secrets":
		c.partnerSecrets[string(v)] = k
		return nil
	case "partners":
		var p store.Partner
		if err := json.Unmarshal(v, &p); err != nil {
			return err
		}
		c.partners = append(c.partners, p)
		return nil
	case "partner_usage":
		c.partnerUsage = append(c.partnerUsage, r)
		return nil
	case "notify_recipients":
		parts, err := splitKey(k, 2)
		if err != nil {
			return err
		}
		return c.exec("notify_recipients", `INSERT INTO notify_recipients (job_id, account_id, state) VALUES ($1, $2, $3)`, parts[0], parts[1], string(v))
	}
	return fmt.Errorf("unknown bucket")
}

func notifySeq(id string) (int64, error) {
	var n int64
	if _, err := fmt.Sscanf(id, "notify-%d", &n); err != nil {
		return 0, fmt.Errorf("notify job id %q: %w", id, err)
	}
	return n, nil
}

// setSequences moves the target's sequences past everything the source
// handed out, so no key slot or id is ever reused.
func (c *copier) setSequences(seqs map[string]uint64) error {
	for _, s := range []struct {
		seq, bucket, floor string
	}{
		{"account_key_slots", "accounts", `SELECT greatest(coalesce((SELECT max(slot) FROM accounts), 0), coalesce((SELECT max(slot) FROM dsar_requests), 0), coalesce((SELECT max(slot) FROM erasures), 0), coalesce((SELECT max(resume_slot) FROM jobs), 0))`},
		{"report_key_slots", "reports", `SELECT coalesce(max(slot), 0) FROM reports`},
		{"dsar_seq", "dsar_requests", `SELECT 0`},
		{"notify_seq", "notify_jobs", `SELECT coalesce(max(seq), 0) FROM notify_jobs`},
		{"generation_seq", "generations", `SELECT 0`},
	} {
		var floor int64
		if err := c.tx.QueryRow(c.ctx, s.floor).Scan(&floor); err != nil {
			return err
		}
		n := max(int64(seqs[s.bucket]), floor)
		if n == 0 {
			continue
		}
		if _, err := c.tx.Exec(c.ctx, `SELECT setval($1, $2)`, s.seq, n); err != nil {
			return err
		}
	}
	return nil
}

// checksums hashes the canonical rows of a few tables, in key order.
type checksums struct{ rows map[string][]string }

func newChecksums() *checksums { return &checksums{rows: map[string][]string{}} }

func (c *checksums) add(table string, fields ...string) {
	c.rows[table] = append(c.rows[table], strings.Join(fields, "\x00"))
}

func (c *checksums) final() map[string]string {
	out := map[string]string{}
	for _, t := range []string{"accounts", "ledger", "generations", "objects", "reports", "partners", "partner_usage", "jobs"} {
		rows := slices.Clone(c.rows[t])
		slices.Sort(rows)
		h := sha256.New()
		for _, r := range rows {
			h.Write([]byte(r))
			h.Write([]byte{'\n'})
		}
		out[t] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

// copyChecksums computes the same checksums from the database's rows.
func (db *DB) copyChecksums(ctx context.Context) (map[string]string, error) {
	sums := newChecksums()
	queries := map[string]string{
		"accounts":    `SELECT id, encode(email_sealed, 'hex'), status, balance::text || ' ' || held::text || ' ' || ledger_seq::text FROM accounts`,
		"ledger":      `SELECT account_id, seq::text, kind, amount::text || ' ' || balance::text, ref FROM ledger`,
		"generations": `SELECT account_id, id, object, encode(prompt_sealed, 'hex') FROM generations`,
		"objects":     `SELECT hash, refs::text FROM objects`,
		"reports":     `SELECT id, encode(details, 'hex') FROM reports`,
		"partners": `SELECT id, publishable_key, encode(secret_hash, 'hex'), array_to_string(origins, ' '),
			monthly_quota::text || ' ' || rate_limit::text || ' ' || disabled::text, plan, webhook_url, webhook_secret FROM partners`,
		"partner_usage": `SELECT partner_id, to_char(day, 'YYYY-MM-DD'), images::text FROM partner_usage`,
		"jobs":          `SELECT id, owner, status, encode(request_sealed, 'hex'), coalesce(encode(resume_sealed, 'hex'), '') FROM jobs`,
	}
	for table, q := range queries {
		rows, err := db.pool.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([]string, error) {
			vals, err := row.Values()
			out := make([]string, len(vals))
			for i, v := range vals {
				out[i] = fmt.Sprint(v)
			}
			return out, err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			sums.add(table, r...)
		}
	}
	return sums.final(), nil
}
