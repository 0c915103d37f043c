package meshgrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The helpers below are the HTTP side of the tests that run one body under
// both protocols (modes_test.go), as package mesh's tests have them.

// backend is a real HTTP server on 127.0.0.1 that counts what it serves.
type backend struct {
	*httptest.Server
	name string
	hits atomic.Int64
}

// newBackend starts a backend named name whose handler is h. It is closed
// when the test ends.
func newBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

// newTestMesh starts a mesh for service "tester" on the policy in yamlDoc.
func newTestMesh(t testing.TB, yamlDoc string, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	doc, err := policy.Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := append([]mesh.Option{mesh.WithService("tester"), mesh.WithPolicy(doc), mesh.WithLogger(quietLogger())}, opts...)
	m, err := mesh.New(ctx, all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// withClock is the option that sets a mesh's clock.
func withClock(c clock.Clock) mesh.Option { return meshlink.WithClock(c).(mesh.Option) }

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mustRequest builds a request with headers given as name, value pairs.
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

// callError extracts the *mesh.CallError of err or fails the test.
func callError(t testing.TB, err error) *mesh.CallError {
	t.Helper()
	var ce *mesh.CallError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *mesh.CallError, got %T: %v", err, err)
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

// benchPolicy exercises the full chain, as package mesh's benchmarks do: a
// header route that does not match, a weighted split, round-robin pick, a
// circuit breaker, retry bookkeeping with a budget, outlier detection.
func benchPolicy(addr1, addr2, timeout string) string {
	return fmt.Sprintf(`
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints:
      - {address: %[1]s, labels: {version: v1}}
      - {address: %[2]s, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    %[3]s
    retry: {attempts: 2, backoff: {initial: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 1000, open_for: 1s}
    outlier_detection: {consecutive_failures: 1000}
    routes:
      - name: canary
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: default
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`, addr1, addr2, timeout)
}

// benchMesh is a mesh of benchPolicy with metrics through the OTel SDK.
func benchMesh(b *testing.B, addr1, addr2, timeout string) *mesh.Mesh {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return newTestMesh(b, benchPolicy(addr1, addr2, timeout), mesh.WithMeterProvider(mp))
}

// writeFile replaces the file at path with content, as an editor's
// rename-write does.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
