package policy

import (
	"cmp"
	"maps"
	"reflect"
	"slices"
	"time"
)

// buildMemo is what a snapshot built by NewSnapshotFrom keeps for the next
// build on it.
type buildMemo struct {
	// defaults and services are the blocks of the document the snapshot
	// was built from, as the caller passed them (not the snapshot's
	// copies): a block of the next document that is the same pointer is
	// the same block, since callers do not modify a block once passed.
	defaults *Service
	services map[string]*Service
	// hash is the memo of Hash of the snapshot's Doc (nil: none), which
	// holds the names of its services, sorted.
	hash *hashMemo
	// routes is what checkResolvedSize counts of the document: the routes
	// its services resolve to.
	routes int
	// namers are the services whose routes' splits or failover name
	// another service (namesOthers): validated again at every build.
	namers map[string]bool
	// validated counts the services the build validated, for tests.
	validated int
	// diffed tells that validate compared the document with the last
	// one's, block by block: changed holds the names of the services
	// whose block is not the last one's (added or changed), added those
	// of them the last lacked, removed those the document lacks. Kept for
	// the build only.
	diffed                  bool
	changed, added, removed []string
}

// NewSnapshotFrom is NewSnapshot(doc, source) for a document that follows
// the one prev was built from, at a cost that follows what changed: a
// service whose block is the same pointer in doc as in prev's document,
// with the same defaults block pointer, keeps prev's copy of its block and
// prev's resolved view (snap.Doc.Services[name] == prev.Doc.Services[name]
// and snap.Services[name] == prev.Services[name]); the others are copied
// and resolved anew. A new defaults pointer resolves every service anew.
// The resolved view depends on nothing else of the document (version,
// trust_domain, egress), so a change of those keeps the views.
//
// The result equals NewSnapshot's in value: Doc, Version, Hash and
// Services (Rejected is left nil, Loaded is now), and an invalid doc gives
// NewSnapshot's error. Validation checks the changed blocks and those
// whose routes name another service, and counts the resolved size on from
// prev's; the snapshot's maps start as copies of prev's, the changed
// services put in. Hash resumes the SHA-256 of prev's document from its
// last checkpoint (every 16 services in name order) before the first
// changed service and streams on the JSON of the unchanged blocks from a
// memo of prev's (which costs about the size of each block's JSON): a
// change reads about half the document's JSON into the hash on average,
// as SHA-256 cannot skip what follows it. What is left of the cost that
// grows with the document is comparing each block pointer with prev's
// and copying maps.
//
// The contract that makes the pointers meaningful: a caller must not
// modify a block (doc.Defaults, a value of doc.Services, or anything they
// point to) once it has passed it here; a changed block is a new pointer.
// The map doc.Services and doc itself may change afterwards. A resolved
// view reused from prev is prev's as the caller left it: a caller that
// sets fields of its views (such as Provenance) must not change them in
// place on a view that prev holds.
//
// prev nil, or a snapshot not built by NewSnapshotFrom, builds everything
// (it only remembers the blocks for the next call).
func NewSnapshotFrom(prev *Snapshot, doc *Document, source string) (*Snapshot, error) {
	var pm *buildMemo
	if prev != nil && prev.Doc != nil {
		pm = prev.memo
	}
	memo := &buildMemo{
		defaults: doc.Defaults,
		services: maps.Clone(doc.Services),
	}
	if err := memo.validate(pm, doc); err != nil {
		return nil, err
	}
	c := copier{interned: map[string]map[string]string{}}

	// The document's own fields, its blocks left out, copied as
	// readOnlyCopy copies them.
	shell := *doc
	shell.Defaults, shell.Services = nil, nil
	out := new(Document)
	c.copyValue(reflect.ValueOf(out).Elem(), reflect.ValueOf(&shell).Elem())

	sameDefaults := pm != nil && pm.defaults == doc.Defaults
	if sameDefaults {
		out.Defaults = prev.Doc.Defaults
	} else {
		out.Defaults = c.block(doc.Defaults)
	}
	var services map[string]*ResolvedService
	// first is the least name whose block is not prev's: changed, added
	// or removed; "" for none.
	first, changed := "", false
	sameNames := false
	if sameDefaults && memo.diffed && doc.Services != nil && prev.Doc.Services != nil &&
		len(prev.Services) == len(pm.services) && len(prev.Doc.Services) == len(pm.services) {
		// Prev's maps as they are (a clone copies them whole, without
		// hashing a key), the changes on them.
		out.Services = maps.Clone(prev.Doc.Services)
		services = maps.Clone(prev.Services)
		for _, name := range memo.removed {
			delete(out.Services, name)
			delete(services, name)
		}
		for _, name := range memo.changed {
			cp := c.block(doc.Services[name])
			out.Services[name] = cp
			services[name] = resolveService(name, out.Defaults, cp)
		}
		for _, names := range [][]string{memo.changed, memo.removed} {
			for _, name := range names {
				if !changed || name < first {
					first, changed = name, true
				}
			}
		}
		sameNames = len(memo.removed) == 0 && len(doc.Services) == len(pm.services)
	} else {
		if doc.Services != nil {
			out.Services = make(map[string]*Service, len(doc.Services))
			services = make(map[string]*ResolvedService, len(doc.Services))
		} else {
			services = map[string]*ResolvedService{}
		}
		known := 0 // the names of doc that prev's document has
		for name, svc := range doc.Services {
			var old *Service
			ok := false
			if pm != nil {
				if old, ok = pm.services[name]; ok {
					known++
				}
			}
			if sameDefaults && ok && old == svc {
				if rs, ok := prev.Services[name]; ok {
					out.Services[name] = prev.Doc.Services[name]
					services[name] = rs
					continue
				}
			}
			if !changed || name < first {
				first, changed = name, true
			}
			cp := c.block(svc)
			out.Services[name] = cp
			services[name] = resolveService(name, out.Defaults, cp)
		}
		if pm != nil && known < len(pm.services) {
			for name := range pm.services {
				if _, ok := doc.Services[name]; !ok && (!changed || name < first) {
					first, changed = name, true
				}
			}
		}
		sameNames = pm != nil && known == len(pm.services) && known == len(doc.Services)
	}

	var names []string
	var ph *hashMemo
	if pm != nil {
		ph = pm.hash
	}
	switch {
	case ph != nil && sameNames:
		names = ph.names // the same names
	case ph != nil && memo.diffed && len(memo.added)+len(memo.removed) <= len(doc.Services)/8:
		// A few names added or removed: prev's, moved.
		names = slices.Grow(slices.Clone(ph.names), len(memo.added))
		for _, name := range memo.removed {
			if i, ok := slices.BinarySearch(names, name); ok {
				names = slices.Delete(names, i, i+1)
			}
		}
		for _, name := range memo.added {
			if i, ok := slices.BinarySearch(names, name); !ok {
				names = slices.Insert(names, i, name)
			}
		}
	default:
		names = slices.Sorted(maps.Keys(doc.Services))
	}
	memo.changed, memo.added, memo.removed = nil, nil, nil
	resume := len(names)
	if changed {
		resume, _ = slices.BinarySearch(names, first)
	}
	hash, hm, err := hashFrom(out, names, ph, resume)
	if err != nil {
		return nil, err
	}
	memo.hash = hm
	return &Snapshot{
		Doc:      out,
		Version:  cmp.Or(out.Version, hash),
		Hash:     hash,
		Source:   source,
		Loaded:   time.Now(),
		Services: services,
		memo:     memo,
	}, nil
}

// block returns a copy of one block (nil for nil).
func (c *copier) block(s *Service) *Service {
	var out *Service
	c.copyValue(reflect.ValueOf(&out).Elem(), reflect.ValueOf(&s).Elem())
	return out
}

// validate is doc.Validate for the memo of doc, validating only the
// services whose block is not pm's (and the namers) when pm, the memo of
// the document before, has the same defaults: the others validated in
// it. The resolved size is counted on from pm's. An invalid doc gives
// Validate's error.
func (m *buildMemo) validate(pm *buildMemo, doc *Document) error {
	if doc == nil {
		return doc.Validate()
	}
	inherited := 1
	if doc.Defaults != nil && len(doc.Defaults.Routes) > 0 {
		inherited = len(doc.Defaults.Routes)
	}
	count := func(svc *Service) int {
		if svc != nil && len(svc.Routes) > 0 {
			return len(svc.Routes)
		}
		return inherited
	}
	if pm == nil || pm.defaults != doc.Defaults || pm.namers == nil {
		if err := doc.Validate(); err != nil {
			return err
		}
		m.namers = map[string]bool{}
		for name, svc := range doc.Services {
			m.routes += count(svc)
			if namesOthers(name, doc.Defaults, svc) {
				m.namers[name] = true
			}
		}
		m.validated = len(doc.Services)
		return nil
	}
	m.diffed = true
	var check []string
	routes, known := pm.routes, 0
	for name, svc := range doc.Services {
		old, ok := pm.services[name]
		if ok {
			known++
			if old == svc {
				continue
			}
			routes -= count(old)
		} else {
			m.added = append(m.added, name)
		}
		routes += count(svc)
		check = append(check, name)
	}
	m.namers = maps.Clone(pm.namers)
	if known < len(pm.services) {
		for name, old := range pm.services {
			if _, ok := doc.Services[name]; !ok {
				routes -= count(old)
				delete(m.namers, name)
				m.removed = append(m.removed, name)
			}
		}
	}
	m.routes = routes
	if len(doc.Services) > MaxServices || routes > MaxResolvedRoutes {
		return doc.Validate() // checkResolvedSize's error
	}
	for _, name := range check {
		if namesOthers(name, doc.Defaults, doc.Services[name]) {
			m.namers[name] = true
		} else {
			delete(m.namers, name)
		}
	}
	m.validated = len(check)
	m.changed = check
	v := validator{doc: doc}
	v.globals(doc) // few: checked again
	ms := v.push("services")
	for _, name := range check {
		v.serviceNamed(name, doc.Services[name])
		if len(v.problems) > 0 {
			break
		}
	}
	if len(v.problems) == 0 {
		for name := range m.namers {
			if old, ok := pm.services[name]; !ok || old != doc.Services[name] {
				continue // in check: checked above
			}
			m.validated++
			v.serviceNamed(name, doc.Services[name])
			if len(v.problems) > 0 {
				break
			}
		}
	}
	v.pop(ms)
	if len(v.problems) == 0 {
		return nil
	}
	return doc.Validate()
}
