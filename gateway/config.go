package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Config holds the gateway's tunables. The zero value of every field means
// "use the default"; call Validate after setting fields.
type Config struct {
	// PublicURL is the base of links the gateway hands out; empty means
	// derive it from the request's scheme and Host.
	PublicURL string
	// CDNURL, when set, replaces PublicURL as the base of output links.
	CDNURL string
	// DefaultModel is the backend used when a request names none; empty
	// means the first model the inference tier lists.
	DefaultModel string
	// DefaultSize is used when a request has no size ("512x512").
	DefaultSize string
	// MaxPromptBytes bounds prompt and negative prompt (2000).
	MaxPromptBytes int
	// MaxJSONBytes bounds JSON request bodies (64 KiB).
	MaxJSONBytes int
	// MaxUploadBytes bounds a multipart edit body (20 MiB).
	MaxUploadBytes int
	// MaxUploadPixels bounds a reference image's width×height, checked from
	// its header before any pixel is decoded (16,777,216 = 4096²).
	MaxUploadPixels int
	// RequestTimeout bounds one generation request end to end (90 s, under
	// Cloudflare's 100 s origin limit).
	RequestTimeout time.Duration
	// HSTS adds Strict-Transport-Security to every response. Turn it on
	// only when the site is served over HTTPS.
	HSTS bool
	// ModelRefresh is how often the model catalogue is re-read from the
	// inference tier (30 s).
	ModelRefresh time.Duration
}

func (c *Config) setDefaults() {
	if c.DefaultSize == "" {
		c.DefaultSize = "512x512"
	}
	if c.MaxPromptBytes == 0 {
		c.MaxPromptBytes = 2000
	}
	if c.MaxJSONBytes == 0 {
		c.MaxJSONBytes = 64 << 10
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = 20 << 20
	}
	if c.MaxUploadPixels == 0 {
		c.MaxUploadPixels = 4096 * 4096
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 90 * time.Second
	}
	if c.ModelRefresh == 0 {
		c.ModelRefresh = 30 * time.Second
	}
}

// Validate fills defaults and reports every problem at once.
func (c *Config) Validate() error {
	c.setDefaults()
	var errs []error
	for name, u := range map[string]string{"public URL": c.PublicURL, "CDN URL": c.CDNURL} {
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			errs = append(errs, fmt.Errorf("gateway: %s %q must be an absolute http(s) URL with no path or query", name, u))
		}
	}
	if _, _, err := parseSize(c.DefaultSize); err != nil {
		errs = append(errs, fmt.Errorf("gateway: default size: %w", err))
	}
	if c.MaxPromptBytes < 1 || c.MaxJSONBytes < 1024 || c.MaxUploadBytes < 1024 || c.MaxUploadPixels < 1 {
		errs = append(errs, errors.New("gateway: size limits must be positive (JSON and upload limits at least 1 KiB)"))
	}
	if c.RequestTimeout < time.Second {
		errs = append(errs, errors.New("gateway: request timeout must be at least 1s"))
	}
	return errors.Join(errs...)
}
