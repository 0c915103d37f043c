package meshgrpc

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/mesh"
)

// Retries, deadlines and the hints of a server, in every protocol.

func TestRetryRecoversFlakyBackend(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// HTTP retries 502 under the default retry_on, gRPC Unavailable under
		// retry_on: [unavailable].
		settings := byMode(md, map[mode]string{
			modeHTTP1: "    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}}\n",
			modeGRPC:  "    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}, retry_on: [unavailable]}\n",
		})
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		var down atomic.Bool
		f := startFleetWith(t, md, fleetConfig{settings: settings, clientOpts: []mesh.Option{mesh.WithMeterProvider(mp), mesh.WithTracerProvider(tp)}},
			func(n int64) answer {
				switch {
				case down.Load():
					return fail
				case n%3 != 0: // twice flaky, then ok
					return flaky
				}
				return ok
			})

		const calls = 20
		for i := range calls {
			before := f.Hits[0]()
			if r := f.call(context.Background()); !r.ok() || r.from != "b0" {
				t.Fatalf("call %d: %v", i, r)
			}
			if got := f.Hits[0]() - before; got != 3 {
				t.Fatalf("call %d: the backend was called %d times, want 3", i, got)
			}
		}
		if got := f.Hits[0](); got != 3*calls {
			t.Fatalf("backend hits %d, want %d (3 per call)", got, 3*calls)
		}
		if n := attemptsCounted(t, reader); n != 3*calls {
			t.Fatalf("inmesh.client.attempts = %d, want %d", n, 3*calls)
		}
		ended := spans.Ended()
		if len(ended) != calls {
			t.Fatalf("%d client spans for %d calls", len(ended), calls)
		}
		if ev := ended[0].Events(); len(ev) != 3 {
			t.Fatalf("span %q with %d attempt events, want 3", ended[0].Name(), len(ev))
		}
		if md == modeGRPC && ended[0].Name() != "grpc.health.v1.Health/Check" {
			t.Fatalf("span %q", ended[0].Name())
		}

		// A backend that stays down: three attempts, then its own failure.
		down.Store(true)
		before := f.Hits[0]()
		if r := f.call(context.Background()); !r.failed() || f.Hits[0]()-before != 3 {
			t.Fatalf("%v after %d calls; want the backend's failure after 3", r, f.Hits[0]()-before)
		}
	})
}

// TestTimeoutAndDeadlinePropagation: a call past the route's timeout fails
// at layer timeout; the time left to the deadline reaches the server, the
// route's or the caller's, whichever is shorter.
func TestTimeoutAndDeadlinePropagation(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleet(t, md, "", versioned("t-1", policyFor(md, "    timeout: 200ms\n")), func(n int64) answer {
			if n == 1 {
				return hang
			}
			return ok
		})
		// The caller's own, longer deadline: the policy's shorter one wins.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		r := f.call(ctx)
		elapsed := time.Since(start)
		t.Logf("200ms timeout failed after %v: %v", elapsed, r)
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerTimeout || ce.Service != "billing" || ce.PolicyVersion != "t-1" || ce.Endpoint != f.addrs[0] || ce.Attempts != 1 {
			t.Fatalf("CallError %+v (%v)", ce, r)
		}
		if !strings.HasPrefix(ce.Error(), "mesh: timeout: service=billing") {
			t.Fatalf("%q does not name the layer", ce.Error())
		}
		if elapsed < 150*time.Millisecond || elapsed > 2*time.Second {
			t.Fatalf("the call took %v, want about 200ms", elapsed)
		}
		if left := time.Duration(f.seen[0].deadline.Load()); left <= 0 || left > 200*time.Millisecond {
			t.Fatalf("the server saw %v left to its deadline, want (0, 200ms]", left)
		}
		switch md {
		case modeGRPC:
			if grpcstatus.Code(r.err) != codes.DeadlineExceeded {
				t.Fatalf("code %v (%v), want DeadlineExceeded", grpcstatus.Code(r.err), r.err)
			}
			if !strings.HasPrefix(grpcstatus.Convert(r.err).Message(), "mesh: timeout: service=billing") {
				t.Fatalf("status message %q does not name the layer", grpcstatus.Convert(r.err).Message())
			}
		default:
			var ne net.Error
			if !errorsAs(r.err, &ne) || !ne.Timeout() {
				t.Fatalf("the error should report Timeout(): %v", r.err)
			}
		}

		// A caller's deadline shorter than the policy's reaches the server too.
		ctx2, cancel2 := context.WithTimeout(context.Background(), 80*time.Millisecond)
		defer cancel2()
		if r := f.call(ctx2); !r.ok() {
			t.Fatal(r)
		}
		if left := time.Duration(f.seen[0].deadline.Load()); left <= 0 || left > 80*time.Millisecond {
			t.Fatalf("the server saw %v left, want at most the caller's 80ms", left)
		}
	})
}

func TestCallerCancellationIsNotAMeshError(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f := startFleet(t, md, "", nil, alwaysAnswer(hang))
		if r := f.canceledCall(t); r.err == nil || !r.canceled() {
			t.Fatalf("caller cancellation: %v, want the caller's own cancellation, no CallError", r)
		}
	})
}

// A server's hint (Retry-After, grpc-retry-pushback-ms) longer than the
// route's backoff max is not waited, even without a deadline: the answer
// is returned at once. The caller's mesh runs on a fake clock that never
// moves and the call has no deadline: a retry that waited anything would
// stay parked (until guarded's bound fails the test), so each case also
// proves that nothing was waited.
func TestRetryHintLongerThanBackoffMaxIsNotWaited(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		for _, tc := range []struct {
			name    string
			backoff string // the retry block's backoff, "" for the defaults (max 250ms)
		}{
			{"default backoff", ""},
			{"backoff max 2ms", "backoff: {initial: 1ms, max: 2ms}, "},
			{"backoff max 1m", "backoff: {initial: 10ms, max: 1m}, "},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := startFleetWith(t, md, fleetConfig{
					settings:   "    retry: {" + tc.backoff + "attempts: 3, retry_on: [503, unavailable]}\n",
					hint:       time.Hour,
					clientOpts: []mesh.Option{withClock(clocktest.NewFake(time.Now()))},
				}, alwaysAnswer(busy))
				r := f.call(guarded(t))
				if !r.busy() {
					t.Fatalf("%v, want the backend's own busy answer back", r)
				}
				if got := f.Hits[0](); got != 1 {
					t.Fatalf("backend saw %d attempts, want 1", got)
				}
				f.checkProto(t, 0)
			})
		}
	}, allModes...)
}

// TestRetryHintWithinBackoffMaxIsWaitedExactly: a server's hint within the
// backoff max is the wait, not the backoff's: the retry starts when the
// mesh's fake clock reaches it, not a nanosecond before.
func TestRetryHintWithinBackoffMaxIsWaitedExactly(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		fc := clocktest.NewFake(time.Now())
		f := startFleetWith(t, md, fleetConfig{
			settings:   "    retry: {attempts: 3, backoff: {initial: 1ms, max: 1m}, retry_on: [503, unavailable]}\n",
			hint:       5 * time.Second,
			clientOpts: []mesh.Option{withClock(fc)},
		}, func(n int64) answer {
			if n == 1 {
				return busy
			}
			return ok
		})
		done := make(chan result, 1)
		go func() { done <- f.call(guarded(t)) }()
		waiting := make(chan struct{})
		go func() { fc.BlockUntilTimers(1); close(waiting) }()
		select {
		case <-waiting:
		case r := <-done:
			t.Fatalf("the call ended (%v) after %d attempts without waiting", r, f.Hits[0]())
		}
		fc.Advance(5*time.Second - time.Nanosecond)
		if n, hits := fc.PendingTimers(), f.Hits[0](); n != 1 || hits != 1 {
			t.Fatalf("a nanosecond before the hint: %d timers pending, %d attempts; want 1 and 1", n, hits)
		}
		fc.Advance(time.Nanosecond)
		if r := <-done; !r.ok() || r.from != "b0" {
			t.Fatalf("after the hint: %v", r)
		}
		if hits := f.Hits[0](); hits != 2 {
			t.Fatalf("%d attempts, want 2", hits)
		}
		f.checkProto(t, 0)
	}, allModes...)
}
