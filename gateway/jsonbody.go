package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// decodeJSON decodes exactly one JSON object into v (a pointer to a flat
// struct), refusing unknown fields and trailing data, with errors that
// name the field.
//
// Well-formed bodies take a fast path: json.Unmarshal (no Decoder to
// allocate) and then a scan of the object's keys against v's fields. Any
// body Unmarshal refuses goes through a Decoder with
// DisallowUnknownFields, which says precisely what is wrong.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("invalid_json", "request body: expected a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return decodeJSONError(body, v)
	}
	if key, ok := unknownKey(body, knownFields(reflect.TypeOf(v))); ok {
		return badRequest("unknown_field", fmt.Sprintf("%s: unknown field", key))
	}
	return nil
}

// decodeJSONError explains why body does not decode into v.
func decodeJSONError(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return badRequest("invalid_json", fmt.Sprintf("%s: must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String())))
		}
		if !json.Valid(body) {
			return badRequest("invalid_json", "request body: malformed JSON")
		}
		if key, ok := unknownKey(body, knownFields(reflect.TypeOf(v))); ok {
			return badRequest("unknown_field", fmt.Sprintf("%s: unknown field", key))
		}
		return badRequest("invalid_json", "request body: malformed JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("invalid_json", "request body: trailing data after the JSON object")
	}
	return badRequest("invalid_json", "request body: malformed JSON")
}

// fieldSet is the JSON names of a struct's fields, matched as
// encoding/json matches them (case-insensitively).
type fieldSet []string

func (f fieldSet) has(key string) bool {
	for _, name := range f {
		if strings.EqualFold(name, key) {
			return true
		}
	}
	return false
}

var fieldSets sync.Map // reflect.Type → fieldSet

// knownFields returns the JSON field names of *struct type t.
func knownFields(t reflect.Type) fieldSet {
	if f, ok := fieldSets.Load(t); ok {
		return f.(fieldSet)
	}
	var names fieldSet
	var walk func(reflect.Type)
	walk = func(st reflect.Type) {
		for i := range st.NumField() {
			sf := st.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if sf.Anonymous && name == "" && sf.Type.Kind() == reflect.Struct {
				walk(sf.Type)
				continue
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			names = append(names, name)
		}
	}
	if t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		walk(t.Elem())
	}
	fieldSets.Store(t, names)
	return names
}

// unknownKey returns the first key of the top-level JSON object in b that
// known lacks. b must be valid JSON (it decoded); for anything but an
// object it reports nothing.
func unknownKey(b []byte, known fieldSet) (string, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", false
	}
	i++
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] == '}' {
			return "", false
		}
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
		if i >= len(b) || b[i] != '"' {
			return "", false // not valid JSON after all: nothing to say
		}
		end := stringEnd(b, i)
		if end-i < 2 {
			return "", false
		}
		raw := b[i:end]
		key := string(raw[1 : len(raw)-1])
		if bytes.IndexByte(raw, '\\') >= 0 {
			json.Unmarshal(raw, &key) // escapes: let encoding/json read them
		}
		if !known.has(key) {
			return key, true
		}
		i = skipSpace(b, end)
		i = skipValue(b, skipSpace(b, i+1)) // past ':' and the value
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			i = stringEnd(b, i)
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of the enclosing object
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}
