package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/imagegate/imagegate/gateway/apierror"
	"github.com/imagegate/imagegate/inference"
	"github.com/imagegate/imagegate/store"
)

// apiError is an error with a public face (see package apierror): the
// status, type, code and message sent to the client.
type apiError = apierror.Error

func badRequest(code, msg string) *apiError { return apierror.BadRequest(code, msg) }

func unavailable(msg string, retryAfter int, err error) *apiError {
	return apierror.Unavailable(msg, retryAfter, err)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

// classify maps any error a handler returns to its public form.
func classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		e := &apiError{Status: fe.Code, Type: "invalid_request_error", Code: codeForStatus(fe.Code), Msg: fe.Message}
		if fe.Code >= 500 {
			e.Type = "server_error"
		}
		return e
	}
	switch {
	case errors.Is(err, inference.ErrInvalidArgument):
		return &apiError{Status: fiber.StatusBadRequest, Type: "invalid_request_error", Code: "invalid_argument", Msg: "the inference tier refused the request parameters", Err: err}
	case errors.Is(err, inference.ErrUnavailable):
		// A tier that refused admission (queue too deep, wait too long)
		// says how long to wait; pass that on rather than a guess.
		return unavailable("the inference tier is unavailable; retry shortly", retryAfterSeconds(err, 2), err)
	case errors.Is(err, store.ErrOutputGone):
		// Another node is deleting this very output; it can be made again
		// in a moment.
		return unavailable("this image is being replaced; retry", 1, err)
	case errors.Is(err, context.DeadlineExceeded):
		return unavailable("generation did not finish in time; retry shortly", 5, err)
	case errors.Is(err, context.Canceled):
		return unavailable("request cancelled", 1, err)
	}
	return &apiError{Status: fiber.StatusInternalServerError, Type: "server_error", Code: "internal_error", Msg: "internal error", Err: err}
}

func codeForStatus(status int) string {
	switch status {
	case fiber.StatusNotFound:
		return "not_found"
	case fiber.StatusMethodNotAllowed:
		return "method_not_allowed"
	case fiber.StatusRequestEntityTooLarge:
		return "body_too_large"
	case fiber.StatusRequestHeaderFieldsTooLarge:
		return "headers_too_large"
	case fiber.StatusRequestTimeout:
		return "timeout"
	}
	if status >= 500 {
		return "internal_error"
	}
	return "invalid_request"
}

// errorHandler is Fiber's single error sink: it logs internal detail and
// sends only the public message, in the DESIGN.md error shape.
func errorHandler(logger *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		ae := classify(err)
		if ae.Status >= 500 {
			// Route pattern, never the URL: query strings hold signatures.
			logger.Error("request failed", "route", routeOf(c), "status", ae.Status, "err", ae.Err)
		}
		if ae.RetryAfter > 0 {
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(ae.RetryAfter))
		}
		return c.Status(ae.Status).JSON(errorBody{Error: errorDetail{Message: ae.Msg, Type: ae.Type, Code: ae.Code}})
	}
}

// routeOf names the matched route pattern, or "unmatched".
func routeOf(c *fiber.Ctx) string {
	p := c.Route().Path
	if p == "/" && c.Path() != "/" {
		// Only middleware mounted with Use matched.
		return "unmatched"
	}
	return p
}
