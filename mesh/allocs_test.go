package mesh

import (
	"context"
	"io"
	"net/http"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/inmesh/inmesh/internal/meshtest"
)

// TestNoIOAllocations pins the allocations of a call through the full
// chain (a header route that does not match, a split, round robin, a
// timeout, retry with a budget, a breaker, outlier detection), telemetry
// off, against a RoundTripper that answers at once (its own two: the
// response and its header). Allocation counts are deterministic: a change
// that adds one to the hot path fails here; one that saves one lowers the
// pin.
func TestNoIOAllocations(t *testing.T) {
	const (
		answer = 2 // instant's response and header
		want   = 3 // the call (httpCall, which holds the first attempt's request and the deadline), and the header copy's map (two)
	)
	for _, tt := range []struct{ name, timeout string }{
		{"timeout", "timeout: 2s"},
		{"no timeout", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMesh(t, meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", tt.timeout),
				WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
			rt := m.RoundTripper(instant{})
			call := chargeCall(t, rt)
			call() // the first call to a destination starts watching it
			wantHere := want
			if tt.timeout == "" {
				wantHere = 1 // no header to add: the call alone
			}
			if got := testing.AllocsPerRun(200, call) - answer; got != float64(wantHere) {
				t.Errorf("a call allocates %v times over its answer, want %d (lower the pin if fewer)", got, wantHere)
			}
		})
	}
}

// TestHandlerAllocations pins the allocations Handler adds to a request
// that carries a propagated deadline, telemetry off, the application
// answering at once without waiting on its context: one, the request's
// storage (its status writer, the lazy deadline, the request copy).
func TestHandlerAllocations(t *testing.T) {
	m := newTestMesh(t, "services: {tester: {}}\n",
		WithMeterProvider(metricnoop.NewMeterProvider()), WithTracerProvider(tracenoop.NewTracerProvider()))
	var sawDeadline bool
	h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, sawDeadline = r.Context().Deadline()
		w.WriteHeader(http.StatusNoContent)
	}))
	req, err := http.NewRequest(http.MethodGet, "http://tester/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(HeaderTimeout, "2000")
	w := &nopWriter{h: http.Header{}}
	const want = 1
	if got := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, req) }); got != want {
		t.Errorf("Handler allocates %v times per request, want %d (lower the pin if fewer)", got, want)
	}
	if !sawDeadline {
		t.Error("the application's context has no deadline")
	}
}

// nopWriter is a ResponseWriter that keeps nothing.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// TestTracedAllocations pins the allocations of the same call traced by
// the OTel SDK (every span sampled and recorded, metrics to a manual
// reader): the SDK's own eight (the span, its start and end attribute
// slices, its context, the attempt event's attributes and the events'
// queue, the start options' attribute copy), OTel's traceparent string,
// and the mesh's three (the call and the header copy's map). The W3C
// value lives in the call (telemetry.HeaderSlots), not in a slice of its
// own. The pin holds for the SDK version of go.mod; an upgrade that
// changes the SDK's own count moves it.
func TestTracedAllocations(t *testing.T) {
	const (
		answer = 2 // instant's response and header
		want   = 12
	)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()); _ = tp.Shutdown(context.Background()) })
	m := newTestMesh(t, meshtest.BenchPolicy("127.0.0.1:9", "127.0.0.1:10", "timeout: 2s"),
		WithMeterProvider(mp), WithTracerProvider(tp))
	var parents int
	rt := m.RoundTripper(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if v := r.Header["Traceparent"]; len(v) == 1 && len(v[0]) == 55 {
			parents++
		}
		return instant{}.RoundTrip(r)
	}))
	call := chargeCall(t, rt)
	call() // the first call to a destination starts watching it
	// Under the race detector the SDK's pools (and the span's end
	// attributes') drop items at random: the count is not exact.
	if got := testing.AllocsPerRun(200, call) - answer; got != float64(want) && !raceEnabled {
		t.Errorf("a traced call allocates %v times over its answer, want %d (lower the pin if fewer)", got, want)
	}
	if parents != 202 {
		t.Errorf("%d of 202 attempts carried one traceparent", parents)
	}
}

// roundTripFunc is a RoundTripper of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// chargeCall returns a function that sends GET http://billing/charge
// through rt and reads and closes the answer, failing t on an error: the
// call whose allocations the tests count.
func chargeCall(t *testing.T, rt http.RoundTripper) func() {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://billing/charge", nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}
