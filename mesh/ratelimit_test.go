package mesh

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/telemetry"
)

// limitedTester is tester's policy with rate_limit block rl.
func limitedTester(rl string) string { return "services: {tester: {rate_limit: " + rl + "}}\n" }

// TestHandlerAllocationsRateLimited pins the allocations of Handler with a
// rate_limit block that allows the call: the one of a call without it
// (TestHandlerAllocations), the limiter adding none.
func TestHandlerAllocationsRateLimited(t *testing.T) {
	for _, rl := range []string{
		"{requests_per_second: 1e9, burst: 1000000000}",
		"{requests_per_second: 1e9, burst: 1000000000, per_caller: true}",
	} {
		m := newTestMesh(t, limitedTester(rl),
			WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
		h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		req, err := http.NewRequest(http.MethodGet, "http://tester/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(HeaderTimeout, "2000")
		w := &nopWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		const want = 1
		if got := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, req) }); got != want {
			t.Errorf("%s: Handler allocates %v times per request, want %d", rl, got, want)
		}
	}
}

// TestRateLimitLogs: a refused caller is logged at most once a second,
// with the count of its refusals; every decision is counted.
func TestRateLimitLogs(t *testing.T) {
	var buf meshtest.LockedBuffer
	fc := clocktest.NewFake(time.Now())
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(t.Context()) })
	m := newTestMesh(t, limitedTester("{requests_per_second: 1, burst: 1, per_caller: true}"),
		WithLogger(slog.New(slog.NewTextHandler(&buf, nil))), meshlink.WithClock(fc).(Option), WithMeterProvider(mp))
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	codes := map[int]int{}
	for range 3 { // three seconds of calls 100 ms apart, 10 a round
		for range 10 {
			for range 10 {
				w := &recordingWriter{h: http.Header{}}
				req, _ := http.NewRequest(http.MethodGet, "http://tester/x", nil)
				h.ServeHTTP(w, req)
				codes[w.code]++
			}
			fc.Advance(100 * time.Millisecond)
		}
	}
	// A token a second, three seconds: 3 served... and the token of the
	// last advance is not used.
	if codes[http.StatusNoContent] != 3 || codes[http.StatusTooManyRequests] != 297 {
		t.Fatalf("answers %v, want 3 served and 297 refused", codes)
	}
	if n := strings.Count(buf.String(), "caller rate limited"); n != 3 {
		t.Fatalf("%d log lines of refusals, want 3 (one a second):\n%s", n, buf.String())
	}
	got := meshtest.Int64Sums(t, reader, telemetry.MetricRateLimitDecisions, func(a attribute.Set) string {
		c, ok := a.Value(telemetry.AttrCaller)
		return fmt.Sprint(meshtest.Attr(a, telemetry.AttrRateLimitResult), " caller=", c.AsString(), " ", ok)
	})
	// Per caller: the caller attribute is there, "" for the callers
	// without a verified identity.
	if want := map[string]int64{"allowed caller= true": 3, "limited caller= true": 297}; !maps.Equal(got, want) {
		t.Fatalf("decisions %v, want %v", got, want)
	}
}

// recordingWriter is a ResponseWriter that keeps the status code.
type recordingWriter struct {
	h    http.Header
	code int
}

func (w *recordingWriter) Header() http.Header         { return w.h }
func (w *recordingWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *recordingWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkHandlerRateLimit measures Handler (telemetry off) without a
// rate_limit block, and with one that allows every call, shared or per
// caller.
func BenchmarkHandlerRateLimit(b *testing.B) {
	for _, bc := range []struct{ name, policy string }{
		{"off", "services: {tester: {}}\n"},
		{"shared", limitedTester("{requests_per_second: 1e9, burst: 1000000000}")},
		{"per_caller", limitedTester("{requests_per_second: 1e9, burst: 1000000000, per_caller: true}")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := newTestMesh(b, bc.policy, WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
			h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
			req, _ := http.NewRequest(http.MethodGet, "http://tester/x", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &nopWriter{h: http.Header{}}
				for pb.Next() {
					h.ServeHTTP(w, req)
				}
			})
		})
	}
}
