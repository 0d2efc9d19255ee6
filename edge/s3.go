package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// ErrAccessDenied reports that the object store refused a request as
// unauthorized (HTTP 401 or 403, or a signature for the wrong region):
// wrong access key or secret, a key without permission on the bucket, a
// wrong Region, or a clock too far off for the signature.
var ErrAccessDenied = errors.New("edge: object store denied access")

// DefaultS3Region is the signing region when S3Config.Region is empty:
// what Cloudflare R2 expects.
const DefaultS3Region = "auto"

// OutputCacheControl is the Cache-Control of content-addressed outputs
// (names under "o/"): the bytes behind such a name never change, so every
// cache may keep them for good.
const OutputCacheControl = "public, max-age=31536000, immutable"

// MaxPresignTTL is the longest validity a SigV4 presigned URL may have.
const MaxPresignTTL = 7 * 24 * time.Hour

// maxConflictAttempts bounds the PUTs tried while the service answers 409
// ConditionalRequestConflict (a concurrent conditional write to the same
// name was in progress; S3 asks the client to retry).
const maxConflictAttempts = 4

// checkName is what Check asks for. It can never name one of our objects
// (names never start with a dot), so a correct setup answers NoSuchKey.
const checkName = ".imagegate-check"

// S3Config configures an S3 object store.
type S3Config struct {
	// Endpoint is the S3 API base URL, for R2
	// "https://<account id>.r2.cloudflarestorage.com". Required; http is
	// accepted (for a local server) but credentials are never put in it.
	Endpoint string
	// Bucket holds the objects; it must exist. Required.
	Bucket string
	// AccessKeyID and SecretAccessKey sign every request. Required.
	AccessKeyID, SecretAccessKey string
	// Region is the signing region; "" means DefaultS3Region.
	Region string
}

// Validate reports every problem with c at once. No message contains the
// secret or the access key id.
func (c S3Config) Validate() error {
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("edge: S3 Endpoint is required"))
	} else if err := validateEndpoint(c.Endpoint); err != nil {
		errs = append(errs, err)
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("edge: S3 Bucket is required"))
	} else if !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("edge: S3 Bucket %q is not a bucket name (3 to 63 of [a-z0-9.-], starting and ending with a letter or digit)", c.Bucket))
	}
	if c.AccessKeyID == "" {
		errs = append(errs, errors.New("edge: S3 AccessKeyID is required"))
	}
	if c.SecretAccessKey == "" {
		errs = append(errs, errors.New("edge: S3 SecretAccessKey is required"))
	}
	if strings.ContainsFunc(c.Region, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-') }) {
		errs = append(errs, fmt.Errorf("edge: S3 Region %q is not a region name ([a-z0-9-])", c.Region))
	}
	return errors.Join(errs...)
}

// validateEndpoint refuses what is not a plain http(s) base URL. The
// endpoint is not echoed: it may hold credentials someone pasted into it.
func validateEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	switch {
	case err != nil:
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL
		}
		return fmt.Errorf("edge: S3 Endpoint is not a URL: %w", err)
	case u.User != nil:
		return errors.New("edge: S3 Endpoint must not contain credentials; use AccessKeyID and SecretAccessKey")
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("edge: S3 Endpoint scheme %q is not http or https", u.Scheme)
	case u.Host == "":
		return errors.New("edge: S3 Endpoint has no host")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return errors.New("edge: S3 Endpoint must be a base URL, without path, query or fragment")
	}
	return nil
}

// validBucket reports whether name follows the S3 (and R2) bucket naming
// rules that matter in a path-style URL.
func validBucket(name string) bool {
	if len(name) < 3 || len(name) > 63 {
		return false
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
	for i := 0; i < len(name); i++ {
		if c := name[i]; !alnum(c) && c != '.' && c != '-' {
			return false
		}
	}
	return alnum(name[0]) && alnum(name[len(name)-1])
}

// String describes c without its credentials, so printing a config cannot
// leak them.
func (c S3Config) String() string {
	return fmt.Sprintf("S3Config{Endpoint: %q, Bucket: %q, Region: %q, AccessKeyID: %s, SecretAccessKey: %s}",
		withoutUserinfo(c.Endpoint), c.Bucket, c.Region, redacted(c.AccessKeyID), redacted(c.SecretAccessKey))
}

// GoString is String, so %#v does not print the credentials either.
func (c S3Config) GoString() string { return c.String() }

// LogValue is String's counterpart for log/slog.
func (c S3Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", withoutUserinfo(c.Endpoint)),
		slog.String("bucket", c.Bucket),
		slog.String("region", c.Region),
		slog.String("access_key_id", redacted(c.AccessKeyID)),
		slog.String("secret_access_key", redacted(c.SecretAccessKey)),
	)
}

// withoutUserinfo drops credentials someone may have pasted into an
// endpoint URL (Validate refuses them; String must not print them either).
func withoutUserinfo(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		if strings.Contains(endpoint, "@") {
			return "(unparsable, not shown)"
		}
		return endpoint
	}
	u.User = nil
	return u.String()
}

func redacted(s string) string {
	if s == "" {
		return "unset"
	}
	return "set"
}

// S3 is an object store in a bucket of an S3-compatible service such as
// Cloudflare R2. It has Local's semantics: Put is first-writer-wins through
// a conditional PUT (If-None-Match: *), which R2, AWS S3 and versitygw
// enforce atomically; missing objects are ErrNotFound. Objects carry their
// Content-Type, and outputs (names under "o/") OutputCacheControl, so a CDN
// or a custom domain in front of the bucket serves them right. S3 is safe
// for concurrent use.
//
// Refused requests (bad or unknown credentials, missing permission, a
// signature for another region) are ErrAccessDenied, never ErrNotFound, so
// a caller cannot mistake a misconfiguration for a missing object. Two
// limits of the protocol: on AWS S3 a key without s3:ListBucket gets 403
// for a missing object, so grant it; and a HEAD's 404 has no body, so Stat
// reports ErrNotFound for a missing bucket too, and on versitygw, which
// answers an unknown access key with 404, for that as well. Check tells
// those apart, with a GET.
type S3 struct {
	client    *s3.Client
	presign   *s3.PresignClient
	transport *http.Transport
	bucket    string
	logger    *slog.Logger
	closed    atomic.Bool

	// now is the clock PresignGet signs with; tests move it.
	now func() time.Time
}

// NewS3 returns an object store over cfg's bucket. It sends nothing: call
// Check to find out whether the bucket and credentials work. Only cfg is
// read for configuration, never the AWS_* environment or ~/.aws files. A
// nil logger discards logs.
func NewS3(cfg S3Config, logger *slog.Logger) (*S3, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	region := cfg.Region
	if region == "" {
		region = DefaultS3Region
	}
	if u, _ := url.Parse(cfg.Endpoint); u.Scheme == "http" && !isLoopback(u.Hostname()) {
		logger.Warn("object store endpoint is plain http: objects travel unencrypted", "host", u.Hostname())
	}

	// The SDK's transport defaults (timeouts, pool sizes), in a client we
	// hold so Close can release its connections. Redirects are not
	// followed: S3 answers a wrong region or endpoint with one, and a
	// signed request must not be replayed elsewhere.
	tr := awshttp.NewBuildableClient().GetTransport()
	hc := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s := &S3{
		bucket:    cfg.Bucket,
		logger:    logger,
		transport: tr,
		now:       time.Now,
	}
	s.client = s3.New(s3.Options{
		Region:       region,
		BaseEndpoint: aws.String(strings.TrimSuffix(cfg.Endpoint, "/")),
		// R2 and most S3-compatible servers want the bucket in the path.
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		// Since 2025 the SDK adds CRC checksums by default, which R2 and
		// older S3-compatible servers refuse.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		HTTPClient:                 hc,
	})
	s.presign = s3.NewPresignClient(s.client, func(o *s3.PresignOptions) {
		o.Presigner = clockPresigner{signer: v4.NewSigner(), now: func() time.Time { return s.now() }}
	})
	return s, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close releases idle connections. Methods called after Close fail.
func (s *S3) Close() error {
	s.closed.Store(true)
	s.transport.CloseIdleConnections()
	return nil
}

// begin is the common start of every operation: a done context, a closed
// store or an invalid name end it before anything is sent.
func (s *S3) begin(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	return validateName(name)
}

var errClosed = errors.New("edge: object store is closed")

// Put stores data under name unless an object of that name exists, and
// reports whether it created one. An existing object is neither uploaded
// again (a HEAD comes first: on R2 it is far cheaper than a PUT and sends no
// bytes) nor rewritten (the PUT is conditional, If-None-Match: *), and of
// concurrent Puts of one name exactly one reports created=true: its bytes
// are the ones stored. One caveat: if a PUT succeeds but its answer is lost
// and the SDK retries, the retry finds the object and Put reports false
// although these bytes were stored.
//
// contentType is stored with the object ("" means the one for the name's
// extension); outputs also get OutputCacheControl. The object is durable
// when Put returns.
func (s *S3) Put(ctx context.Context, name string, data []byte, contentType string) (created bool, err error) {
	if err := s.begin(ctx, name); err != nil {
		return false, err
	}
	if _, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)}); err == nil {
		return false, nil
	} else if err := s.wrap("put", name, err); !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if contentType == "" {
		contentType = ContentTypeForExt(path.Ext(name))
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(name),
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String(contentType),
		IfNoneMatch:   aws.String("*"),
	}
	if strings.HasPrefix(name, "o/") {
		in.CacheControl = aws.String(OutputCacheControl)
	}
	for attempt := 1; ; attempt++ {
		in.Body = bytes.NewReader(data)
		_, err := s.client.PutObject(ctx, in)
		switch code := apiErrorCode(err); {
		case err == nil:
			return true, nil
		case code == "PreconditionFailed":
			return false, nil // someone else created it first; theirs stands
		case code == "ConditionalRequestConflict" && attempt < maxConflictAttempts:
			s.logger.Debug("object store put conflict, retrying", "name", name, "attempt", attempt)
			continue
		default:
			return false, s.wrap("put", name, err)
		}
	}
}

// Get returns the bytes of the named object, or an error wrapping
// ErrNotFound if there is none.
func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	if err := s.begin(ctx, name); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)})
	if err != nil {
		return nil, s.wrap("get", name, err)
	}
	defer out.Body.Close()
	var data []byte
	if n := aws.ToInt64(out.ContentLength); n > 0 {
		data = make([]byte, n)
		_, err = io.ReadFull(out.Body, data)
	} else {
		data, err = io.ReadAll(out.Body)
	}
	if err != nil {
		return nil, s.wrap("get", name, err)
	}
	return data, nil
}

// Stat describes the named object, or returns an error wrapping
// ErrNotFound if there is none. ContentType is the one stored with the
// object, or the one for the name's extension if it has none.
func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	if err := s.begin(ctx, name); err != nil {
		return Info{}, err
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)})
	if err != nil {
		return Info{}, s.wrap("stat", name, err)
	}
	ct := aws.ToString(out.ContentType)
	if ct == "" {
		ct = ContentTypeForExt(path.Ext(name))
	}
	return Info{
		Name:        name,
		Size:        aws.ToInt64(out.ContentLength),
		ContentType: ct,
		ModTime:     aws.ToTime(out.LastModified),
	}, nil
}

// Delete removes the named object; deleting an absent object is not an
// error.
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := s.begin(ctx, name); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)})
	if err != nil {
		if err := s.wrap("delete", name, err); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// Check asks the bucket for an object that cannot exist and reports any
// answer but "no such key": a missing bucket, a refused credential
// (ErrAccessDenied), an unreachable endpoint. Call it at startup so a
// misconfiguration shows there and not at the first generation.
func (s *S3) Check(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(checkName)})
	if err == nil {
		out.Body.Close()
		return nil
	}
	if err := s.wrap("check", "bucket "+s.bucket, err); !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// PresignGet returns a URL that fetches the named object with a plain GET
// for ttl (at most MaxPresignTTL), signed with SigV4 in its query. Whoever
// holds the URL can read the object until then, so hand it only to the
// object's owner. It is for downloads outside the CDN: R2 accepts presigned
// URLs only on its S3 API host, not on a custom domain. It sends nothing and
// does not check that the object exists.
func (s *S3) PresignGet(ctx context.Context, name string, ttl time.Duration) (string, error) {
	if err := s.begin(ctx, name); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxPresignTTL {
		return "", fmt.Errorf("edge: presign %s: ttl %v outside (0, %v]", name, ttl, MaxPresignTTL)
	}
	req, err := s.presign.PresignGetObject(ctx,
		&s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(name)},
		s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("edge: presign %s: %w", name, err)
	}
	return req.URL, nil
}

// clockPresigner signs with its own clock instead of the SDK's, so a test
// can make a URL that is already expired without waiting.
type clockPresigner struct {
	signer *v4.Signer
	now    func() time.Time
}

func (p clockPresigner) PresignHTTP(ctx context.Context, creds aws.Credentials, r *http.Request, payloadHash, service, region string, _ time.Time, optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return p.signer.PresignHTTP(ctx, creds, r, payloadHash, service, region, p.now(), optFns...)
}

// apiErrorCode is the S3 error code in err ("NoSuchKey"), or "".
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// wrap turns an SDK error into ours: a missing object becomes ErrNotFound
// and a refused request ErrAccessDenied. The SDK's message names the operation, the
// status and the service's error code; it never holds credentials, which
// travel only in the signed headers.
func (s *S3) wrap(op, name string, err error) error {
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrAccessDenied) {
		return err // already ours
	}
	denied := false
	switch apiErrorCode(err) {
	case "NoSuchKey", "NotFound": // NotFound: a HEAD's 404, which has no body
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	case "NoSuchBucket":
		return fmt.Errorf("edge: %s %s: bucket %s does not exist: %w", op, name, s.bucket, err)
	case "AuthorizationHeaderMalformed": // signed for another region (400)
		denied = true
	case "XAdminUserNotFound": // versitygw's 404 for an unknown access key
		denied = true
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		// R2 answers bad credentials with 401, S3 with 403.
		denied = denied || re.HTTPStatusCode() == http.StatusUnauthorized || re.HTTPStatusCode() == http.StatusForbidden
	}
	if denied {
		return fmt.Errorf("edge: %s %s: %w (check the access key, its permissions on bucket %s, the region and the clock): %w", op, name, ErrAccessDenied, s.bucket, err)
	}
	return fmt.Errorf("edge: %s %s: %w", op, name, err)
}
