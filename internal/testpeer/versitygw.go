package testpeer

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// VersitygwRegion is the region versitygw is started with: "auto", what
// Cloudflare R2 expects, so clients can keep the R2 default. A request
// signed for any other region is refused.
const VersitygwRegion = "auto"

// S3Server is a running S3 API server that checks SigV4 signatures,
// presigned URLs included, as a real service does: versitygw serving a
// fresh directory with its posix backend, in single-account mode.
type S3Server struct {
	// Endpoint is the base URL, "http://127.0.0.1:<port>". Buckets are
	// addressed path-style.
	Endpoint string
	// Region is VersitygwRegion.
	Region string
	// AccessKey and SecretKey are the root credentials, random per server.
	AccessKey, SecretKey string
	// Dir is the posix backend's directory: one subdirectory per bucket,
	// one file per object.
	Dir string

	client  *s3.Client
	buckets atomic.Int64
}

// Versitygw starts versitygw on a free loopback port over a new temporary
// directory, with random root credentials, and returns once it answers
// signed requests. It is stopped when t ends. Start one per top-level test
// and give each subtest its own bucket (NewBucket): starting takes a
// fraction of a second, and buckets keep subtests apart.
func Versitygw(t testing.TB) *S3Server {
	t.Helper()
	bin := Tool(t, "versitygw", "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	s := &S3Server{
		Region:    VersitygwRegion,
		AccessKey: rand.Text()[:20],
		SecretKey: rand.Text() + rand.Text()[:14],
		Dir:       t.TempDir(),
	}
	StartOnFreePort(t, bin, []string{"ROOT_ACCESS_KEY=" + s.AccessKey, "ROOT_SECRET_KEY=" + s.SecretKey},
		func(addr string) ([]string, func(ctx context.Context) error) {
			s.Endpoint = "http://" + addr
			s.client = s3.New(s3.Options{
				Region:       s.Region,
				BaseEndpoint: aws.String(s.Endpoint),
				UsePathStyle: true,
				Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
				// Readiness is polled by Start; the SDK's own backoff
				// would only slow that down.
				Retryer: aws.NopRetryer{},
			})
			return []string{"--port", addr, "--region", s.Region, "--quiet", "posix", s.Dir},
				func(ctx context.Context) error {
					// A signed request proves more than an open port: the
					// credentials and region were taken.
					_, err := s.client.ListBuckets(ctx, &s3.ListBucketsInput{})
					return err
				}
		})
	return s
}

// NewBucket creates a new, empty bucket and returns its name.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("bucket-%03d", s.buckets.Add(1))
	if _, err := s.client.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("versitygw: create bucket %s: %v", name, err)
	}
	return name
}
