package meshgrpc

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/telemetry"
)

// The fault block, in the caller's mesh, over HTTP and gRPC: what it
// injects, counted at the backends and in inmesh.faults.injected.

// withSeededRand is the option that gives a mesh's fault block draws that
// are the same on every run.
func withSeededRand(seed uint64) mesh.Option {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, ^seed))
	return meshlink.WithRand(func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}).(mesh.Option)
}

// faultMetrics is a client option recording metrics, and a reader of the
// faults injected by kind.
func faultMetrics(t *testing.T) (mesh.Option, func() map[string]int64) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mesh.WithMeterProvider(mp), func() map[string]int64 {
		t.Helper()
		return meshtest.Int64Sums(t, reader, telemetry.MetricFaultsInjected, func(a attribute.Set) string {
			return meshtest.Attr(a, telemetry.AttrServerAddress) + " " + meshtest.Attr(a, telemetry.AttrFaultKind)
		})
	}
}

// faulted reports whether r is an abort of the fault block: layer fault,
// no attempt, route route, naming the injected status; for gRPC with
// status code code.
func (r result) faulted(route string, httpStatus string, code codes.Code, name string) bool {
	ce := r.callError()
	if ce == nil || ce.Layer != mesh.LayerFault || ce.Attempts != 0 || ce.Endpoint != "" || ce.Route != route || ce.Service != "billing" {
		return false
	}
	if r.md == modeGRPC {
		return grpcstatus.Code(r.err) == code && strings.HasSuffix(ce.Error(), ": fault injected: abort with gRPC "+name)
	}
	return strings.HasSuffix(ce.Error(), ": fault injected: abort with HTTP "+httpStatus)
}

// TestFaultAbortAll: abort at 100% fails every call at layer fault with
// the policy's status, and the backend sees no request and no connection.
func TestFaultAbortAll(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		for _, tc := range []struct {
			name, settings string
			httpStatus     string
			code           codes.Code
			codeName       string
		}{
			{"defaults", "    fault: {abort: {percent: 100}}\n", "503", codes.Unavailable, "unavailable"},
			{"the policy's status", "    fault: {abort: {percent: 100, http_status: 429, grpc_code: resource-exhausted}}\n",
				"429", codes.ResourceExhausted, "resource-exhausted"},
			{"a code that is no layer's", "    fault: {abort: {percent: 100, http_status: 500, grpc_code: data-loss}}\n",
				"500", codes.DataLoss, "data-loss"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				metrics, faults := faultMetrics(t)
				f := startFleetWith(t, md, fleetConfig{settings: tc.settings, clientOpts: []mesh.Option{metrics}}, alwaysAnswer(ok))
				const calls = 20
				for range calls {
					if r := f.call(context.Background()); !r.faulted("", tc.httpStatus, tc.code, tc.codeName) {
						t.Fatalf("%v, want the abort of the fault block", r)
					}
				}
				if md == modeGRPC {
					// A stream is aborted the same way, before it opens.
					_, err := f.grpc.Watch(context.Background(), &healthpb.HealthCheckRequest{})
					if ce := FromStatus(err); ce == nil || ce.Layer != mesh.LayerFault || grpcstatus.Code(err) != tc.code {
						t.Fatalf("stream: %v, want the abort", err)
					}
				}
				if hits, conns := f.Hits[0](), f.Conns[0](); hits != 0 || conns != 0 {
					t.Fatalf("backend saw %d requests on %d connections, want none", hits, conns)
				}
				want := int64(calls)
				if md == modeGRPC {
					want++
				}
				if got := faults(); got["billing abort"] != want || len(got) != 1 {
					t.Fatalf("faults counted %v, want %d aborts", got, want)
				}
			})
		}
	}, allModes...)
}

// TestFaultAbortPercent: abort at 50% over 2000 calls aborts within 3
// points of half of them, on seeded draws; the others reach the backend.
func TestFaultAbortPercent(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		metrics, faults := faultMetrics(t)
		f := startFleetWith(t, md, fleetConfig{
			settings:   "    fault: {abort: {percent: 50, http_status: 503, grpc_code: unavailable}}\n",
			clientOpts: []mesh.Option{metrics, withSeededRand(42)},
		}, alwaysAnswer(ok))
		const calls = 2000
		aborted := 0
		for range calls {
			switch r := f.call(context.Background()); {
			case r.faulted("", "503", codes.Unavailable, "unavailable"):
				aborted++
			case !r.ok():
				t.Fatalf("%v, want an answer or the abort", r)
			}
		}
		pct := 100 * float64(aborted) / calls
		t.Logf("%d of %d calls aborted (%.2f%%)", aborted, calls, pct)
		if pct < 47 || pct > 53 {
			t.Fatalf("%.2f%% aborted, want 50 ± 3", pct)
		}
		if hits := f.Hits[0](); hits != int64(calls-aborted) {
			t.Fatalf("backend saw %d calls, want the %d not aborted", hits, calls-aborted)
		}
		if got := faults(); got["billing abort"] != int64(aborted) || len(got) != 1 {
			t.Fatalf("faults counted %v, want %d aborts", got, aborted)
		}
	})
}

// TestFaultDelay: a delayed call waits the delay on the mesh's clock before
// its first attempt, then goes through; a delay that outlives the call's
// deadline ends it as a timeout, never sent.
func TestFaultDelay(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		t.Run("waits, then sends", func(t *testing.T) {
			fc := clocktest.NewFake(time.Now())
			metrics, faults := faultMetrics(t)
			f := startFleetWith(t, md, fleetConfig{
				settings:   "    fault: {delay: {percent: 100, duration: 5s}}\n",
				clientOpts: []mesh.Option{metrics, withClock(fc)},
			}, alwaysAnswer(ok))
			done := make(chan result, 1)
			go func() { done <- f.call(guarded(t)) }()
			waiting := make(chan struct{})
			go func() { fc.BlockUntilTimers(1); close(waiting) }()
			select {
			case <-waiting:
			case r := <-done:
				t.Fatalf("the call ended (%v) without waiting", r)
			}
			fc.Advance(5*time.Second - time.Nanosecond)
			if n, hits := fc.PendingTimers(), f.Hits[0](); n != 1 || hits != 0 {
				t.Fatalf("a nanosecond before the delay's end: %d timers pending, %d calls at the backend; want 1 and 0", n, hits)
			}
			fc.Advance(time.Nanosecond)
			if r := <-done; !r.ok() {
				t.Fatalf("after the delay: %v", r)
			}
			if hits := f.Hits[0](); hits != 1 {
				t.Fatalf("backend saw %d calls, want 1", hits)
			}
			if got := faults(); got["billing delay"] != 1 || len(got) != 1 {
				t.Fatalf("faults counted %v, want 1 delay", got)
			}
		})
		t.Run("the deadline passes during the delay", func(t *testing.T) {
			// The mesh's clock never moves: only the route's timeout, on
			// the real time, ends the delay.
			f := startFleetWith(t, md, fleetConfig{
				settings:   "    timeout: 20ms\n    fault: {delay: {percent: 100, duration: 10m}, abort: {percent: 100}}\n",
				clientOpts: []mesh.Option{withClock(clocktest.NewFake(time.Now()))},
			}, alwaysAnswer(ok))
			r := f.call(guarded(t))
			ce := r.callError()
			if ce == nil || ce.Layer != mesh.LayerTimeout || ce.Attempts != 0 || !strings.Contains(ce.Error(), "while the fault block delayed the call by 10m0s") {
				t.Fatalf("%v, want a timeout during the delay", r)
			}
			if md == modeGRPC && grpcstatus.Code(r.err) != codes.DeadlineExceeded {
				t.Fatalf("code %v", grpcstatus.Code(r.err))
			}
			if hits, conns := f.Hits[0](), f.Conns[0](); hits != 0 || conns != 0 {
				t.Fatalf("backend saw %d requests on %d connections, want none", hits, conns)
			}
		})
		t.Run("the caller cancels during the delay", func(t *testing.T) {
			fc := clocktest.NewFake(time.Now())
			f := startFleetWith(t, md, fleetConfig{
				settings:   "    fault: {delay: {percent: 100, duration: 10m}}\n",
				clientOpts: []mesh.Option{withClock(fc)},
			}, alwaysAnswer(ok))
			ctx, cancel := context.WithCancel(guarded(t))
			go func() { fc.BlockUntilTimers(1); cancel() }()
			if r := f.call(ctx); !r.canceled() {
				t.Fatalf("%v, want the caller's own cancellation", r)
			}
			if hits := f.Hits[0](); hits != 0 {
				t.Fatalf("backend saw %d calls", hits)
			}
		})
	})
}

// TestFaultOnlyWithHeader: with only_with_header, only the calls carrying
// the header (HTTP header, gRPC metadata; any value) are faulted.
func TestFaultOnlyWithHeader(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		metrics, faults := faultMetrics(t)
		f := startFleetWith(t, md, fleetConfig{
			settings:   "    fault: {abort: {percent: 100}, only_with_header: x-inmesh-fault}\n",
			clientOpts: []mesh.Option{metrics},
		}, alwaysAnswer(ok))
		for i := range 10 {
			if r := f.call(context.Background()); !r.ok() {
				t.Fatalf("call %d without the header: %v", i, r)
			}
			if r := f.call(context.Background(), "X-Inmesh-Fault", "on"); !r.faulted("", "503", codes.Unavailable, "unavailable") {
				t.Fatalf("call %d with the header: %v, want the abort", i, r)
			}
			if r := f.call(context.Background(), "X-Other", "on"); !r.ok() {
				t.Fatalf("call %d with another header: %v", i, r)
			}
		}
		if hits := f.Hits[0](); hits != 20 {
			t.Fatalf("backend saw %d calls, want the 20 without the header", hits)
		}
		if got := faults(); got["billing abort"] != 10 || len(got) != 1 {
			t.Fatalf("faults counted %v, want 10 aborts", got)
		}
	})
}

// TestFaultRouteOverride: a route's fault block replaces its service's
// whole; one at 0% turns faults off on the route.
func TestFaultRouteOverride(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleet(t, md, `    fault: {abort: {percent: 100}}
    routes:
      - {name: teapot, match: {headers: {x-route: teapot}}, fault: {abort: {percent: 100, http_status: 418, grpc_code: aborted}}}
      - {name: clean, match: {headers: {x-route: clean}}, fault: {abort: {percent: 0}}}
      - {name: rest}
`, nil, alwaysAnswer(ok))
		if r := f.call(context.Background(), "X-Route", "teapot"); !r.faulted("teapot", "418", codes.Aborted, "aborted") {
			t.Fatalf("teapot: %v, want the route's abort", r)
		}
		if r := f.call(context.Background(), "X-Route", "clean"); !r.ok() {
			t.Fatalf("clean: %v, want an answer", r)
		}
		if r := f.call(context.Background()); !r.faulted("rest", "503", codes.Unavailable, "unavailable") {
			t.Fatalf("rest: %v, want the service's abort", r)
		}
		if hits := f.Hits[0](); hits != 1 {
			t.Fatalf("backend saw %d calls, want the clean route's one", hits)
		}
	})
}

// TestNoFaultBlockInjectsNothing: without a fault block nothing is
// injected, and nothing is counted.
func TestNoFaultBlockInjectsNothing(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		metrics, faults := faultMetrics(t)
		f := startFleetWith(t, md, fleetConfig{clientOpts: []mesh.Option{metrics, withSeededRand(1)}}, alwaysAnswer(ok))
		for i := range 50 {
			if r := f.call(context.Background(), "X-Inmesh-Fault", "on"); !r.ok() {
				t.Fatalf("call %d: %v", i, r)
			}
		}
		if hits := f.Hits[0](); hits != 50 {
			t.Fatalf("backend saw %d calls, want 50", hits)
		}
		if got := faults(); len(got) != 0 {
			t.Fatalf("faults counted %v, want none", got)
		}
	})
}
