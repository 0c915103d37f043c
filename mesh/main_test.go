package mesh

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend is a real HTTP server on 127.0.0.1 that counts what it serves.
type backend struct {
	*httptest.Server
	name   string
	hits   atomic.Int64
	mu     sync.Mutex
	bodies []string
}

// newBackend starts a backend whose handler is h (nil: answer 200 with the
// backend's name). It is closed when the test ends.
func newBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
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

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

// status answers code on every request.
func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// newTestMesh starts a mesh for service "tester" on the policy in yamlDoc.
func newTestMesh(t testing.TB, yamlDoc string, opts ...Option) *Mesh {
	t.Helper()
	doc, err := policy.Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := append([]Option{WithService("tester"), WithPolicy(doc), WithLogger(quietLogger())}, opts...)
	m, err := New(ctx, all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// get sends a GET through the mesh client and returns status and body.
func get(t testing.TB, m *Mesh, url string, hdr ...string) (int, string, error) {
	t.Helper()
	return do(t, m, http.MethodGet, url, "", hdr...)
}

func do(t testing.TB, m *Mesh, method, url, body string, hdr ...string) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// callError extracts the *CallError of err or fails the test.
func callError(t testing.TB, err error) *CallError {
	t.Helper()
	var ce *CallError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *CallError, got %T: %v", err, err)
	}
	return ce
}

// eventually polls cond until it holds or the (generous) bound passes.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v", what, bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
