package inference

import "errors"

// ErrInvalidArgument marks a request the backend cannot serve as asked.
var ErrInvalidArgument = errors.New("inference: invalid argument")

// ErrBackendConfig marks a backend failure that is the deployment's fault
// (a refused API key, a model the endpoint does not have): retrying on
// another worker does not help.
var ErrBackendConfig = errors.New("inference: backend misconfigured")
