package policy

import (
	"errors"
	"reflect"
	"regexp"
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
	wantProblem(t, err, `services.b.load_balancer: must be one of round_robin, least_request, random; got "fastest"`)
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
