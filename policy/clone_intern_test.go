package policy

import (
	"reflect"
	"testing"
)

// TestSnapshotSharesEqualLabelMaps: a snapshot holds equal string maps
// (labels, subset selectors) once, and still shares nothing with the
// document it was made from; Clone shares nothing at all.
func TestSnapshotSharesEqualLabelMaps(t *testing.T) {
	doc, err := Parse([]byte(`services:
  a:
    endpoints: [{address: 127.0.0.1:1, labels: {version: v1}}]
    subsets: {v1: {version: v1}}
  b:
    endpoints: [{address: 127.0.0.1:2, labels: {version: v1}}, {address: 127.0.0.1:3, labels: {version: v2}}]
    subsets: {v1: {version: v1}}
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	same := func(x, y map[string]string) bool {
		return reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer()
	}
	a, b := snap.Doc.Services["a"], snap.Doc.Services["b"]
	if !same(a.Endpoints[0].Labels, b.Endpoints[0].Labels) || !same(a.Endpoints[0].Labels, b.Subsets["v1"]) {
		t.Error("the snapshot holds equal label maps more than once")
	}
	if same(b.Endpoints[0].Labels, b.Endpoints[1].Labels) {
		t.Error("labels of different contents share a map")
	}
	if same(a.Endpoints[0].Labels, doc.Services["a"].Endpoints[0].Labels) {
		t.Error("the snapshot shares a map with the document")
	}
	doc.Services["a"].Endpoints[0].Labels["version"] = "v9"
	if b.Endpoints[0].Labels["version"] != "v1" || a.Endpoints[0].Labels["version"] != "v1" {
		t.Error("changing the document changed the snapshot")
	}
	c := doc.Clone()
	if same(c.Services["b"].Endpoints[0].Labels, c.Services["b"].Subsets["v1"]) {
		t.Error("Clone shares maps within its copy")
	}
}
