package inference

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/wrapperspb"

	inferencev1 "github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1"
	"github.com/imagegate/imagegate/internal/gen/imagegate/inference/v1/inferencev1connect"
)

// maxResponseBytes bounds one response message: a 4096×4096 PNG with room
// to spare. It protects the gateway from a broken or hostile tier.
const maxResponseBytes = 128 << 20

// endpoint is one inference server as the pool sees it.
type endpoint struct {
	index  int
	name   string // URL for logs, credentials redacted
	client inferencev1connect.InferenceServiceClient
	health *connect.Client[wrapperspb.StringValue, wrapperspb.Int32Value]
	up     atomic.Bool  // passed its last probe and no transport failure since
	active atomic.Int64 // calls in flight
}

func newEndpoint(index int, base *url.URL, h2c, tls *http.Client) *endpoint {
	httpClient := tls
	if base.Scheme == "http" {
		httpClient = h2c
	}
	baseURL := strings.TrimSuffix(base.String(), "/")
	opts := []connect.ClientOption{
		// Image bytes are PNGs already: neither ask for compressed
		// responses nor compress requests (the default).
		connect.WithAcceptCompression("gzip", nil, nil),
		connect.WithReadMaxBytes(maxResponseBytes),
	}
	return &endpoint{
		index:  index,
		name:   base.Redacted(),
		client: inferencev1connect.NewInferenceServiceClient(httpClient, baseURL, opts...),
		// grpchealth keeps its protobuf types internal. On the wire
		// grpc.health.v1.HealthCheckRequest is one string in field 1 and
		// HealthCheckResponse one enum (a varint) in field 1: exactly the
		// encodings of StringValue and Int32Value.
		health: connect.NewClient[wrapperspb.StringValue, wrapperspb.Int32Value](
			httpClient, baseURL+"/grpc.health.v1.Health/Check", opts...),
	}
}

// healthServing is grpc.health.v1.HealthCheckResponse.SERVING.
const healthServing = 1

// check asks the endpoint whether the inference service is serving.
func (e *endpoint) check(ctx context.Context, token string) error {
	res, err := e.health.CallUnary(ctx, withToken(connect.NewRequest(
		&wrapperspb.StringValue{Value: inferencev1connect.InferenceServiceName}), token))
	if err != nil {
		return err
	}
	if status := res.Msg.GetValue(); status != healthServing {
		return fmt.Errorf("inference: health status %d", status)
	}
	return nil
}

// setUp records the endpoint's state and logs changes.
func (e *endpoint) setUp(logger *slog.Logger, up bool, cause error) {
	if e.up.Swap(up) == up {
		return
	}
	if up {
		logger.Info("inference endpoint up", "endpoint", e.name)
	} else {
		logger.Warn("inference endpoint down", "endpoint", e.name, "err", cause)
	}
}

func withToken[T any](req *connect.Request[T], token string) *connect.Request[T] {
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	return req
}

// newTransport returns a transport speaking HTTP/2: with prior knowledge
// over plain TCP (h2c, for private networks and loopback), or negotiated
// over TLS.
func newTransport(h2c bool) *http.Transport {
	protocols := new(http.Protocols)
	if h2c {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
	}
	t := &http.Transport{
		Protocols: protocols,
		DialContext: (&net.Dialer{
			// A dead host should cost seconds, not the whole call budget.
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
		// Connect negotiates compression itself; keep the transport from
		// asking for gzip behind its back.
		DisableCompression: true,
		HTTP2: &http.HTTP2Config{
			// Ping idle connections so a peer that vanished without a
			// FIN is noticed before a call is sent down the dead link.
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     5 * time.Second,
		},
	}
	if !h2c {
		// Prior-knowledge h2c cannot pass a proxy; TLS can.
		t.Proxy = http.ProxyFromEnvironment
	}
	return t
}

// toModels converts a ListModels response.
func toModels(res *inferencev1.ListModelsResponse) []ModelInfo {
	models := make([]ModelInfo, 0, len(res.GetModels()))
	for _, m := range res.GetModels() {
		models = append(models, modelFromProto(m))
	}
	return models
}
