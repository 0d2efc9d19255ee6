package store

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// cardWords are words no stored field may be named with (promise M1):
// card data and billing addresses never reach imagegate.
var cardWords = map[string]bool{
	"card": true, "cards": true, "pan": true, "cvc": true, "cvv": true, "cvv2": true, "number": true,
	"expiry": true, "exp": true, "address": true, "postal": true, "postcode": true, "zip": true,
	"iban": true, "line1": true, "line2": true, "city": true, "billing_details": true,
}

// fieldWords splits a Go field name (CamelCase) or a JSON key
// (snake_case) into lower-case words.
func fieldWords(name string) []string {
	var words []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(name)
	for i, r := range rs {
		switch {
		case r == '_' || r == '-':
			flush()
			continue
		case unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]))):
			flush()
		}
		cur = append(cur, r)
	}
	flush()
	return words
}

// forbiddenFields lists "Type.Field" for every struct field in src whose
// name or JSON key has a card or address word.
func forbiddenFields(fset *token.FileSet, files []*ast.File) []string {
	var bad []string
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			ast.Inspect(ts.Type, func(n ast.Node) bool {
				st, ok := n.(*ast.StructType)
				if !ok {
					return true
				}
				for _, fld := range st.Fields.List {
					var names []string
					for _, id := range fld.Names {
						names = append(names, id.Name)
					}
					if fld.Tag != nil {
						tag := reflect.StructTag(strings.Trim(fld.Tag.Value, "`"))
						if j, _, _ := strings.Cut(tag.Get("json"), ","); j != "" && j != "-" {
							names = append(names, j)
						}
					}
					for _, name := range names {
						for _, w := range fieldWords(name) {
							if cardWords[w] {
								bad = append(bad, fmt.Sprintf("%s.%s (%s)", ts.Name.Name, name, fset.Position(fld.Pos())))
							}
						}
					}
				}
				return true
			})
			return false
		})
	}
	return bad
}

// TestNoCardOrAddressFields reads every type declared in this package's
// source — exported or not, nested structs included, so a type added later
// is covered without being listed — and fails on any field (Go name or JSON
// key) that names card data or an address (promise M1).
func TestNoCardOrAddressFields(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, de := range entries {
		if !strings.HasSuffix(de.Name(), ".go") || strings.HasSuffix(de.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, de.Name(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) < 5 {
		t.Fatalf("parsed %d files: not the store package", len(files))
	}
	if bad := forbiddenFields(fset, files); len(bad) > 0 {
		t.Errorf("store types with card or address fields (promise M1):\n%s", strings.Join(bad, "\n"))
	}

	// The check itself catches what it must.
	probe, err := parser.ParseFile(fset, "probe.go", `package store
type payment struct {
	CardNumber string
	Last4 string `+"`json:\"card_last4\"`"+`
	Nested struct{ PostalCode string }
	CVC string
	BillingAddress string
	Plain string
}`, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := forbiddenFields(fset, []*ast.File{probe})
	for i := range got {
		got[i], _, _ = strings.Cut(got[i], " ")
	}
	want := []string{"payment.BillingAddress", "payment.CVC", "payment.CardNumber", "payment.CardNumber", "payment.PostalCode", "payment.card_last4"}
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the checker misses fields (-want +got):\n%s", diff)
	}
}

func TestFieldWords(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		"CardNumber": {"card", "number"}, "CVC": {"cvc"}, "postal_code": {"postal", "code"},
		"StripeCustomers": {"stripe", "customers"}, "IPSealed": {"ip", "sealed"}, "EmailIndex": {"email", "index"},
	} {
		if got := fieldWords(in); !slices.Equal(got, want) {
			t.Errorf("fieldWords(%q) = %q, want %q", in, got, want)
		}
	}
}
