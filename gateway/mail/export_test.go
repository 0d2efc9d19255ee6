package mail

import (
	"bytes"
	netmail "net/mail"
	"time"
)

// Render composes m exactly as both transports do, with a fixed sender
// and date, and returns the RFC 5322 bytes.
func Render(m Message) ([]byte, error) {
	msg, _, err := compose(&netmail.Address{Name: "imagegate", Address: "no-reply@imagegate.test"}, m, time.Unix(1e9, 0))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := msg.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ParseSMTPURL exposes the URL parser to the fuzzer.
func ParseSMTPURL(raw string) (host string, port int, user, pass string, err error) {
	s, err := parseSMTPURL(raw)
	return s.host, s.port, s.user, s.pass, err
}
