package mesh

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/inmesh/inmesh/discovery"
)

// canaryPolicy routes billing 90/10 over two backends, with a header route
// that sends everything to v2.
func canaryPolicy(v1, v2 string) string {
	return fmt.Sprintf(`
version: canary-1
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints:
      - {address: %s, labels: {version: v1}}
      - {address: %s, labels: {version: v2}}
    subsets:
      v1: {version: v1}
      v2: {version: v2}
    routes:
      - name: canary-by-header
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: default
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`, v1, v2)
}

func TestSplitAndHeaderRoute(t *testing.T) {
	v1 := newBackend(t, "v1", nil)
	v2 := newBackend(t, "v2", nil)
	m := newTestMesh(t, canaryPolicy(v1.addr(), v2.addr()))

	const calls = 2000
	for range calls {
		code, _, err := get(t, m, "http://billing/charge")
		if err != nil || code != 200 {
			t.Fatalf("call: %d %v", code, err)
		}
	}
	share := float64(v2.hits.Load()) / calls
	t.Logf("v2 share over %d calls: %.2f%% (v1 %d, v2 %d)", calls, share*100, v1.hits.Load(), v2.hits.Load())
	if math.Abs(share-0.10) > 0.025 {
		t.Fatalf("v2 share %.3f, want 0.10 ± 0.025", share)
	}

	before1, before2 := v1.hits.Load(), v2.hits.Load()
	for range 50 {
		_, body, err := get(t, m, "http://billing/charge", "x-canary", "true")
		if err != nil || body != "v2" {
			t.Fatalf("header route: body %q err %v", body, err)
		}
	}
	if v1.hits.Load() != before1 || v2.hits.Load() != before2+50 {
		t.Fatalf("header route leaked to v1: v1 %d->%d v2 %d->%d", before1, v1.hits.Load(), before2, v2.hits.Load())
	}
}

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
			b := newBackend(t, "flaky", status(503))
			m := newTestMesh(t, fmt.Sprintf(`
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints: [{address: %s}]
    retry:
      attempts: 3
      backoff: {initial: 1ms, max: 2ms}
      non_idempotent: %v
`, b.addr(), tc.nonIdempotent))
			code, _, err := do(t, m, tc.method, "http://billing/charge", "amount=42&currency=EUR")
			if err != nil {
				t.Fatalf("a 5xx answer must come back as a response, got %v", err)
			}
			if code != 503 {
				t.Fatalf("status %d, want 503", code)
			}
			if got := b.hits.Load(); got != tc.wantHits {
				t.Fatalf("backend saw %d calls, want %d", got, tc.wantHits)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			for i, body := range b.bodies {
				if body != "amount=42&currency=EUR" {
					t.Fatalf("attempt %d body %q differs", i+1, body)
				}
			}
			if len(b.bodies) != int(tc.wantHits) {
				t.Fatalf("%d bodies for %d hits", len(b.bodies), tc.wantHits)
			}
		})
	}
}

func TestBodyReplayedByteForByte(t *testing.T) {
	b := newBackend(t, "flaky", status(503))
	m := newTestMesh(t, plainBilling(b.addr(), `
    retry: {attempts: 4, backoff: {initial: 1ms, max: 1ms}, non_idempotent: true}
`))
	payload := bytes.Repeat([]byte{0, 1, 2, 0xff, 'x'}, 40000) // 200 kB, binary
	req, _ := http.NewRequest(http.MethodPost, "http://billing/upload", bytes.NewReader(payload))
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bodies) != 4 {
		t.Fatalf("%d attempts reached the backend, want 4", len(b.bodies))
	}
	for i, got := range b.bodies {
		if got != string(payload) {
			t.Fatalf("attempt %d: body of %d bytes differs from the %d sent", i+1, len(got), len(payload))
		}
	}
}

func TestBodyWithoutGetBodyIsNotRetried(t *testing.T) {
	b := newBackend(t, "flaky", status(503))
	m := newTestMesh(t, plainBilling(b.addr(), `
    retry: {attempts: 3, backoff: {initial: 1ms, max: 1ms}}
`))
	req, _ := http.NewRequest(http.MethodPut, "http://billing/doc", io.NopCloser(strings.NewReader("once")))
	resp, err := m.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if b.hits.Load() != 1 {
		t.Fatalf("a body that cannot be replayed was sent %d times", b.hits.Load())
	}
}

func TestRouteAndDiscoveryLayers(t *testing.T) {
	b := newBackend(t, "b", nil)
	m := newTestMesh(t, fmt.Sprintf(`
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints: [{address: %s, labels: {version: v1}}, {address: 127.0.0.1:1, labels: {version: v3}}]
    subsets: {v1: {version: v1}, v3: {version: v3}}
    routes:
      - name: charge
        match: {path_prefix: /charge, methods: [POST]}
        split: [{subset: v1, weight: 1}]
      - name: next
        match: {path_prefix: /next}
        split: [{subset: v3, weight: 1}]
`, b.addr()))
	// The v3 endpoint leaves, as discovery would report it (a policy whose
	// static endpoints leave a subset empty is invalid).
	publishEndpoints(t, m, map[string][]discovery.Endpoint{"billing": {{Address: b.addr(), Labels: map[string]string{"version": "v1"}}}})
	_, _, err := get(t, m, "http://billing/refund")
	if ce := callError(t, err); ce.Layer != LayerRoute || ce.Route != "" {
		t.Fatalf("CallError %+v", ce)
	}
	_, _, err = get(t, m, "http://billing/charge")
	if ce := callError(t, err); ce.Layer != LayerRoute {
		t.Fatalf("GET matched a POST-only route: %+v", ce)
	}
	_, _, err = get(t, m, "http://billing/next")
	if ce := callError(t, err); ce.Layer != LayerDiscovery || ce.Route != "next" || ce.Subset != "v3" {
		t.Fatalf("CallError %+v", ce)
	}
	if code, _, err := do(t, m, http.MethodPost, "http://billing/charge", "x"); err != nil || code != 200 {
		t.Fatalf("POST /charge: %d %v", code, err)
	}
}

func TestPassthrough(t *testing.T) {
	outside := newBackend(t, "outside", nil)
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
	b := newBackend(t, "busy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	m := newTestMesh(t, plainBilling(b.addr(), `
    timeout: 2s
    retry: {attempts: 3, backoff: {initial: 1ms, max: 1ms}}
`))
	code, _, err := get(t, m, "http://billing/x")
	if err != nil || code != 503 {
		t.Fatalf("want the 503 back at once: %d %v", code, err)
	}
	if b.hits.Load() != 1 {
		t.Fatalf("retried %d times past a Retry-After longer than the deadline", b.hits.Load()-1)
	}
}

func mustRequest(t testing.TB, method, url string, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

func TestPerTryTimeoutIsRetried(t *testing.T) {
	var n atomic.Int64
	b := newBackend(t, "sometimes-slow", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			<-r.Context().Done() // the first attempt hangs until the mesh gives up on it
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	m := newTestMesh(t, plainBilling(b.addr(), `
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
