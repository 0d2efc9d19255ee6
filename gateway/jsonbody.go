package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// decodeJSON decodes exactly one JSON object into v (a pointer to a flat
// struct), refusing unknown fields, duplicate fields, invalid UTF-8 and
// trailing data, with errors that name the field. Duplicates are refused
// because encoding/json keeps the last silently, so two parsers (a proxy's
// and ours, or a moderator's) could read one body two ways; invalid UTF-8
// because encoding/json replaces it with U+FFFD, so what was sent is not
// what would be used. Nesting and huge numbers need no check of their
// own: every field is a scalar, so encoding/json refuses both (its depth
// limit bounds the work).
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
	return checkKeys(body, knownFields(reflect.TypeOf(v)))
}

// checkKeys refuses the first key of the top-level object in body (which
// decoded) that is unknown, repeats an earlier key (encoding/json matches
// names case-insensitively, so "n" and "N" are one field) or holds invalid
// UTF-8 in its name or value. Keys are all known and distinct when it
// gets past them, so its work is bounded by the field count.
func checkKeys(body []byte, known fieldSet) error {
	validUTF8 := utf8.Valid(body)
	var buf [16][]byte // every field known and distinct: at most the field count
	seen := buf[:0]
	ks := keyScanner{b: body}
	for {
		key, raw, value, ok := ks.next()
		if !ok {
			return nil
		}
		switch {
		case !known.hasBytes(key):
			return badRequest("unknown_field", fmt.Sprintf("%s: unknown field", key))
		case slices.ContainsFunc(seen, func(s []byte) bool { return equalFoldBytes(s, key) }):
			return badRequest("duplicate_field", fmt.Sprintf("%s: given more than once", key))
		case !validUTF8 && (!utf8.Valid(raw) || !utf8.Valid(value)):
			return badRequest("invalid_encoding", fmt.Sprintf("%s: not valid UTF-8", key))
		}
		seen = append(seen, key)
	}
}

// equalFoldBytes is strings.EqualFold for byte slices, without copying
// ASCII ones (field names nearly always are).
func equalFoldBytes(a, b []byte) bool {
	if !isASCIIBytes(a) || !isASCIIBytes(b) {
		return strings.EqualFold(string(a), string(b))
	}
	return len(a) == len(b) && asciiEqualFold(a, b)
}

// asciiEqualFold compares ASCII s and b of equal length, ignoring case.
func asciiEqualFold[S string | []byte](s S, b []byte) bool {
	for i := range len(b) {
		x, y := s[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isASCIIBytes(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
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
		if err := checkKeys(body, knownFields(reflect.TypeOf(v))); err != nil {
			return err
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

// hasBytes is has for a key still in the request's bytes.
func (f fieldSet) hasBytes(key []byte) bool {
	if !isASCIIBytes(key) {
		return f.has(string(key))
	}
	for _, name := range f {
		if len(name) == len(key) && asciiEqualFold(name, key) {
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

// keyScanner walks the keys of the top-level JSON object in b, which must
// be valid JSON (it decoded); for anything but an object it finds none.
type keyScanner struct {
	b       []byte
	i       int
	started bool
}

// next returns the next key (unescaped), its raw quoted form and its raw
// value. key aliases b unless the key had escapes.
func (ks *keyScanner) next() (key, raw, value []byte, ok bool) {
	b := ks.b
	i := ks.i
	if !ks.started {
		ks.started = true
		i = skipSpace(b, 0)
		if i >= len(b) || b[i] != '{' {
			ks.i = len(b)
			return nil, nil, nil, false
		}
		i++
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] == '}' {
		ks.i = len(b)
		return nil, nil, nil, false
	}
	if b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		ks.i = len(b)
		return nil, nil, nil, false // not valid JSON after all: nothing to say
	}
	end := stringEnd(b, i)
	if end-i < 2 {
		ks.i = len(b)
		return nil, nil, nil, false
	}
	raw = b[i:end]
	key = raw[1 : len(raw)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		var k string
		json.Unmarshal(raw, &k) // escapes: let encoding/json read them
		key = []byte(k)
	}
	i = skipSpace(b, end)
	start := skipSpace(b, i+1) // past ':'
	ks.i = skipValue(b, start)
	return key, raw, b[start:ks.i], true
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
