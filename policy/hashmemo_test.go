package policy

import (
	"testing"
)

// A chain of builds, each changing the previous document, hashes as
// json.Marshal of the whole does, and reads into the hash only the
// entries from the last checkpoint before the first changed one.
func TestHashResumes(t *testing.T) {
	const n = 100
	tests := []struct {
		name     string
		change   func(d *Document)
		streamed int // at most, -1: every entry
	}{
		{"nothing", func(d *Document) {}, hashEvery},
		{"the last block", func(d *Document) { d.Services[fleetName(n-1)] = fleetBlock(t, n-1, 5) }, hashEvery},
		{"a middle block", func(d *Document) { d.Services[fleetName(50)] = fleetBlock(t, 50, 5) }, n - 48},
		{"the first block", func(d *Document) { d.Services[fleetName(0)] = fleetBlock(t, 0, 5) }, -1},
		{"a block added at the end", func(d *Document) { d.Services["zz"] = &Service{} }, hashEvery + 1},
		{"a block added in the middle", func(d *Document) { d.Services[fleetName(50)+"a"] = nil }, n - 47},
		{"the last block removed", func(d *Document) { delete(d.Services, fleetName(n-1)) }, hashEvery},
		{"a middle block removed", func(d *Document) { delete(d.Services, fleetName(50)) }, n - 48},
		{"two blocks", func(d *Document) {
			d.Services[fleetName(90)] = fleetBlock(t, 90, 5)
			d.Services[fleetName(70)] = fleetBlock(t, 70, 5)
		}, n - 64},
		{"the version", func(d *Document) { d.Version = "v2" }, -1},
		{"the egress (after the services)", func(d *Document) { d.Egress = EgressDeny }, hashEvery},
		{"the defaults", func(d *Document) { d.Defaults = &Service{Settings: Settings{Timeout: Duration(3e9)}} }, -1},
		{"no defaults", func(d *Document) { d.Defaults = nil }, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := fleetDoc(t, n)
			prev, err := NewSnapshotFrom(nil, doc, "test")
			if err != nil {
				t.Fatal(err)
			}
			d := nextDoc(doc)
			tt.change(d)
			snap, err := NewSnapshotFrom(prev, d, "test")
			if err != nil {
				t.Fatal(err)
			}
			if want := marshalHash(t, d); snap.Hash != want {
				t.Fatalf("hash %s; want %s", snap.Hash, want)
			}
			got := snap.memo.hash.streamed
			if want := tt.streamed; want < 0 && got != len(d.Services) || want >= 0 && got > want {
				t.Errorf("%d entries read into the hash; want at most %d of %d", got, want, len(d.Services))
			}
			// And on from there: the memo the build left is right too.
			d2 := nextDoc(d)
			d2.Services[fleetName(80)] = fleetBlock(t, 80, 9)
			snap2, err := NewSnapshotFrom(snap, d2, "test")
			if err != nil {
				t.Fatal(err)
			}
			if want := marshalHash(t, d2); snap2.Hash != want {
				t.Fatalf("next hash %s; want %s", snap2.Hash, want)
			}
		})
	}
}

// Documents hashMemo does not describe (no services, one) hash as Hash.
func TestHashResumesSmall(t *testing.T) {
	docs := []*Document{
		{},
		{Egress: EgressDeny},
		{Services: map[string]*Service{}},
		{Services: map[string]*Service{"a": nil}},
		{Services: map[string]*Service{"a": {}}, Defaults: &Service{}},
	}
	var prev *Snapshot
	for i, d := range append(docs, docs...) {
		snap, err := NewSnapshotFrom(prev, d, "test")
		if err != nil {
			t.Fatal(err)
		}
		if want := marshalHash(t, d); snap.Hash != want {
			t.Errorf("%d: hash %s; want %s", i, snap.Hash, want)
		}
		prev = snap
	}
}

// A build validates the services whose block changed and those whose
// routes name another service, no others, and refuses as NewSnapshot
// does: a change that breaks an unchanged service that names it, a
// document past the resolved size.
func TestNewSnapshotFromValidatesChanged(t *testing.T) {
	const n = 100
	doc := fleetDoc(t, n)
	doc.Services["caller"] = &Service{Routes: []Route{{Split: []WeightedSubset{{Service: fleetName(3), Subset: "v1", Weight: 100}}}}}
	prev, err := NewSnapshotFrom(nil, doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		change    func(d *Document)
		validated int // -1: invalid
	}{
		{"nothing", func(d *Document) {}, 1},
		{"one block", func(d *Document) { d.Services[fleetName(50)] = fleetBlock(t, 50, 5) }, 2},
		{"one added, one removed", func(d *Document) {
			d.Services["new"] = &Service{}
			delete(d.Services, fleetName(9))
		}, 2},
		{"the named service loses its subset", func(d *Document) { d.Services[fleetName(3)] = &Service{} }, -1},
		{"the named service is removed", func(d *Document) { delete(d.Services, fleetName(3)) }, -1},
		{"a bad block", func(d *Document) { d.Services[fleetName(7)] = &Service{Routes: []Route{{Name: "a"}, {Name: "a"}}} }, -1},
		{"too many routes", func(d *Document) {
			d.Services[fleetName(7)] = &Service{Routes: make([]Route, MaxResolvedRoutes)}
		}, -1},
		{"the defaults", func(d *Document) { d.Defaults = &Service{} }, n + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := nextDoc(doc)
			tt.change(d)
			snap, err := NewSnapshotFrom(prev, d, "test")
			_, want := NewSnapshot(d, "test")
			if tt.validated < 0 {
				if want == nil || err == nil || err.Error() != want.Error() {
					t.Fatalf("error %v; want %v", err, want)
				}
				return
			}
			if err != nil || want != nil {
				t.Fatal(err, want)
			}
			sameValue(t, snap, d)
			if got := snap.memo.validated; got != tt.validated {
				t.Errorf("%d services validated; want %d", got, tt.validated)
			}
			routes := 0
			for _, svc := range d.Services {
				routes += max(1, len(svc.Routes)) // defaults without routes
			}
			if snap.memo.routes != routes {
				t.Errorf("routes %d; want %d", snap.memo.routes, routes)
			}
		})
	}
}
