package billing

import (
	"errors"
	"net/http"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/imagegate/imagegate/gateway/apierror"
)

func TestStripeFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
	}{
		{&stripe.Error{HTTPStatusCode: 400, Type: stripe.ErrorTypeInvalidRequest}, http.StatusBadGateway},
		{&stripe.Error{HTTPStatusCode: 401, Type: stripe.ErrorTypeInvalidRequest}, http.StatusBadGateway},
		{&stripe.Error{HTTPStatusCode: 429}, http.StatusServiceUnavailable},
		{&stripe.Error{HTTPStatusCode: 500, Type: stripe.ErrorTypeAPI}, http.StatusServiceUnavailable},
		{errors.New("dial tcp: connection refused"), http.StatusServiceUnavailable},
	} {
		var ae *apierror.Error
		if !errors.As(stripeFailure("test", tc.err), &ae) {
			t.Fatalf("stripeFailure(%v) has no public face", tc.err)
		}
		if ae.Status != tc.status || !errors.Is(ae, tc.err) || (ae.Status == 503 && ae.RetryAfter == 0) {
			t.Errorf("stripeFailure(%v) = %d %+v, want %d wrapping it", tc.err, ae.Status, ae, tc.status)
		}
	}
}

// storyWorkers is how many accounts play the story's orders, each its
// share of them one after another, all accounts at once: enough to fill
// the store's write batches, few enough to keep the race detector quick.
