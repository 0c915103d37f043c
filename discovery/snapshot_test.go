package discovery_test

import (
	"reflect"
	"testing"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
)

func TestSnapshotEndpointsNilSafe(t *testing.T) {
	var s *discovery.Snapshot
	if got := s.Endpoints("billing"); got != nil {
		t.Fatalf("nil snapshot: Endpoints = %v, want nil", got)
	}
	if got := (&discovery.Snapshot{}).Endpoints("billing"); got != nil {
		t.Fatalf("empty snapshot: Endpoints = %v, want nil", got)
	}
}

const parsedDoc = `
version: "2026-11-26.1"
defaults:
  endpoints:
    - {address: 10.0.0.1:80}
services:
  billing:
    endpoints:
      - {address: 127.0.0.1:9001, labels: {version: v1}}
      - {address: 127.0.0.1:9002, labels: {version: v2}}
    subsets:
      v1: {version: v1}
      v2: {version: v2}
  progress: {}
`

func TestStaticFromParsedDocument(t *testing.T) {
	doc, err := policy.Parse([]byte(parsedDoc))
	if err != nil {
		t.Fatalf("policy.Parse: %v", err)
	}
	s := discovery.Static(doc)
	if s.Source != discovery.SourceStatic {
		t.Errorf("Source = %q, want %q", s.Source, discovery.SourceStatic)
	}
	want := map[string][]discovery.Endpoint{
		"billing": {
			{Address: "127.0.0.1:9001", Labels: map[string]string{"version": "v1"}},
			{Address: "127.0.0.1:9002", Labels: map[string]string{"version": "v2"}},
		},
		"progress": {{Address: "10.0.0.1:80"}},
	}
	if !reflect.DeepEqual(s.Services, want) {
		t.Errorf("Services = %+v, want %+v", s.Services, want)
	}
	// Subsets select with the same labels the policy names.
	v2 := discovery.Select(s.Endpoints("billing"), doc.Services["billing"].Subsets["v2"])
	if len(v2) != 1 || v2[0].Address != "127.0.0.1:9002" {
		t.Errorf("subset v2 = %+v, want the 9002 endpoint", v2)
	}
}

func TestStatic(t *testing.T) {
	ep := func(addr string, kv ...string) policy.Endpoint {
		e := policy.Endpoint{Address: addr}
		for i := 0; i+1 < len(kv); i += 2 {
			if e.Labels == nil {
				e.Labels = map[string]string{}
			}
			e.Labels[kv[i]] = kv[i+1]
		}
		return e
	}
	tests := []struct {
		name string
		doc  *policy.Document
		want map[string][]string // service -> addresses
	}{
		{name: "nil document", doc: nil, want: map[string][]string{}},
		{name: "no services", doc: &policy.Document{}, want: map[string][]string{}},
		{
			name: "service endpoints",
			doc: &policy.Document{Services: map[string]*policy.Service{
				"billing": {Endpoints: []policy.Endpoint{ep("a:1"), ep("b:1")}},
			}},
			want: map[string][]string{"billing": {"a:1", "b:1"}},
		},
		{
			name: "defaults fill a service without endpoints",
			doc: &policy.Document{
				Defaults: &policy.Service{Endpoints: []policy.Endpoint{ep("d:1")}},
				Services: map[string]*policy.Service{"billing": {}, "nil": nil},
			},
			want: map[string][]string{"billing": {"d:1"}, "nil": {"d:1"}},
		},
		{
			name: "service endpoints replace the defaults' whole",
			doc: &policy.Document{
				Defaults: &policy.Service{Endpoints: []policy.Endpoint{ep("d:1"), ep("d:2")}},
				Services: map[string]*policy.Service{"billing": {Endpoints: []policy.Endpoint{ep("s:1")}}},
			},
			want: map[string][]string{"billing": {"s:1"}},
		},
		{
			name: "service without endpoints anywhere is absent",
			doc:  &policy.Document{Services: map[string]*policy.Service{"billing": {}}},
			want: map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := discovery.Static(tt.doc)
			got := map[string][]string{}
			for name, eps := range s.Services {
				for _, e := range eps {
					got[name] = append(got[name], e.Address)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Static = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStaticSharesNothingWithDocument(t *testing.T) {
	doc := &policy.Document{Services: map[string]*policy.Service{
		"billing": {Endpoints: []policy.Endpoint{{Address: "a:1", Labels: map[string]string{"version": "v1"}}}},
	}}
	s := discovery.Static(doc)
	doc.Services["billing"].Endpoints[0].Address = "changed:1"
	doc.Services["billing"].Endpoints[0].Labels["version"] = "changed"
	got := s.Endpoints("billing")[0]
	if got.Address != "a:1" || got.Labels["version"] != "v1" {
		t.Errorf("snapshot changed with the document: %+v", got)
	}
}

func TestSelect(t *testing.T) {
	eps := []discovery.Endpoint{
		{Address: "a:1", Labels: map[string]string{"version": "v1", "zone": "east"}},
		{Address: "b:1", Labels: map[string]string{"version": "v2", "zone": "east"}},
		{Address: "c:1", Labels: map[string]string{"version": "v1", "zone": "west"}},
		{Address: "d:1"},
		{Address: "e:1", Labels: map[string]string{"version": ""}},
	}
	tests := []struct {
		name     string
		selector map[string]string
		want     []string
	}{
		{name: "nil selects all", selector: nil, want: []string{"a:1", "b:1", "c:1", "d:1", "e:1"}},
		{name: "empty selects all", selector: map[string]string{}, want: []string{"a:1", "b:1", "c:1", "d:1", "e:1"}},
		{name: "one label", selector: map[string]string{"version": "v1"}, want: []string{"a:1", "c:1"}},
		{name: "all labels must match", selector: map[string]string{"version": "v1", "zone": "west"}, want: []string{"c:1"}},
		{name: "no match", selector: map[string]string{"version": "v3"}, want: nil},
		{name: "unknown key", selector: map[string]string{"rack": "r1"}, want: nil},
		{name: "empty value asks for presence", selector: map[string]string{"version": ""}, want: []string{"a:1", "b:1", "c:1", "e:1"}},
		{name: "presence and value", selector: map[string]string{"version": "v1", "zone": ""}, want: []string{"a:1", "c:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range discovery.Select(eps, tt.selector) {
				got = append(got, e.Address)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Select(%v) = %v, want %v", tt.selector, got, tt.want)
			}
		})
	}
}

func TestSelectReturnsNewSlice(t *testing.T) {
	eps := []discovery.Endpoint{{Address: "a:1"}, {Address: "b:1"}}
	got := discovery.Select(eps, nil)
	got[0].Address = "changed:1"
	if eps[0].Address != "a:1" {
		t.Fatal("Select returned a slice sharing its array with the input")
	}
}

func TestStaticOfSharesTheSnapshotsLabels(t *testing.T) {
	doc := &policy.Document{Services: map[string]*policy.Service{
		"billing": {Endpoints: []policy.Endpoint{{Address: "a:1", Labels: map[string]string{"version": "v1"}}}},
	}}
	snap, err := policy.NewSnapshot(doc, "inline")
	if err != nil {
		t.Fatal(err)
	}
	s := discovery.StaticOf(snap)
	want := discovery.Static(snap.Doc)
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("StaticOf = %+v, want Static's %+v", s, want)
	}
	got, in := s.Endpoints("billing")[0].Labels, snap.Doc.Services["billing"].Endpoints[0].Labels
	if reflect.ValueOf(got).UnsafePointer() != reflect.ValueOf(in).UnsafePointer() {
		t.Error("StaticOf copied the labels")
	}
	if got := discovery.StaticOf(nil); len(got.Services) != 0 || got.Source != discovery.SourceStatic {
		t.Errorf("StaticOf(nil) = %+v, want an empty static snapshot", got)
	}
}
