package mesh

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
)

func TestRetriesAndIdempotency(t *testing.T) {
	tests := []struct {
		name          string
		method        string
		nonIdempotent bool
		wantHits      int64
	}{
		{"GET is retried", http.MethodGet, false, 3},
		{"POST is sent once", http.MethodPost, false, 1},
		{"POST retried when non_idempotent", http.MethodPost, true, 3},
		{"PUT is retried", http.MethodPut, false, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := meshtest.NewBackend(t, "flaky", meshtest.Status(503))
			m := newTestMesh(t, fmt.Sprintf(`
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints: [{address: %s}]
    retry:
      attempts: 3
      backoff: {initial: 1ms, max: 2ms}
      non_idempotent: %v
`, b.Addr(), tc.nonIdempotent))
			code, _, err := do(t, m, tc.method, "http://billing/charge", "amount=42&currency=EUR")
			if err != nil {
				t.Fatalf("a 5xx answer must come back as a response, got %v", err)
			}
			if code != 503 {
				t.Fatalf("status %d, want 503", code)
			}
			if got := b.Hits.Load(); got != tc.wantHits {
				t.Fatalf("backend saw %d calls, want %d", got, tc.wantHits)
			}
			for i, body := range b.Bodies() {
				if body != "amount=42&currency=EUR" {
					t.Fatalf("attempt %d body %q differs", i+1, body)
				}
			}
			if len(b.Bodies()) != int(tc.wantHits) {
				t.Fatalf("%d bodies for %d hits", len(b.Bodies()), tc.wantHits)
			}
		})
	}
}

func TestBodyReplayedByteForByte(t *testing.T) {
	b := meshtest.NewBackend(t, "flaky", meshtest.Status(503))
	m := newTestMesh(t, plainBilling(b.Addr(), `
    retry: {attempts: 4, backoff: {initial: 1ms, max: 1ms}, non_idempotent: true}
`))
	payload := bytes.Repeat([]byte{0, 1, 2, 0xff, 'x'}, 40000) // 200 kB, binary
	req, _ := http.NewRequest(http.MethodPost, "http://billing/upload", bytes.NewReader(payload))
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(b.Bodies()) != 4 {
		t.Fatalf("%d attempts reached the backend, want 4", len(b.Bodies()))
	}
	for i, got := range b.Bodies() {
		if got != string(payload) {
			t.Fatalf("attempt %d: body of %d bytes differs from the %d sent", i+1, len(got), len(payload))
		}
	}
}

func TestBodyWithoutGetBodyIsNotRetried(t *testing.T) {
	b := meshtest.NewBackend(t, "flaky", meshtest.Status(503))
	m := newTestMesh(t, plainBilling(b.Addr(), `
    retry: {attempts: 3, backoff: {initial: 1ms, max: 1ms}}
`))
	req, _ := http.NewRequest(http.MethodPut, "http://billing/doc", io.NopCloser(strings.NewReader("once")))
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if b.Hits.Load() != 1 {
		t.Fatalf("a body that cannot be replayed was sent %d times", b.Hits.Load())
	}
}

func TestPassthrough(t *testing.T) {
	outside := meshtest.NewBackend(t, "outside", nil)
	m := newTestMesh(t, `
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints: [{address: 127.0.0.1:1}]
`)
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	code, body, err := get(t, m, outside.URL+"/hello")
	if err != nil || code != 200 || body != "outside" {
		t.Fatalf("passthrough: %d %q %v", code, body, err)
	}
}

func TestRetryAfterNeverWaitsPastDeadline(t *testing.T) {
	b := meshtest.NewBackend(t, "busy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	m := newTestMesh(t, plainBilling(b.Addr(), `
    timeout: 2s
    retry: {attempts: 3, backoff: {initial: 1ms, max: 1ms}}
`))
	code, _, err := get(t, m, "http://billing/x")
	if err != nil || code != 503 {
		t.Fatalf("want the 503 back at once: %d %v", code, err)
	}
	if b.Hits.Load() != 1 {
		t.Fatalf("retried %d times past a Retry-After longer than the deadline", b.Hits.Load()-1)
	}
}

func TestPerTryTimeoutIsRetried(t *testing.T) {
	var n atomic.Int64
	b := meshtest.NewBackend(t, "sometimes-slow", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			<-r.Context().Done() // the first attempt hangs until the mesh gives up on it
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	m := newTestMesh(t, plainBilling(b.Addr(), `
    timeout: 10s
    retry: {attempts: 2, per_try_timeout: 100ms, backoff: {initial: 1ms, max: 1ms}, retry_on: [reset]}
`))
	code, body, err := get(t, m, "http://billing/x")
	if err != nil || code != 200 || body != "ok" {
		t.Fatalf("%d %q %v", code, body, err)
	}
	if n.Load() != 2 {
		t.Fatalf("backend saw %d attempts, want 2", n.Load())
	}
}

// plainBilling is a policy with one plain (tls: disable) billing endpoint
// at addr and the service settings in settings, indented as under billing.
func plainBilling(addr, settings string) string {
	return "defaults: {tls: disable} # plain test backends\nservices:\n  billing:\n" +
		"    endpoints: [{address: " + addr + "}]\n" + strings.TrimPrefix(settings, "\n")
}
