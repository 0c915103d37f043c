package mesh

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/inmesh/inmesh/internal/core"
)

// endingBody ends a context when the caller is done with a response body:
// on Close, or when a read reaches the end or fails. The deadline of a call
// covers reading its answer, as http.Client's timeout does, so the context
// must outlive RoundTrip and end with the body. E says which context: the
// call's (callEnd) or an attempt's (cancelEnd); a concrete E keeps the
// body the size of its fields, without an interface or a closure.
type endingBody[E ender] struct {
	io.ReadCloser
	e     E
	ended atomic.Bool
}

// ender ends a context.
type ender interface{ end() }

// callEnd ends the call's context (core.Call.EndContext).
type callEnd struct{ c *core.Call }

func (e callEnd) end() { e.c.EndContext() }

// cancelEnd ends an attempt's context.
type cancelEnd context.CancelFunc

func (e cancelEnd) end() { e() }

// endingRWBody keeps the io.Writer of a 101 Switching Protocols body.
type endingRWBody[E ender] struct {
	*endingBody[E]
	w io.Writer
}

func (b *endingRWBody[E]) Write(p []byte) (int, error) { return b.w.Write(p) }

// wrapBody returns body ending the context of b, b's storage the caller's;
// a body that is also an io.Writer (101 Switching Protocols) keeps its
// Write.
func wrapBody[E ender](body io.ReadCloser, b *endingBody[E]) io.ReadCloser {
	b.ReadCloser = body
	if w, ok := body.(io.Writer); ok {
		return &endingRWBody[E]{endingBody: b, w: w}
	}
	return b
}

func (b *endingBody[E]) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *endingBody[E]) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// end ends the context, once.
func (b *endingBody[E]) end() {
	if b.ended.CompareAndSwap(false, true) {
		b.e.end()
	}
}
