// Package apierror owns the public face of an error that the gateway sends
// to a client: the HTTP status, the error type, code and message of the
// DESIGN.md error body {"error":{"message","type","code"}}, an optional
// Retry-After, and an internal cause that is logged and never sent.
//
// The engines under gateway/ return an *Error when a request must be
// refused in a particular way; the gateway's single error handler finds it
// with errors.As and writes the body. This package knows nothing of Fiber
// or of any route.
package apierror

import "net/http"

// Error is an error with a public face: the status, type, code and message
// sent to the client. Err, if set, is logged and never sent.
type Error struct {
	Status     int
	Type       string
	Code       string
	Msg        string
	RetryAfter int // seconds; 0 means no Retry-After header
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// BadRequest is a 400 invalid_request_error with the given code.
func BadRequest(code, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Msg: msg}
}

// Unavailable is a 503 server_error "unavailable" asking the client to
// retry after retryAfter seconds; err is the logged cause.
func Unavailable(msg string, retryAfter int, err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "unavailable", Msg: msg, RetryAfter: retryAfter, Err: err}
}
