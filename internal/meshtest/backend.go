package meshtest

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Backend is a real plaintext HTTP server on 127.0.0.1 that counts what it
// serves and keeps the request bodies it reads.
type Backend struct {
	*httptest.Server
	Name string
	Hits atomic.Int64

	mu     sync.Mutex
	bodies []string
}

// NewBackend starts a backend whose handler is h (nil: answer 200 with the
// backend's name). The body of each request is read, and kept, before h
// runs. The backend is closed when t ends.
func NewBackend(t testing.TB, name string, h http.HandlerFunc) *Backend {
	t.Helper()
	b := &Backend{Name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Hits.Add(1)
		if r.Body != nil {
			body, _ := io.ReadAll(r.Body)
			if len(body) > 0 {
				b.mu.Lock()
				b.bodies = append(b.bodies, string(body))
				b.mu.Unlock()
			}
		}
		if h != nil {
			h(w, r)
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(b.Close)
	return b
}

// Addr is the backend's host:port.
func (b *Backend) Addr() string { return strings.TrimPrefix(b.URL, "http://") }

// Bodies returns the non-empty request bodies the backend has read, in
// order.
func (b *Backend) Bodies() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.bodies...)
}

// Status answers code on every request.
func Status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// CountingListener counts the connections it accepts.
type CountingListener struct {
	net.Listener
	Accepted atomic.Int64
}

// Accept accepts a connection and counts it.
func (l *CountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.Accepted.Add(1)
	}
	return c, err
}

// ListenCounting listens on a free port of 127.0.0.1. The caller closes
// the listener, usually through the server that serves on it.
func ListenCounting(t testing.TB) *CountingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &CountingListener{Listener: ln}
}
