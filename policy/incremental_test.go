package policy

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
)

// fleetBlock returns the block of service i of a fleet document: endpoints
// with labels, subsets, a split, retries and an authorization rule, so
// that copying, interning and resolving all have work to do. v varies the
// timeout, for a changed block.
func fleetBlock(tb testing.TB, i, v int) *Service {
	tb.Helper()
	yaml := fmt.Sprintf(`
endpoints:
  - {address: "10.0.%d.1:8080", labels: {version: v1, zone: a}}
  - {address: "10.0.%d.2:8080", labels: {version: v2, zone: b}}
subsets:
  v1: {version: v1}
  v2: {version: v2}
timeout: %dms
retry: {attempts: 2, retry_on: [connect-failure, "503"]}
routes:
  - name: api
    match: {path_prefix: /api, methods: [get]}
    split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
  - name: rest
authorization:
  rules: [{from: [caller], methods: [get]}]
`, i%250, i%250, 100+v)
	svc, err := ParseService([]byte(yaml), ServicePath(fleetName(i)))
	if err != nil {
		tb.Fatal(err)
	}
	return svc
}

func fleetName(i int) string { return fmt.Sprintf("svc-%03d", i) }

// fleetDoc returns a document of n services and defaults.
func fleetDoc(tb testing.TB, n int) *Document {
	tb.Helper()
	doc := &Document{
		Defaults: &Service{Settings: Settings{Timeout: Duration(2e9)}},
		Services: make(map[string]*Service, n),
	}
	for i := range n {
		doc.Services[fleetName(i)] = fleetBlock(tb, i, 0)
	}
	return doc
}

// nextDoc returns a shallow copy of doc, its own services map, as a control
// plane builds the next document: unchanged blocks are the same pointers.
func nextDoc(doc *Document) *Document {
	d := *doc
	d.Services = maps.Clone(doc.Services)
	return &d
}

// sameValue fails unless got equals NewSnapshot of doc in value.
func sameValue(t *testing.T, got *Snapshot, doc *Document) {
	t.Helper()
	want, err := NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != want.Hash || got.Version != want.Version || got.Source != want.Source {
		t.Errorf("hash, version, source = %s %s %s; want %s %s %s", got.Hash, got.Version, got.Source, want.Hash, want.Version, want.Source)
	}
	if !reflect.DeepEqual(got.Doc, want.Doc) {
		t.Errorf("Doc differs from NewSnapshot's")
	}
	if !reflect.DeepEqual(got.Services, want.Services) {
		t.Errorf("Services differ from NewSnapshot's")
	}
	if got.Rejected != nil {
		t.Errorf("Rejected = %v", got.Rejected)
	}
	if got.Doc == doc || got.Doc.Services != nil && reflect.ValueOf(got.Doc.Services).Pointer() == reflect.ValueOf(doc.Services).Pointer() {
		t.Errorf("the snapshot shares the caller's document")
	}
	for name, svc := range doc.Services {
		if svc != nil && got.Doc.Services[name] == svc {
			t.Errorf("%s: the snapshot holds the caller's block, not a copy", name)
		}
	}
}

func TestNewSnapshotFrom(t *testing.T) {
	const n = 20
	all := func() []string {
		var out []string
		for i := range n {
			out = append(out, fleetName(i))
		}
		return out
	}
	but := func(skip ...string) []string {
		return slices.DeleteFunc(all(), func(s string) bool { return slices.Contains(skip, s) })
	}
	tests := []struct {
		name   string
		change func(tb testing.TB, d *Document)
		reused []string // the services whose copy and view are prev's; the others are new
	}{
		{"nothing changed", func(testing.TB, *Document) {}, all()},
		{"one block changed", func(tb testing.TB, d *Document) { d.Services[fleetName(3)] = fleetBlock(tb, 3, 1) }, but(fleetName(3))},
		{"a block of equal contents, new pointer", func(tb testing.TB, d *Document) { d.Services[fleetName(4)] = fleetBlock(tb, 4, 0) }, but(fleetName(4))},
		{"two blocks changed", func(tb testing.TB, d *Document) {
			d.Services[fleetName(0)] = fleetBlock(tb, 0, 7)
			d.Services[fleetName(n-1)] = &Service{}
		}, but(fleetName(0), fleetName(n-1))},
		{"service added", func(tb testing.TB, d *Document) { d.Services["new"] = fleetBlock(tb, 99, 0) }, all()},
		{"service added, empty block", func(tb testing.TB, d *Document) { d.Services["bare"] = &Service{} }, all()},
		{"service added, nil block", func(tb testing.TB, d *Document) { d.Services["none"] = nil }, all()},
		{"service removed", func(tb testing.TB, d *Document) { delete(d.Services, fleetName(5)) }, but(fleetName(5))},
		{"block moved to another name", func(tb testing.TB, d *Document) {
			d.Services[fleetName(6)], d.Services[fleetName(7)] = d.Services[fleetName(7)], d.Services[fleetName(6)]
		}, but(fleetName(6), fleetName(7))},
		{"defaults changed", func(tb testing.TB, d *Document) {
			d.Defaults = &Service{Settings: Settings{Timeout: Duration(3e9)}}
		}, nil},
		{"defaults equal, new pointer", func(tb testing.TB, d *Document) {
			d.Defaults = &Service{Settings: Settings{Timeout: Duration(2e9)}}
		}, nil},
		{"defaults removed", func(tb testing.TB, d *Document) { d.Defaults = nil }, nil},
		{"egress changed", func(tb testing.TB, d *Document) { d.Egress = EgressDeny }, all()},
		{"trust domain changed", func(tb testing.TB, d *Document) { d.TrustDomain = "other.local" }, all()},
		{"version label set", func(tb testing.TB, d *Document) { d.Version = "v7" }, all()},
		{"no services", func(tb testing.TB, d *Document) { d.Services = nil }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := fleetDoc(t, n)
			prev, err := NewSnapshotFrom(nil, doc, "test")
			if err != nil {
				t.Fatal(err)
			}
			sameValue(t, prev, doc)
			d := nextDoc(doc)
			tt.change(t, d)
			snap, err := NewSnapshotFrom(prev, d, "test")
			if err != nil {
				t.Fatal(err)
			}
			sameValue(t, snap, d)
			for name := range d.Services {
				reused := snap.Services[name] == prev.Services[name] && prev.Services[name] != nil
				copyReused := snap.Doc.Services[name] == prev.Doc.Services[name] && prev.Doc.Services[name] != nil
				if want := slices.Contains(tt.reused, name); reused != want || copyReused != want && d.Services[name] != nil {
					t.Errorf("%s: view reused %v, block copy reused %v; want %v", name, reused, copyReused, want)
				}
			}
			if (snap.Doc.Defaults == prev.Doc.Defaults) != (d.Defaults == doc.Defaults) && d.Defaults != nil {
				t.Errorf("defaults copy reused = %v; want %v", snap.Doc.Defaults == prev.Doc.Defaults, d.Defaults == doc.Defaults)
			}
			// And one more build on the new snapshot, unchanged: every
			// service reused.
			again, err := NewSnapshotFrom(snap, nextDoc(d), "test")
			if err != nil {
				t.Fatal(err)
			}
			sameValue(t, again, d)
			for name := range d.Services {
				if again.Services[name] != snap.Services[name] {
					t.Errorf("%s: not reused by a build that changed nothing", name)
				}
			}
		})
	}
}

// A snapshot that NewSnapshot built (whose caller may have changed its
// blocks in place since) gives nothing to reuse; neither does nil.
func TestNewSnapshotFromOtherSnapshots(t *testing.T) {
	doc := fleetDoc(t, 5)
	plain, err := NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	doc.Services[fleetName(1)].Timeout = Duration(9e9) // allowed after NewSnapshot
	for name, prev := range map[string]*Snapshot{"NewSnapshot's": plain, "nil": nil, "no document": {}} {
		snap, err := NewSnapshotFrom(prev, doc, "test")
		if err != nil {
			t.Fatal(err)
		}
		sameValue(t, snap, doc)
		if prev != nil {
			for svc, rs := range snap.Services {
				if rs == prev.Services[svc] {
					t.Errorf("%s: %s reused", name, svc)
				}
			}
		}
	}
}

// An invalid document is rejected as NewSnapshot rejects it, and prev
// stays usable.
func TestNewSnapshotFromInvalid(t *testing.T) {
	doc := fleetDoc(t, 3)
	prev, err := NewSnapshotFrom(nil, doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	bad := nextDoc(doc)
	bad.Services["Bad Name"] = &Service{}
	_, err = NewSnapshotFrom(prev, bad, "test")
	_, want := NewSnapshot(bad, "test")
	if err == nil || want == nil || err.Error() != want.Error() {
		t.Errorf("err = %v; want %v", err, want)
	}
	snap, err := NewSnapshotFrom(prev, nextDoc(doc), "test")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Services[fleetName(1)] != prev.Services[fleetName(1)] {
		t.Error("not reused after a rejected build")
	}
}

// The documents of testdata, and the odd values Hash must write as
// encoding/json does, hash alike through the memo of block JSON, built
// anew and then reused.
func TestNewSnapshotFromHash(t *testing.T) {
	for _, name := range []string{"design.yaml", "design.json"} {
		doc := mustParse(t, string(readTestdata(t, name)))
		prev, err := NewSnapshotFrom(nil, doc, "test")
		if err != nil {
			t.Fatal(err)
		}
		sameValue(t, prev, doc)
		if prev.Hash != marshalHash(t, doc) {
			t.Errorf("%s: hash %s; want %s", name, prev.Hash, marshalHash(t, doc))
		}
		d := nextDoc(doc)
		for svc := range d.Services {
			delete(d.Services, svc) // one removed
			break
		}
		d.Version = "<&>"
		snap, err := NewSnapshotFrom(prev, d, "test")
		if err != nil {
			t.Fatal(err)
		}
		sameValue(t, snap, d)
		if snap.Hash != marshalHash(t, d) {
			t.Errorf("%s changed: hash %s; want %s", name, snap.Hash, marshalHash(t, d))
		}
	}
}

// BenchmarkSnapshotOneChange builds the snapshot of a document of 500
// services of which one block, the middle one in name order, changes
// between builds: NewSnapshot of the whole, and NewSnapshotFrom the
// previous snapshot.
func BenchmarkSnapshotOneChange(b *testing.B) {
	const n = 500
	doc := fleetDoc(b, n)
	mid := slices.Sorted(maps.Keys(doc.Services))[n/2]
	changed := [2]*Service{fleetBlock(b, 7, 1), fleetBlock(b, 7, 2)}
	docs := [2]*Document{nextDoc(doc), nextDoc(doc)}
	docs[0].Services[mid], docs[1].Services[mid] = changed[0], changed[1]
	b.Run("NewSnapshot", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := NewSnapshot(docs[i%2], "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("NewSnapshotFrom", func(b *testing.B) {
		b.ReportAllocs()
		prev, err := NewSnapshotFrom(nil, docs[1], "bench")
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			if prev, err = NewSnapshotFrom(prev, docs[i%2], "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Validate", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := docs[i%2].Validate(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A block that did not change but names another service, whose block
// did, is checked again; so is every block when the defaults change.
// Each invalid document gives NewSnapshot's error, and Assemble, which
// validates the same way on its prev, rejects as before.
func TestNewSnapshotFromRevalidates(t *testing.T) {
	base := func(tb testing.TB) *Document {
		return mustParse(tb, `
services:
  a:
    routes:
      - split: [{service: b, subset: v1, weight: 100}]
  b:
    subsets: {v1: {version: v1}}
  c:
    subsets: {v2: {version: v2}}
`)
	}
	tests := []struct {
		name   string
		change func(d *Document)
	}{
		{"the named service loses the subset", func(d *Document) { d.Services["b"] = &Service{} }},
		{"the named service is removed", func(d *Document) { delete(d.Services, "b") }},
		{"new defaults routes split to a subset c lacks", func(d *Document) {
			d.Defaults = &Service{Routes: []Route{{Split: []WeightedSubset{{Subset: "v9", Weight: 100}}}}}
		}},
		{"a bad name", func(d *Document) { d.Services["Bad"] = &Service{} }},
		{"a bad egress", func(d *Document) { d.Egress = "maybe" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := base(t)
			prev, err := NewSnapshotFrom(nil, doc, "test")
			if err != nil {
				t.Fatal(err)
			}
			d := nextDoc(doc)
			tt.change(d)
			_, want := NewSnapshot(d, "test")
			if want == nil {
				t.Fatal("the changed document is valid")
			}
			if _, err := NewSnapshotFrom(prev, d, "test"); err == nil || err.Error() != want.Error() {
				t.Errorf("NewSnapshotFrom: %v\nwant %v", err, want)
			}
			got, rejected := Blocks{Global: GlobalOf(d), Defaults: d.Defaults, Services: d.Services}.Assemble(doc)
			if got == nil || got.Validate() != nil || len(rejected) == 0 && d.Egress == "" {
				t.Errorf("Assemble: %v, rejected %v", got, rejected)
			}
		})
	}
	// The first case in full: the unchanged block a is the one rejected.
	doc := base(t)
	d := nextDoc(doc)
	d.Services["b"] = &Service{}
	got, rejected := Blocks{Services: d.Services}.Assemble(doc)
	if got != doc || rejected["services.a"] == nil {
		t.Errorf("Assemble: %v, rejected %v", got, rejected)
	}
}
