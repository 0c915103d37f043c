package mesh

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/inmesh/inmesh/internal/core"
)

// cancelBody ends a context when the caller is done with a response body:
// on Close, or when a read reaches the end or fails. The deadline of a call
// covers reading its answer, as http.Client's timeout does, so the context
// must outlive RoundTrip and end with the body. It ends either an
// attempt's context (cancel) or the call's (call, core.Call.EndContext).
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
	call   *core.Call
	ended  atomic.Bool
}

// cancelRWBody keeps the io.Writer of a 101 Switching Protocols body.
type cancelRWBody struct {
	*cancelBody
	w io.Writer
}

func (b *cancelRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// wrapBody returns body ending cb's context, cb's storage the caller's;
// a body that is also an io.Writer (101 Switching Protocols) keeps its
// Write.
func wrapBody(body io.ReadCloser, cb *cancelBody) io.ReadCloser {
	cb.ReadCloser = body
	if w, ok := body.(io.Writer); ok {
		return &cancelRWBody{cancelBody: cb, w: w}
	}
	return cb
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.end()
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// end ends the context, once.
func (b *cancelBody) end() {
	if !b.ended.CompareAndSwap(false, true) {
		return
	}
	if b.cancel != nil {
		b.cancel()
	}
	if b.call != nil {
		b.call.EndContext()
	}
}
