// Package keyservice keeps the key files that seal personal data for a
// fleet of gateways on one PostgreSQL database, so that gateways on hosts
// without a shared disk (one Fly volume per machine, several regions) all
// seal and open with the same keys while the keys still never enter the
// database and erasure still crypto-shreds: a destroyed key is a slot
// overwritten with zeros in the service's own files, the only place it
// ever lived.
//
// The Server (run by `imagegate keys serve`) serves one key directory's
// three files (store.KeyFiles) over HTTP or HTTPS; the Client is a
// store.KeyBackend that a gateway's store (store/postgres Config.Keys)
// uses instead of local files.
//
// # Protocol
//
// One endpoint, POST /v1/keys, with "Authorization: Bearer <token>" and a
// JSON body of exactly these fields (unknown ones are refused):
//
//	{"op": "create" | "get" | "destroy",
//	 "file": "accounts" | "days" | "reports",
//	 "slot": 0 … MaxSlot,
//	 "tag": "<32 hex digits>"}        (create and get only)
//
// create and get answer 200 {"key": "<base64 of 32 bytes>"}, destroy 200
// {}. A slot that is empty (destroyed or never made) answers 404, a slot
// of another owner 409, a malformed request 400, a body over MaxBody 413,
// a missing or wrong token 401; none of these changes anything. Every
// operation is idempotent (see store.KeyBackend), so the client retries
// all three after a timeout or a 5xx without risk. GET /healthz answers
// 200 without a token, for load balancers.
//
// Nothing is cached on either side: every get reads the slot from the
// file, so a key destroyed through any gateway is unusable on every
// gateway from the moment the destroy returns.
package keyservice

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/imagegate/imagegate/store"
)

// MaxSlot is the highest slot number the service takes: about four
// billion accounts, rights requests, reports or days. It bounds how far
// into a key file (48 bytes a slot) a request can make the service write.
const MaxSlot = 1<<32 - 1

// MaxBody bounds a request body; a valid one is under 150 bytes.
const MaxBody = 1 << 10

// The operations.
const (
	OpCreate  = "create"
	OpGet     = "get"
	OpDestroy = "destroy"
)

// Request is one parsed, valid request.
type Request struct {
	Op   string
	File store.KeyFile
	Slot uint64
	Tag  store.KeyTag // zero for destroy
}

// wireRequest is a request as it travels.
type wireRequest struct {
	Op   string  `json:"op"`
	File string  `json:"file"`
	Slot *uint64 `json:"slot"`
	Tag  *string `json:"tag,omitempty"`
}

// wireKey is the answer of create and get.
type wireKey struct {
	Key []byte `json:"key"` // base64 in JSON
}

// wireError is the answer of a failure.
type wireError struct {
	Error string `json:"error"`
}

// ErrBadRequest wraps every reason ParseRequest refuses a body.
var ErrBadRequest = errors.New("keyservice: bad request")

// ParseRequest decodes and validates one request body: one JSON object of
// known fields, a known op and file, a slot within MaxSlot, and a tag of
// 32 hex digits exactly when the op needs one.
func ParseRequest(body []byte) (Request, error) {
	bad := func(format string, a ...any) (Request, error) {
		return Request{}, fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var w wireRequest
	if err := dec.Decode(&w); err != nil {
		return bad("%v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("one JSON object, nothing after it")
	}
	var r Request
	switch w.Op {
	case OpCreate, OpGet, OpDestroy:
		r.Op = w.Op
	default:
		return bad("op must be create, get or destroy")
	}
	switch f := store.KeyFile(w.File); f {
	case store.AccountKeys, store.DayKeys, store.ReportKeys:
		r.File = f
	default:
		return bad("file must be accounts, days or reports")
	}
	if w.Slot == nil {
		return bad("slot is required")
	}
	if *w.Slot > MaxSlot {
		return bad("slot must be at most %d", uint64(MaxSlot))
	}
	r.Slot = *w.Slot
	if r.Op == OpDestroy {
		if w.Tag != nil {
			return bad("destroy takes no tag")
		}
		return r, nil
	}
	if w.Tag == nil {
		return bad("tag is required")
	}
	if len(*w.Tag) != 2*len(r.Tag) {
		return bad("tag must be %d hex digits", 2*len(r.Tag))
	}
	if _, err := hex.Decode(r.Tag[:], []byte(*w.Tag)); err != nil {
		return bad("tag must be %d hex digits", 2*len(r.Tag))
	}
	return r, nil
}

// EncodeRequest is r as the client sends it.
func EncodeRequest(r Request) []byte {
	w := wireRequest{Op: r.Op, File: string(r.File), Slot: &r.Slot}
	if r.Op != OpDestroy {
		tag := hex.EncodeToString(r.Tag[:])
		w.Tag = &tag
	}
	raw, _ := json.Marshal(w)
	return raw
}
