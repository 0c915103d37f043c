package policy

import (
	"context"
	"fmt"
)

// staticSource emits one fixed document.
type staticSource struct {
	// doc is a private copy, never changed: the snapshots of Watch share
	// it (a snapshot is read only), so that a static policy is held once.
	doc *Document
}

// NewStaticSource returns a Source for a fixed, in-memory document (tests,
// embedding): Watch emits one Event, the snapshot of doc or the reason it is
// invalid, then waits for its context to end. doc is copied: changing it
// afterwards has no effect. The source's String is "inline".
func NewStaticSource(doc *Document) Source {
	return &staticSource{doc: doc.readOnlyCopy()}
}

// Watch emits the document once, then blocks until ctx ends and returns
// ctx.Err(). Each call builds a new snapshot, of the source's one copy of
// the document.
func (s *staticSource) Watch(ctx context.Context, emit func(Event)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var snap *Snapshot
	err := s.doc.Validate()
	if err == nil {
		snap, err = snapshotOwning(s.doc, s.String())
	}
	if err != nil {
		emit(Event{Err: sourceError(s, err)})
	} else {
		emit(Event{Snapshot: snap})
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *staticSource) String() string { return "inline" }

// sourceError prefixes err with the source that produced it:
// "file:/etc/inmesh/mesh.yaml: policy: services.billing.timeout: ...".
// errors.Is and errors.As see through it.
func sourceError(src fmt.Stringer, err error) error {
	return fmt.Errorf("%s: %w", src, err)
}
