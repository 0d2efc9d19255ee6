package mail_test

import (
	"bytes"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/testpeer"
)

// testLogger returns a debug-level logger whose output must, when the test
// ends, contain none of secrets (passwords, recipients, bodies).
func testLogger(t *testing.T, secrets ...string) *slog.Logger {
	t.Helper()
	buf := &testpeer.Buffer{}
	t.Cleanup(func() {
		out := buf.String()
		for _, s := range secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("log output contains %q:\n%s", s, out)
			}
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// decodedSubject decodes RFC 2047 words in a Subject header.
func decodedSubject(t *testing.T, h netmail.Header) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if err != nil {
		t.Fatalf("subject %q: %v", h.Get("Subject"), err)
	}
	return s
}

// decodeBodies decodes a message body into its text/plain and text/html parts.
func decodeBodies(t *testing.T, h netmail.Header, body []byte) (text, html string) {
	t.Helper()
	mediaType, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", h.Get("Content-Type"), err)
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		return decodePart(t, mediaType, h.Get("Content-Transfer-Encoding"), params["charset"], body), ""
	}
	r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			return text, html
		}
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		pt, pp, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		s := decodePart(t, pt, p.Header.Get("Content-Transfer-Encoding"), pp["charset"], raw)
		switch pt {
		case "text/plain":
			text = s
		case "text/html":
			html = s
		}
	}
}

func decodePart(t *testing.T, mediaType, encoding, charset string, raw []byte) string {
	t.Helper()
	if !strings.EqualFold(charset, "utf-8") {
		t.Errorf("%s part has charset %q, want UTF-8", mediaType, charset)
	}
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatal(err)
		}
		return normalizeNewlines(string(b))
	case "", "7bit", "8bit":
		return normalizeNewlines(string(raw))
	default:
		t.Fatalf("%s part has unexpected encoding %q", mediaType, encoding)
		return ""
	}
}

func normalizeNewlines(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
