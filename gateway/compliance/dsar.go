package compliance

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/gateway/mail"
	"github.com/imagegate/imagegate/store"
)

// Retention of closed rights requests: the requester's email and the
// notes stay readable for follow-up questions for DSARKeepPersonal after
// closing, then their key is destroyed; the bare record (kind and dates)
// stays as evidence of compliance for DSARKeepRecord.
const (
	DSARKeepPersonal = store.DefaultDSARPersonal
	DSARKeepRecord   = store.DefaultDSARRecord
)

// MaxDSARNote is the longest note on a rights request, in characters.
const MaxDSARNote = 2000

// DSARRequest is a rights request as the operator enters it.
type DSARRequest struct {
	Email string `json:"email"`
	Kind  string `json:"kind"`
	// Received is the day the request arrived, YYYY-MM-DD; empty: today.
	Received string `json:"received"`
	Note     string `json:"note"`
}

// ParseDSAR checks an operator's request, reporting every problem at
// once in one 400 invalid_dsar.
func ParseDSAR(req DSARRequest, now time.Time) (store.NewDSAR, error) {
	var problems []string
	n := store.NewDSAR{Email: strings.TrimSpace(req.Email), Kind: store.DSARKind(req.Kind), Note: req.Note}
	if err := mail.CheckAddress(store.NormalizeEmail(n.Email)); err != nil {
		problems = append(problems, "email: "+strings.TrimPrefix(err.Error(), "mail: invalid address: "))
	}
	if !n.Kind.Valid() {
		var kinds []string
		for _, k := range store.DSARKinds {
			kinds = append(kinds, string(k))
		}
		problems = append(problems, "kind: must be one of "+strings.Join(kinds, ", "))
	}
	if req.Received != "" {
		d, err := time.Parse(time.DateOnly, req.Received)
		switch {
		case err != nil:
			problems = append(problems, "received: must be a date YYYY-MM-DD")
		case d.After(now.UTC()):
			problems = append(problems, "received: must not be in the future")
		default:
			n.Received = d
		}
	}
	if reason := NoteProblem(req.Note); reason != "" {
		problems = append(problems, "note: "+reason)
	}
	if len(problems) > 0 {
		return store.NewDSAR{}, apierror.BadRequest("invalid_dsar", strings.Join(problems, "; "))
	}
	return n, nil
}

// NoteProblem says what is wrong with a note on a rights request, or ""
// when nothing is.
func NoteProblem(s string) string {
	switch {
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return "must be UTF-8 text"
	case utf8.RuneCountInString(s) > MaxDSARNote:
		return fmt.Sprintf("at most %d characters", MaxDSARNote)
	}
	return ""
}
