package store

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrJobFinished reports that a notification job has no recipient left.
var ErrJobFinished = errors.New("store: job finished")

// NotifyState is where a notification job is.
type NotifyState string

// Notification job states, in order.
const (
	// NotifyListing: an --all job still collecting its recipients.
	NotifyListing NotifyState = "listing"
	// NotifySending: recipients are being mailed.
	NotifySending NotifyState = "sending"
	// NotifyDone: every recipient was mailed, skipped or failed; the
	// per-recipient rows are gone, the counts stay.
	NotifyDone NotifyState = "done"
)

// Reasons a recipient is skipped.
const (
	SkipDeleted   = "deleted" // no such account (any more)
	SkipSuspended = "suspended"
	SkipErasing   = "erasing"
)

// NotifyCounts is a job's progress. Pending+Sending+Sent+Failed+
// Interrupted+the skipped ones = Total.
type NotifyCounts struct {
	Total   int `json:"total"`
	Pending int `json:"pending"`
	// Sending is the recipient whose mail is being handed over (0 or 1).
	Sending int `json:"sending"`
	Sent    int `json:"sent"`
	// Skipped counts recipients not mailed, by reason (SkipDeleted, ...).
	Skipped map[string]int `json:"skipped"`
	// Failed counts mail the mailer refused.
	Failed int `json:"failed"`
	// Interrupted counts recipients whose mail was being handed over when
	// the process stopped: they may or may not have received it, and are
	// not mailed again, so that nobody gets the notice twice.
	Interrupted int `json:"interrupted"`
}

// NotifyJob is an incident notification mailed to a set of accounts
// (promise S5). The job and each recipient's progress are in the store,
// so a restarted gateway resumes it without mailing anyone twice.
type NotifyJob struct {
	ID string `json:"id"`
	// Subject and Template are the operator's text; the gateway renders
	// the template per recipient. Neither holds personal data.
	Subject  string `json:"subject"`
	Template string `json:"template"`
	// SiteURL is the site's base URL, for the template.
	SiteURL string `json:"site_url,omitempty"`
	// Rate is how many messages per second the job sends at most.
	Rate float64 `json:"rate"`
	// All: every account created up to Created is a recipient.
	All      bool         `json:"all"`
	Created  time.Time    `json:"created"`
	State    NotifyState  `json:"state"`
	Finished time.Time    `json:"finished,omitzero"`
	Counts   NotifyCounts `json:"counts"`
}

// NewNotifyJob is what starting a notification needs: a subject, a
// template, a rate, and the recipients (Accounts, or All).
type NewNotifyJob struct {
	Subject, Template, SiteURL string
	Rate                       float64
	Accounts                   []string
	All                        bool
}

// NotifyRecipient is the account whose mail is to be sent now.
type NotifyRecipient struct {
	AccountID string
	Email     string
	// Created is when the account was created.
	Created time.Time
}

// notifyJobRecord is a job as stored, with its cursors: the last account
// listed (All jobs) and the last recipient key claimed.
type notifyJobRecord struct {
	NotifyJob
	ListAfter string `json:"list_after,omitempty"`
	SendAfter []byte `json:"send_after,omitempty"`
}

// Recipient states, the values of the notify_recipients bucket.
var (
	rcptPending     = []byte("pending")
	rcptSending     = []byte("sending")
	rcptSent        = []byte("sent")
	rcptFailed      = []byte("failed")
	rcptInterrupted = []byte("interrupted")
	rcptSkipped     = "skipped:" // + reason
)

// notifyBatch bounds the rows one transaction of a job looks at.
const notifyBatch = 1000

// CreateNotifyJob records a job. For an explicit list every account is a
// recipient once (ids that name no account are skipped when their turn
// comes); an All job collects its recipients with ListNotifyRecipients.
func (db *DB) CreateNotifyJob(n NewNotifyJob) (NotifyJob, error) {
	var errs []error
	if n.Subject == "" || n.Template == "" {
		errs = append(errs, errors.New("store: a notification needs a subject and a template"))
	}
	if !(n.Rate > 0) {
		errs = append(errs, errors.New("store: a notification's rate must be positive"))
	}
	if n.All == (len(n.Accounts) > 0) {
		errs = append(errs, errors.New("store: a notification goes to a list of accounts or to all of them"))
	}
	if err := errors.Join(errs...); err != nil {
		return NotifyJob{}, err
	}
	var out NotifyJob
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketNotifyJobs)
		seq, err := jobs.NextSequence()
		if err != nil {
			return err
		}
		rec := notifyJobRecord{NotifyJob: NotifyJob{
			ID: "notify-" + strconv.FormatUint(seq, 10), Subject: n.Subject, Template: n.Template, SiteURL: n.SiteURL,
			Rate: n.Rate, All: n.All, Created: db.now().UTC(), State: NotifySending,
			Counts: NotifyCounts{Skipped: map[string]int{}},
		}}
		if n.All {
			rec.State = NotifyListing
		}
		rcpts := tx.Bucket(bucketNotifyRecipients)
		for _, id := range n.Accounts {
			k := compositeKey([]byte(rec.ID), []byte(id))
			if id == "" || rcpts.Get(k) != nil {
				continue
			}
			if err := rcpts.Put(k, rcptPending); err != nil {
				return err
			}
			rec.Counts.Total++
			rec.Counts.Pending++
		}
		out = rec.NotifyJob
		return putJSON(jobs, []byte(rec.ID), rec)
	})
	return out, err
}

// NotifyJob returns a job and its progress.
func (db *DB) NotifyJob(id string) (NotifyJob, error) {
	var rec notifyJobRecord
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketNotifyJobs), []byte(id), &rec)
	})
	return rec.NotifyJob, err
}

// UnfinishedNotifyJobs lists the jobs not yet done, oldest first: a
// starting gateway resumes them.
func (db *DB) UnfinishedNotifyJobs() ([]NotifyJob, error) {
	var out []NotifyJob
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketNotifyJobs).ForEach(func(_, v []byte) error {
			var rec notifyJobRecord
			if err := decodeRecord(v, &rec); err != nil {
				return err
			}
			if rec.State != NotifyDone {
				out = append(out, rec.NotifyJob)
			}
			return nil
		})
	})
	return out, err
}

// ListNotifyRecipients adds up to batch more accounts to an All job (every
// account created up to the job's creation). When none is left the job
// moves on to sending and done is true. Other jobs are done at once.
func (db *DB) ListNotifyRecipients(jobID string, batch int) (done bool, err error) {
	err = db.updateNotifyJob(jobID, func(tx *bolt.Tx, rec *notifyJobRecord) error {
		if rec.State != NotifyListing {
			done = true
			return nil
		}
		rcpts := tx.Bucket(bucketNotifyRecipients)
		c := tx.Bucket(bucketAccounts).Cursor()
		k, v := c.First()
		if rec.ListAfter != "" {
			if k, v = c.Seek([]byte(rec.ListAfter)); k != nil && string(k) == rec.ListAfter {
				k, v = c.Next()
			}
		}
		for n := 0; k != nil && n < batch; k, v = c.Next() {
			n++
			rec.ListAfter = string(k)
			var acct accountRecord
			if err := decodeRecord(v, &acct); err != nil {
				return err
			}
			if acct.Created.After(rec.Created) {
				continue // not affected: it did not exist when the job began
			}
			if err := rcpts.Put(compositeKey([]byte(rec.ID), k), rcptPending); err != nil {
				return err
			}
			rec.Counts.Total++
			rec.Counts.Pending++
		}
		if k == nil {
			rec.State, done = NotifySending, true
		}
		return nil
	})
	return done, err
}

// NextNotifyRecipient claims the job's next recipient: the one returned is
// recorded as being mailed before this returns, so no later run mails it
// again. Recipients whose account is gone, suspended or being erased are
// skipped; one left "being mailed" by an earlier run that stopped is
// counted as interrupted, not mailed again. When nobody is left it
// removes the recipient rows, marks the job done and returns
// ErrJobFinished. The caller reports the outcome with
// FinishNotifyRecipient.
func (db *DB) NextNotifyRecipient(jobID string) (NotifyRecipient, error) {
	for {
		var out NotifyRecipient
		var finished bool
		err := db.updateNotifyJob(jobID, func(tx *bolt.Tx, rec *notifyJobRecord) error {
			switch rec.State {
			case NotifyDone:
				finished = true
				return nil
			case NotifyListing:
				return fmt.Errorf("store: job %s is still listing its recipients", jobID)
			}
			rcpts := tx.Bucket(bucketNotifyRecipients)
			prefix := compositeKey([]byte(rec.ID), nil)
			c := rcpts.Cursor()
			k, v := c.Seek(append(append([]byte(nil), prefix...), rec.SendAfter...))
			for n := 0; n < notifyBatch; k, v = c.Next() {
				n++
				if k == nil || !bytes.HasPrefix(k, prefix) {
					return db.finishNotifyJob(tx, rec, prefix, &finished)
				}
				state := string(v)
				accountID := string(k[len(prefix):])
				rec.SendAfter = append(rec.SendAfter[:0], accountID...)
				switch state {
				case string(rcptSending):
					// Claimed by a run that never reported back.
					if err := rcpts.Put(k, rcptInterrupted); err != nil {
						return err
					}
					rec.Counts.Sending--
					rec.Counts.Interrupted++
					continue
				case string(rcptPending):
				default:
					continue
				}
				r, skip, err := db.notifyTarget(tx, accountID)
				if err != nil {
					return err
				}
				rec.Counts.Pending--
				if skip != "" {
					rec.Counts.Skipped[skip]++
					if err := rcpts.Put(k, []byte(rcptSkipped+skip)); err != nil {
						return err
					}
					continue
				}
				rec.Counts.Sending++
				out = r
				return rcpts.Put(k, rcptSending)
			}
			return nil // looked at a batch without a recipient: go on
		})
		switch {
		case err != nil:
			return NotifyRecipient{}, err
		case finished:
			return NotifyRecipient{}, ErrJobFinished
		case out.AccountID != "":
			return out, nil
		}
	}
}

// notifyTarget opens the account to mail, or says why it is skipped.
func (db *DB) notifyTarget(tx *bolt.Tx, accountID string) (NotifyRecipient, string, error) {
	acct, err := getAccount(tx, accountID)
	if errors.Is(err, ErrNotFound) {
		return NotifyRecipient{}, SkipDeleted, nil
	}
	if err != nil {
		return NotifyRecipient{}, "", err
	}
	switch acct.Status {
	case StatusSuspended:
		return NotifyRecipient{}, SkipSuspended, nil
	case StatusErasing:
		return NotifyRecipient{}, SkipErasing, nil
	}
	a, err := db.openAccount(acct)
	if errors.Is(err, ErrKeyDestroyed) {
		return NotifyRecipient{}, SkipDeleted, nil
	}
	if err != nil {
		return NotifyRecipient{}, "", err
	}
	return NotifyRecipient{AccountID: a.ID, Email: a.Email, Created: a.Created}, "", nil
}

// finishNotifyJob removes a finished job's recipient rows (a batch per
// transaction, so the job is marked done only once they are all gone).
func (db *DB) finishNotifyJob(tx *bolt.Tx, rec *notifyJobRecord, prefix []byte, finished *bool) error {
	rcpts := tx.Bucket(bucketNotifyRecipients)
	var keys [][]byte
	c := rcpts.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(keys) < notifyBatch; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := rcpts.Delete(k); err != nil {
			return err
		}
	}
	if len(keys) == notifyBatch {
		return nil // more to remove in the next transaction
	}
	rec.State, rec.Finished, rec.SendAfter = NotifyDone, db.now().UTC(), nil
	*finished = true
	return nil
}

// NotifyOutcome is what became of a claimed recipient's mail.
type NotifyOutcome int

// Outcomes of a recipient's mail.
const (
	// NotifySent: the mailer accepted it.
	NotifySent NotifyOutcome = iota
	// NotifyFailed: the mailer refused it, or failed in a way that leaves
	// delivery uncertain; it is not tried again.
	NotifyFailed
	// NotifyRetry: the mail certainly did not leave (the mail server was
	// unreachable): the recipient is pending again, next in line.
	NotifyRetry
)

// FinishNotifyRecipient records the outcome of a claimed recipient's mail.
func (db *DB) FinishNotifyRecipient(jobID, accountID string, outcome NotifyOutcome) error {
	return db.updateNotifyJob(jobID, func(tx *bolt.Tx, rec *notifyJobRecord) error {
		rcpts := tx.Bucket(bucketNotifyRecipients)
		k := compositeKey([]byte(rec.ID), []byte(accountID))
		switch string(rcpts.Get(k)) {
		case string(rcptSending):
			rec.Counts.Sending--
		case string(rcptInterrupted):
			// Another run gave up on it too early and went on: a retry
			// could come after the end of the list, so it stays given up.
			if outcome == NotifyRetry {
				return nil
			}
			rec.Counts.Interrupted--
		default:
			return fmt.Errorf("store: recipient of %s is not being mailed: %w", jobID, ErrConflict)
		}
		state := rcptSent
		switch outcome {
		case NotifySent:
			rec.Counts.Sent++
		case NotifyFailed:
			state = rcptFailed
			rec.Counts.Failed++
		case NotifyRetry:
			// The send cursor still points at this recipient, so it is
			// the next one claimed.
			state = rcptPending
			rec.Counts.Pending++
		default:
			return fmt.Errorf("store: unknown notification outcome %d", outcome)
		}
		return rcpts.Put(k, state)
	})
}

// forgetNotifyRecipient removes an account from every unfinished job (for
// erasure): a pending recipient counts as skipped, deleted.
func forgetNotifyRecipient(tx *bolt.Tx, accountID string) error {
	jobs := tx.Bucket(bucketNotifyJobs)
	rcpts := tx.Bucket(bucketNotifyRecipients)
	var recs []notifyJobRecord
	err := jobs.ForEach(func(_, v []byte) error {
		var rec notifyJobRecord
		if err := decodeRecord(v, &rec); err != nil {
			return err
		}
		if rec.State != NotifyDone {
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, rec := range recs {
		k := compositeKey([]byte(rec.ID), []byte(accountID))
		v := rcpts.Get(k)
		if v == nil {
			continue
		}
		switch string(v) {
		case string(rcptPending):
			rec.Counts.Pending--
			rec.Counts.Skipped[SkipDeleted]++
		case string(rcptSending):
			rec.Counts.Sending--
			rec.Counts.Interrupted++
		}
		if string(v) == string(rcptPending) || string(v) == string(rcptSending) {
			if err := putJSON(jobs, []byte(rec.ID), rec); err != nil {
				return err
			}
		}
		if err := rcpts.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) updateNotifyJob(id string, fn func(tx *bolt.Tx, rec *notifyJobRecord) error) error {
	return db.bolt.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketNotifyJobs)
		var rec notifyJobRecord
		if err := getJSON(jobs, []byte(id), &rec); err != nil {
			return err
		}
		if rec.Counts.Skipped == nil {
			rec.Counts.Skipped = map[string]int{}
		}
		if err := fn(tx, &rec); err != nil {
			return err
		}
		return putJSON(jobs, []byte(id), rec)
	})
}
