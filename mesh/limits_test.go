package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

// publishEndpoints publishes a state of m with the policy in force and the
// endpoints eps, as an update of a discovery source (a catalog) would:
// static endpoints alone can no longer leave a subset empty.
func publishEndpoints(t *testing.T, m *Mesh, eps map[string][]discovery.Endpoint) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.state.Load()
	st := m.compile(old.policy, &discovery.Snapshot{Source: "test", Services: eps})
	st.seq = old.seq + 1
	m.state.Store(st)
	close(old.replaced)
}

// busy answers 503 with Retry-After: seconds, counting its hits and the
// protocol of the last one.
type busy struct {
	seconds string
	hits    atomic.Int64
	proto   atomic.Value
}

func (b *busy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.proto.Store(r.Proto)
	w.Header().Set("Retry-After", b.seconds)
	w.WriteHeader(http.StatusServiceUnavailable)
}

// doBounded sends GET url through m on a context without deadline, and
// fails the test, canceling the call, if it has not returned within bound.
func doBounded(t *testing.T, m *Mesh, url string, bound time.Duration) (int, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := m.HTTPClient().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{code: resp.StatusCode}
	}()
	select {
	case r := <-done:
		return r.code, r.err
	case <-time.After(bound):
		cancel()
		<-done
		t.Fatalf("the call was still waiting after %v", bound)
		return 0, nil
	}
}

// A Retry-After longer than the route's backoff max is not waited, even
// without a deadline: the answer is returned at once.
func TestRetryAfterLongerThanBackoffMaxIsNotWaited(t *testing.T) {
	tests := []struct {
		name    string
		backoff string // the retry block's backoff, "" for the defaults (max 250ms)
	}{
		{"default backoff", ""},
		{"backoff max 1m", "backoff: {initial: 10ms, max: 1m}, "},
	}
	for _, tc := range tests {
		t.Run("HTTP/1.1 "+tc.name, func(t *testing.T) {
			b := &busy{seconds: "3600"}
			srv := httptest.NewServer(b)
			t.Cleanup(srv.Close)
			m := newTestMesh(t, plainBilling(srv.Listener.Addr().String(), `
    retry: {`+tc.backoff+`attempts: 3, retry_on: [503]}
`))
			code, err := doBounded(t, m, "http://billing/x", 10*time.Second)
			if err != nil || code != http.StatusServiceUnavailable {
				t.Fatalf("want the 503 back: %d %v", code, err)
			}
			if got := b.hits.Load(); got != 1 {
				t.Fatalf("backend saw %d attempts, want 1", got)
			}
		})
	}
	t.Run("mTLS HTTP/2", func(t *testing.T) {
		b := &busy{seconds: "3600"}
		policyFor := func(addr string) string {
			return fmt.Sprintf(`
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    retry: {attempts: 3, retry_on: [503]}
  enrollment: {}
`, addr)
		}
		srv := httptest.NewUnstartedServer(nil)
		billing := newTestMesh(t, policyFor(srv.Listener.Addr().String()), WithService("billing"))
		srv.Config.Handler = billing.Handler(b)
		srv.TLS = billing.ServerTLSConfig()
		srv.EnableHTTP2 = true
		srv.StartTLS()
		t.Cleanup(srv.Close)
		m := newTestMesh(t, policyFor(srv.Listener.Addr().String()), WithService("enrollment"))
		code, err := doBounded(t, m, "http://billing/x", 10*time.Second)
		if err != nil || code != http.StatusServiceUnavailable {
			t.Fatalf("want the 503 back: %d %v", code, err)
		}
		if got := b.hits.Load(); got != 1 {
			t.Fatalf("backend saw %d attempts, want 1", got)
		}
		if p := b.proto.Load(); p != "HTTP/2.0" {
			t.Fatalf("the call went over %v, want HTTP/2.0", p)
		}
	})
}

// A Retry-After within the backoff max is still honoured: the retry waits
// for it (on the mesh's clock).
func TestRetryAfterWithinBackoffMaxIsWaited(t *testing.T) {
	b := &busy{seconds: "30"}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	clk := clocktest.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := newTestMesh(t, plainBilling(srv.Listener.Addr().String(), `
    retry: {attempts: 2, backoff: {initial: 1ms, max: 1m}, retry_on: [503]}
`), optionFunc(func(c *config) { c.clock = clk }))
	done := make(chan int, 1)
	go func() {
		code, _, err := get(t, m, "http://billing/x")
		if err != nil {
			t.Error(err)
		}
		done <- code
	}()
	clk.BlockUntilTimers(1) // the retry waits
	if got := b.hits.Load(); got != 1 {
		t.Fatalf("backend saw %d attempts while the retry waits, want 1", got)
	}
	clk.Advance(30 * time.Second)
	if code := <-done; code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", code)
	}
	if got := b.hits.Load(); got != 2 {
		t.Fatalf("backend saw %d attempts, want 2", got)
	}
}

// A missing policy file fails New at once, naming the path; it does not
// wait for the context (which would fail the test by ending first).
func TestNewFailsAtOnceOnAMissingPolicyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("tester"), WithPolicyFile(path), WithLogger(quietLogger()))
	if err == nil {
		_ = m.Close()
		t.Fatal("New accepted a missing policy file")
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New waited for the context: %v", err)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("New: %v, want an error naming %s and wrapping fs.ErrNotExist", err, path)
	}
}
