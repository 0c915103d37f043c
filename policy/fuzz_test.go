package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error it returns is a
// *ValidationError matching ErrInvalid, and that an accepted document
// survives a JSON round trip with the same hash.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	jsonFiles, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range append(files, jsonFiles...) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"services: {billing: {}}",
		"services: {billing: {retry: {attempts: 3, retry_on: []}}}",
		"services: {billing: {retry: {budget: {ratio: -0.0, min_per_second: 0}}}}",
		"services:\n  a: &a {timeout: 1s, routes: [{split: [{subset: v1, weight: 1}]}], subsets: {v1: {}}}\n  b: {<<: *a}\n",
		"defaults: {routes: [{match: {methods: [get], headers: {X-A: '1'}}}]}\nservices: {b: {}}",
		`{"services": {"billing": {"timeout": "2s", "endpoints": [{"address": "[::1]:80"}]}}}`,
		`{"version": "caf\u00e9 \ud83d\ude00 \/", "services": {"b": {"routes": [{"match": {"path_prefix": "\/x"}}]}}}`,
		// Limits: written zeros, durations past their bounds, dense and aliased documents.
		"services: {b: {retry: {attempts: 0}, circuit_breaker: {half_open_requests: 0}}}",
		"services: {b: {timeout: 8761h, outlier_detection: {base_ejection: 2562047h}}}",
		"services: {b: {endpoints: [{address: 'h:1', labels: {v: a}}], subsets: {x: {v: b}}}}",
		"services: {" + strings.Repeat("a,", 1000) + "a}",
		"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nservices: {b: {routes: [{split: *b}]}}",
		"services:\n" + strings.Repeat("- ", 20000) + "x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data)
		if err != nil {
			var ve *ValidationError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Parse error %T %v is not a *ValidationError with problems", err, err)
			}
			return
		}
		snap, err := NewSnapshot(doc, "fuzz")
		if err != nil {
			t.Fatalf("NewSnapshot of a parsed document: %v", err)
		}
		if want := marshalHash(t, snap.Doc); snap.Hash != want {
			t.Fatalf("Hash = %s, the SHA-256 of json.Marshal is %s", snap.Hash, want)
		}
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parsing %s: %v", out, err)
		}
		h, err := Hash(again)
		if err != nil {
			t.Fatal(err)
		}
		if h != snap.Hash {
			out2, _ := json.Marshal(again)
			t.Fatalf("hash changed in the JSON round trip: %s != %s\n%s\n%s", h, snap.Hash, out, out2)
		}

		// A JSON input that encoding/json reads too must read the same.
		if !json.Valid(data) {
			return
		}
		var std Document
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if dec.Decode(&std) != nil {
			return
		}
		for name, svc := range std.Services {
			if svc == nil { // Parse reads "name": null as an empty service
				std.Services[name] = &Service{}
			}
		}
		if h, _ := Hash(&std); h != snap.Hash {
			got, _ := json.Marshal(doc)
			want, _ := json.Marshal(&std)
			t.Fatalf("Parse and encoding/json read the JSON differently:\n%s\n%s", got, want)
		}
	})
}
