package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestSnapshotHashAndVersion(t *testing.T) {
	a := snapshotOf(t, "services: {billing: {timeout: 2s}}")
	if !regexp.MustCompile(`^sha256:[0-9a-f]{16}$`).MatchString(a.Hash) {
		t.Errorf("hash %q", a.Hash)
	}
	if a.Version != a.Hash {
		t.Errorf("version %q, want the hash %q", a.Version, a.Hash)
	}
	if a.Loaded.IsZero() || a.Source != "test" {
		t.Errorf("loaded %v source %q", a.Loaded, a.Source)
	}
	// Formatting, comments and key order do not change the hash.
	b := snapshotOf(t, "# billing\nservices:\n  billing:\n    timeout: \"2s\"   # two seconds\n")
	if b.Hash != a.Hash {
		t.Errorf("hash %s != %s for the same document", b.Hash, a.Hash)
	}
	c := snapshotOf(t, "services: {billing: {timeout: 3s}}")
	if c.Hash == a.Hash {
		t.Error("different documents have the same hash")
	}
	d := snapshotOf(t, "version: v7\nservices: {billing: {timeout: 2s}}")
	if d.Version != "v7" || d.Hash == a.Hash {
		t.Errorf("labelled: version %q hash %q", d.Version, d.Hash)
	}
	// retry_on: [] (retry on nothing) and no retry_on (the default list) differ.
	e1 := snapshotOf(t, "services: {billing: {retry: {attempts: 2, retry_on: []}}}")
	e2 := snapshotOf(t, "services: {billing: {retry: {attempts: 2}}}")
	if e1.Hash == e2.Hash {
		t.Error("retry_on: [] hashes like an absent retry_on")
	}
}

func TestSnapshotService(t *testing.T) {
	var nilSnap *Snapshot
	if nilSnap.Service("billing") != nil {
		t.Error("nil snapshot returned a service")
	}
	s := snapshotOf(t, "services: {billing: {}}")
	if s.Service("billing") == nil || s.Service("billing").Name != "billing" {
		t.Errorf("billing = %+v", s.Service("billing"))
	}
	if s.Service("shipping") != nil {
		t.Error("unknown service found")
	}
}

func TestNewSnapshotInvalid(t *testing.T) {
	if _, err := NewSnapshot(nil, "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil document: %v", err)
	}
	doc := &Document{Services: map[string]*Service{"b": {Settings: Settings{LoadBalancer: "fastest"}}}}
	_, err := NewSnapshot(doc, "x")
	wantProblem(t, err, `services.b.load_balancer: must be one of round_robin, least_request, random, ring_hash, maglev; got "fastest"`)
}

func TestClone(t *testing.T) {
	doc := mustParse(t, string(readTestdata(t, "design.yaml")))
	c := doc.Clone()
	if !reflect.DeepEqual(doc, c) {
		t.Fatal("clone differs")
	}
	c.Services["billing"].Retry.Budget.Ratio = new(float64)
	c.Services["billing"].Routes[0].Split[0].Weight = 7
	c.Defaults.Retry.Backoff.Max = 1
	if reflect.DeepEqual(doc, c) {
		t.Error("clone shares memory with the original")
	}
	if (*Document)(nil).Clone() != nil {
		t.Error("Clone(nil) != nil")
	}
}

// marshalHash is Hash as it was first written: the SHA-256 of json.Marshal.
func marshalHash(t testing.TB, doc *Document) string {
	t.Helper()
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// writeJSON writes what json.Marshal writes, byte for byte, so that hashes
// stay what they were: for every document of testdata, for a document with
// every field set, and for strings and numbers encoding/json escapes or
// formats in its own way.
func TestHashWritesWhatMarshalWrites(t *testing.T) {
	docs := map[string]*Document{"nil": nil, "empty": {}, "full": fullDocument()}
	files, _ := filepath.Glob("testdata/*")
	for _, name := range files {
		if doc, err := Parse(readTestdata(t, filepath.Base(name))); err == nil {
			docs[name] = doc
		}
	}
	ratio, neg := 0.000001234, math.Copysign(0, -1)
	docs["odd values"] = &Document{
		Version: "<a&b> \"q\" \\ \u2028 \x01 caf\xc3\xa9 \xff",
		Services: map[string]*Service{
			"é<&>": {Subsets: map[string]map[string]string{"": {"\t": "\u2029"}, "nil": nil, "empty": {}}},
			"b":    {Settings: Settings{Retry: &Retry{RetryOn: []string{}, Budget: &Budget{Ratio: &ratio}}}},
			"c":    {Settings: Settings{Retry: &Retry{Budget: &Budget{Ratio: &neg}}}},
			"nil":  nil,
		},
	}
	for name, doc := range docs {
		var got strings.Builder
		if err := writeJSON(&got, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, _ := json.Marshal(doc)
		if got.String() != string(want) {
			t.Errorf("%s:\nwriteJSON    %s\njson.Marshal %s", name, got.String(), want)
		}
		if doc == nil {
			continue
		}
		if h, err := Hash(doc); err != nil || h != marshalHash(t, doc) {
			t.Errorf("%s: Hash = %s, %v; want %s", name, h, err, marshalHash(t, doc))
		}
	}
	nan := math.NaN()
	_, err := Hash(&Document{Defaults: &Service{Settings: Settings{Retry: &Retry{Budget: &Budget{Ratio: &nan}}}}})
	if err == nil || !strings.Contains(err.Error(), "unsupported value: NaN") {
		t.Errorf("Hash of a NaN: %v", err)
	}
}

// fullDocument returns a document with every field of every type set to a
// value that is not empty, so that a field writeJSON would miss shows.
func fullDocument() *Document {
	var doc Document
	fill(reflect.ValueOf(&doc).Elem(), 0)
	return &doc
}

func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		if depth < 8 {
			v.Set(reflect.New(v.Type().Elem()))
			fill(v.Elem(), depth+1)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for _, k := range []string{"b", "a<"} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e, depth+1)
			v.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e)
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), depth+1)
		}
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d&", depth))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(depth) * 1_000_000_007)
	case reflect.Float64:
		v.SetFloat(float64(depth) / 3)
	case reflect.Bool:
		v.SetBool(true)
	}
}
