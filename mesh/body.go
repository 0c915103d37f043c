package mesh

import (
	"context"
	"io"
	"sync"
)

// cancelBody ends a context when the caller is done with a response body:
// on Close, or when a read reaches the end or fails. The deadline of a call
// covers reading its answer, as http.Client's timeout does, so the context
// must outlive RoundTrip and end with the body.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
	once   sync.Once
}

// cancelRWBody keeps the io.Writer of a 101 Switching Protocols body.
type cancelRWBody struct {
	*cancelBody
	w io.Writer
}

func (b *cancelRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

func wrapBody(body io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	cb := &cancelBody{ReadCloser: body, cancel: cancel}
	if w, ok := body.(io.Writer); ok {
		return &cancelRWBody{cancelBody: cb, w: w}
	}
	return cb
}

func (b *cancelBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.cancel)
	}
	return n, err
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.cancel)
	return err
}
