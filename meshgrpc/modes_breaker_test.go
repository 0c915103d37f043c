package meshgrpc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/mesh"
)

// The failure-rate breaker, over HTTP and gRPC. The client mesh runs on a
// fake clock, which the breaker's window and open_for follow: the window
// does not slide unless a test moves the clock, so every count is exact.

// rateBreaker is billing's rate breaker: open at half the calls of 10s
// failed, 20 calls at least.
const rateBreaker = "    circuit_breaker: {failure_rate: 0.5, window: 10s, min_calls: 20, open_for: 5s, half_open_requests: 3}\n"

// failingShare fails the calls whose number, from 1, falls in the first
// fails of each period of 20: 12 is 60%, 6 is 30% (in runs of 6, which a
// consecutive breaker of the default 5 failures would open on).
func failingShare(fails int64) behaviour {
	return func(n int64) answer {
		if (n-1)%20 < fails {
			return fail
		}
		return ok
	}
}

// rateFleet is a fleet of one backend behind a rate breaker, its client on
// a fake clock.
func rateFleet(t *testing.T, md mode, b behaviour) (*fleet, *clocktest.Fake) {
	t.Helper()
	fc := clocktest.NewFake(time.Now())
	f := startFleetWith(t, md, fleetConfig{settings: rateBreaker, hint: time.Second,
		clientOpts: []mesh.Option{withClock(fc)}}, b)
	return f, fc
}

// broken reports whether r failed fast at layer breaker.
func (r result) broken() bool {
	ce := r.callError()
	return ce != nil && ce.Layer == mesh.LayerBreaker
}

func TestRateBreakerOpensOnAFailingBackend(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// Calls 1-12 of each 20 fail: after 20 calls, 12 failed, but the
		// 20th succeeded; the 21st fails and trips it (13 of 21).
		f, _ := rateFleet(t, md, failingShare(12))
		for i := 1; i <= 21; i++ {
			r := f.call(context.Background())
			if want := (i-1)%20 < 12; r.failed() != want || !want && !r.ok() {
				t.Fatalf("call %d: %v, want failed %v", i, r, want)
			}
		}
		if got := breakerState(t, f.client); got != "open" {
			t.Fatalf("breaker after 13 failures of 21 calls: %s, want open", got)
		}
		for i := range 10 {
			if r := f.call(context.Background()); !r.broken() {
				t.Fatalf("call %d after tripping: %v, want layer breaker", i+1, r)
			}
		}
		if got := f.Hits[0](); got != 21 {
			t.Fatalf("the backend saw %d calls, want 21: the open breaker let calls through", got)
		}
	})
}

func TestRateBreakerStaysClosedBelowTheRate(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f, _ := rateFleet(t, md, failingShare(6)) // 30%, below 0.5
		const calls = 200
		failed := 0
		for i := range calls {
			r := f.call(context.Background())
			switch {
			case r.failed():
				failed++
			case !r.ok():
				t.Fatalf("call %d: %v, want the backend's answer", i+1, r)
			}
		}
		if failed != 60 || f.Hits[0]() != calls {
			t.Fatalf("%d failed, the backend saw %d; want 60 and %d", failed, f.Hits[0](), calls)
		}
		if got := breakerState(t, f.client); got != "closed" {
			t.Fatalf("breaker after 30%% failures: %s, want closed", got)
		}
	})
}

// TestRateBreakerIgnoresASaturatedBackend: a destination that answers
// every call 503 with Retry-After (gRPC Unavailable with a pushback) is up
// and shedding load: the breaker stays closed. The same answer without
// the hint is a failure, and opens it.
func TestRateBreakerIgnoresASaturatedBackend(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		f, _ := rateFleet(t, md, alwaysAnswer(busy))
		const calls = 100
		for i := range calls {
			if r := f.call(context.Background()); !r.busy() {
				t.Fatalf("call %d: %v, want the backend's own busy answer", i+1, r)
			}
		}
		if got, hits := breakerState(t, f.client), f.Hits[0](); got != "closed" || hits != calls {
			t.Fatalf("after %d busy answers: breaker %s, backend saw %d; want closed, %d", calls, got, hits, calls)
		}

		f, _ = rateFleet(t, md, alwaysAnswer(fail))
		for range 20 {
			if r := f.call(context.Background()); !r.failed() {
				t.Fatalf("%v, want the backend's failure", r)
			}
		}
		if r := f.call(context.Background()); !r.broken() {
			t.Fatalf("after 20 plain failures: %v, want layer breaker", r)
		}
	})
}

// TestRateBreakerRecovers: once open, the breaker turns half-open after
// open_for on the mesh's clock; a failed probe opens it again; once the
// backend has healed, three successful probes close it, and calls reach
// the backend again.
func TestRateBreakerRecovers(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		var healed atomic.Bool
		f, fc := rateFleet(t, md, func(int64) answer {
			if healed.Load() {
				return ok
			}
			return fail
		})
		for range 20 {
			f.call(context.Background())
		}
		if r := f.call(context.Background()); !r.broken() {
			t.Fatalf("after 20 failures: %v, want layer breaker", r)
		}
		fc.Advance(5 * time.Second)
		if r := f.call(context.Background()); !r.broken() || breakerState(t, f.client) != "open" {
			t.Fatalf("at open_for: %v, breaker %s; want layer breaker, open", r, breakerState(t, f.client))
		}
		fc.Advance(time.Millisecond)
		if r := f.call(context.Background()); !r.failed() || breakerState(t, f.client) != "open" {
			t.Fatalf("a probe to the failing backend: %v, breaker %s; want the failure, open", r, breakerState(t, f.client))
		}
		if got := f.Hits[0](); got != 21 {
			t.Fatalf("the backend saw %d calls, want 21 (20, then one probe)", got)
		}

		healed.Store(true)
		if r := f.call(context.Background()); !r.broken() {
			t.Fatalf("reopened: %v, want layer breaker", r)
		}
		fc.Advance(5*time.Second + time.Millisecond)
		for i := range 3 {
			if got := breakerState(t, f.client); got != "half-open" {
				t.Fatalf("before probe %d: breaker %s, want half-open", i+1, got)
			}
			if r := f.call(context.Background()); !r.ok() {
				t.Fatalf("probe %d: %v", i+1, r)
			}
		}
		if got := breakerState(t, f.client); got != "closed" {
			t.Fatalf("after 3 successful probes: %s, want closed", got)
		}
		for range 10 {
			if r := f.call(context.Background()); !r.ok() {
				t.Fatalf("after closing: %v", r)
			}
		}
		if got := f.Hits[0](); got != 21+3+10 {
			t.Fatalf("the backend saw %d calls, want %d", got, 21+3+10)
		}
	})
}
