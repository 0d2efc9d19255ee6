package inference

import "errors"

// ErrInvalidArgument marks a request the backend cannot serve as asked.
var ErrInvalidArgument = errors.New("inference: invalid argument")
