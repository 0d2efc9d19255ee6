package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// decodeJSONReference is the straightforward decoder decodeJSON must agree
// with: a Decoder refusing unknown fields, then a check for trailing data,
// and a token walk refusing repeated keys and invalid UTF-8.
func decodeJSONReference(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty")
	}
	if err := referenceKeys(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// referenceKeys refuses a top-level object with a key given twice (compared
// as encoding/json matches names, case-insensitively) or invalid UTF-8.
func referenceKeys(body []byte) error {
	if !utf8.Valid(body) {
		return errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil // not an object: the decode says why
	}
	var seen []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		for _, s := range seen {
			if strings.EqualFold(s, key) {
				return errors.New("duplicate key")
			}
		}
		seen = append(seen, key)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

var jsonBodySeeds = []string{
	`{"prompt":"a","PROMPT":"b"}`,
	`{"n":1,"size":"256x256","n":2}`,
	"{\"prompt\":\"bad \xff byte\"}",
	"{\"user\":\"\xc3\x28\",\"prompt\":\"a\"}",
	"{\"prompt\xff\":\"a\"}",
	`{"prompt":"a","n":` + strings.Repeat("9", 400) + `}`,
	`{"prompt":"a","guidance":1e999999}`,
	`{"prompt":"a","seed":-0.0000000000000000000001}`,
	`{"prompt":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
	strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000),
	`{"prompt":"a","size":"256x256"}`,
	`{"prompt":"a","sise":"256x256"}`,
	`{"PROMPT":"a","Size":"256x256"}`,
	`{"prompt":"a","n":2,"seed":7,"guidance":7.5,"private":true}`,
	`{"prompt":"a","nested":{"x":[1,{"y":"}"}]},"n":1}`,
	`{"prompt":"a\"b","n":"x"}`,
	`{"pro\u006dpt":"escaped key"}`,
	`{"unknown":1,"n":"x"}`,
	`{"n":"x","unknown":1}`,
	`{"prompt":"a"} {"prompt":"b"}`,
	`{"prompt":"a"}}`,
	`null`, `[1]`, `"x"`, `{}`, ` { "prompt" : "spaced" , "n" : 1 } `,
	`{"prompt":"a","prompt":"b"}`,
	`{"ſize":"256x256"}`,
	`{"user":"x","quality":"hd","output_compression":9}`,
}

func TestDecodeJSONAgreesWithTheReference(t *testing.T) {
	t.Parallel()
	for _, s := range jsonBodySeeds {
		checkDecodeAgreement(t, []byte(s))
	}
}

func FuzzDecodeJSON(f *testing.F) {
	for _, s := range jsonBodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDecodeAgreement(t, body) })
}

func checkDecodeAgreement(t *testing.T, body []byte) {
	t.Helper()
	var got, want generationJSON
	gotErr := decodeJSON(body, &got)
	wantErr := decodeJSONReference(body, &want)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: decodeJSON %v, reference %v", body, gotErr, wantErr)
	}
	if gotErr == nil {
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("%q decoded differently (-reference +decodeJSON):\n%s", body, diff)
		}
		return
	}
	var ae *apiError
	if !errors.As(gotErr, &ae) || ae.Status != 400 {
		t.Fatalf("%q: error %v is not a 400", body, gotErr)
	}
}
