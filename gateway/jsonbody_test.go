package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// decodeJSONReference is the straightforward decoder decodeJSON must agree
// with: a Decoder refusing unknown fields, then a check for trailing data.
func decodeJSONReference(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty")
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

var jsonBodySeeds = []string{
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
