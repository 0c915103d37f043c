package meshgrpc

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/telemetry"
)

// Hedging, in every protocol: backends that hang when the test arms them,
// a client mesh on a fake clock, so the hedge delay passes when the test
// says.

// hangs is a behaviour shared by a fleet's backends: the next n calls,
// across backends, hang (until canceled); the others answer ok.
type hangs struct{ left atomic.Int64 }

func (h *hangs) behaviour(int64) answer {
	if h.left.Add(-1) >= 0 {
		return hang
	}
	return ok
}

// hedgeFleet is a fleet of n backends sharing h, whose client mesh runs
// on fc with metrics read by reader.
type hedgeFleet struct {
	*fleet
	fc     *clocktest.Fake
	reader *sdkmetric.ManualReader
	h      *hangs
}

func startHedgeFleet(t *testing.T, md mode, settings string, n int) *hedgeFleet {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	hf := &hedgeFleet{fc: clocktest.NewFake(time.Now()), reader: reader, h: &hangs{}}
	bs := make([]behaviour, n)
	for i := range bs {
		bs[i] = hf.h.behaviour
	}
	hf.fleet = startFleetWith(t, md, fleetConfig{settings: settings,
		clientOpts: []mesh.Option{withClock(hf.fc), mesh.WithMeterProvider(mp)}}, bs...)
	// Until every backend has answered once, gRPC's connections may not
	// all be ready, and a pick of one that is not goes elsewhere.
	deadline := time.Now().Add(10 * time.Second)
	for !hf.allHit() {
		if time.Now().After(deadline) {
			t.Fatal("not every backend answered within 10s")
		}
		if r := hf.call(guarded(t)); !r.ok() {
			t.Fatalf("warming up: %v", r)
		}
	}
	return hf
}

func (hf *hedgeFleet) allHit() bool {
	for _, hits := range hf.Hits {
		if hits() == 0 {
			return false
		}
	}
	return true
}

func (hf *hedgeFleet) hits() (n int64) {
	for _, hits := range hf.Hits {
		n += hits()
	}
	return n
}

// counts reads inmesh.hedges by result and the sum of inmesh.client.attempts.
func (hf *hedgeFleet) counts(t *testing.T) (map[string]int64, int64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := hf.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	hedges := map[string]int64{}
	var attempts int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case telemetry.MetricHedges:
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					r, _ := dp.Attributes.Value(telemetry.AttrHedgeResult)
					hedges[r.AsString()] += dp.Value
				}
			case telemetry.MetricClientAttempts:
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					attempts += dp.Value
				}
			}
		}
	}
	return hedges, attempts
}

// hungCall starts call, armed so that its first hangs attempts hang, and
// waits until one hangs and the hedge timer is set.
func (hf *hedgeFleet) hungCall(t *testing.T, hangs int64, call func() result) <-chan result {
	t.Helper()
	hf.h.left.Store(hangs)
	done := make(chan result, 1)
	go func() { done <- call() }()
	select {
	case <-hf.started:
	case r := <-done:
		t.Fatalf("the call ended (%v) without hanging", r)
	}
	hf.fc.BlockUntilTimers(1)
	return done
}

// hungBackend returns the index of the backend that saw a hanging call
// canceled, once one did, or -1 after 10s.
func (hf *hedgeFleet) canceledAt() int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, s := range hf.seen {
			if s.canceled.Load() > 0 {
				return i
			}
		}
		time.Sleep(time.Millisecond)
	}
	return -1
}

const hedgeSettings = "    hedge: {delay: 20ms}\n"

func TestHedgeAnswersAroundASlowEndpoint(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		hf := startHedgeFleet(t, md, hedgeSettings+
			"    circuit_breaker: {consecutive_failures: 1, open_for: 1h}\n"+
			"    outlier_detection: {consecutive_failures: 1, base_ejection: 1h, max_ejection_percent: 100}\n", 2)
		hedgesBefore, attemptsBefore := hf.counts(t)
		hitsBefore := hf.hits()
		done := hf.hungCall(t, 1, func() result { return hf.call(guarded(t)) })
		hf.fc.Advance(20*time.Millisecond - time.Nanosecond)
		if n := hf.hits() - hitsBefore; n != 1 {
			t.Fatalf("%d calls reached the backends before the delay, want 1", n)
		}
		hf.fc.Advance(time.Nanosecond)
		r := <-done
		if !r.ok() {
			t.Fatalf("hedged call: %v", r)
		}
		slow := hf.canceledAt()
		if slow < 0 {
			t.Fatal("no backend saw the slow call canceled")
		}
		if fast := hf.names[1-slow]; r.from != fast {
			t.Fatalf("answered by %q, want the fast backend %q (the slow one is %q)", r.from, fast, hf.names[slow])
		}
		if n := hf.hits() - hitsBefore; n != 2 {
			t.Fatalf("%d calls reached the backends, want 2", n)
		}
		hedges, attempts := hf.counts(t)
		if attempts-attemptsBefore != 2 {
			t.Fatalf("inmesh.client.attempts grew by %d, want 2", attempts-attemptsBefore)
		}
		if hedges[telemetry.HedgeSent]-hedgesBefore[telemetry.HedgeSent] != 1 || hedges[telemetry.HedgeWon]-hedgesBefore[telemetry.HedgeWon] != 1 {
			t.Fatalf("inmesh.hedges %v (before %v), want one more sent and won", hedges, hedgesBefore)
		}
		// The loser was canceled: neither the breaker nor outlier detection,
		// at one failure each, heard of it.
		if st := breakerState(t, hf.client); st != "closed" {
			t.Fatalf("breaker %s after a hedge's loser", st)
		}
		for _, addr := range hf.addrs {
			if ejected(t, hf.client, addr) {
				t.Fatalf("%s ejected after a hedge's loser", addr)
			}
		}
		f := hf.fleet
		f.checkProto(t, 0)
		f.checkProto(t, 1)
	}, allModes...)
}

func TestHedgeMaxIsRespected(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		hf := startHedgeFleet(t, md, hedgeSettings, 3)
		hitsBefore := hf.hits()
		ctx, cancel := context.WithCancel(guarded(t))
		defer cancel()
		// Both the first attempt and the hedge hang: max 1 sends no third.
		done := hf.hungCall(t, 2, func() result { return hf.call(ctx) })
		hf.fc.Advance(20 * time.Millisecond)
		select {
		case <-hf.started:
		case r := <-done:
			t.Fatalf("the call ended (%v) before its hedge hung", r)
		}
		if n := hf.fc.PendingTimers(); n != 0 {
			t.Fatalf("%d timers pending after the one hedge max allows", n)
		}
		hf.fc.Advance(time.Hour)
		if n := hf.hits() - hitsBefore; n != 2 {
			t.Fatalf("%d calls reached the backends, want 2", n)
		}
		cancel()
		if r := <-done; !r.canceled() {
			t.Fatalf("%v, want the caller's cancellation", r)
		}
		hedges, _ := hf.counts(t)
		if hedges[telemetry.HedgeSent] != 1 || hedges[telemetry.HedgeWon] != 0 {
			t.Fatalf("inmesh.hedges %v, want one sent, none won", hedges)
		}
	})
}

func TestHedgeRefusedByTheBudget(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		hf := startHedgeFleet(t, md, hedgeSettings+"    retry: {budget: {ratio: 0, min_per_second: 0}}\n", 2)
		hitsBefore := hf.hits()
		ctx, cancel := context.WithCancel(guarded(t))
		defer cancel()
		done := hf.hungCall(t, 1, func() result { return hf.call(ctx) })
		hf.fc.Advance(20 * time.Millisecond)
		meshtest.Eventually(t, 10*time.Second, "a hedge refused", func() bool {
			hedges, _ := hf.counts(t)
			return hedges[telemetry.HedgeRefused] == 1
		})
		// The call goes on waiting for its first attempt.
		select {
		case r := <-done:
			t.Fatalf("the call ended (%v) when its hedge was refused", r)
		default:
		}
		if n := hf.hits() - hitsBefore; n != 1 {
			t.Fatalf("%d calls reached the backends, want 1", n)
		}
		cancel()
		if r := <-done; !r.canceled() {
			t.Fatalf("%v, want the caller's cancellation", r)
		}
		if hedges, _ := hf.counts(t); hedges[telemetry.HedgeSent] != 0 {
			t.Fatalf("inmesh.hedges %v, want none sent", hedges)
		}
	})
}

func TestHedgeOnlyIdempotentRequests(t *testing.T) {
	for _, tc := range []struct {
		name, settings string
		want           int64 // calls that reach the backends
	}{
		{"POST", hedgeSettings, 1},
		{"POST, non_idempotent", "    hedge: {delay: 20ms, non_idempotent: true}\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, func(t *testing.T, md mode) {
				hf := startHedgeFleet(t, md, tc.settings, 2)
				hitsBefore := hf.hits()
				ctx, cancel := context.WithCancel(guarded(t))
				defer cancel()
				hf.h.left.Store(1)
				done := make(chan result, 1)
				go func() { done <- hf.request(ctx, http.MethodPost, "http://billing/x", "a body sent twice") }()
				select {
				case <-hf.started:
				case r := <-done:
					t.Fatalf("the call ended (%v) without hanging", r)
				}
				if tc.want == 1 {
					// Not hedged: no timer is ever set.
					if n := hf.fc.PendingTimers(); n != 0 {
						t.Fatalf("%d timers pending: a POST is to be hedged", n)
					}
					cancel()
					if r := <-done; !r.canceled() {
						t.Fatalf("%v, want the caller's cancellation", r)
					}
				} else {
					hf.fc.BlockUntilTimers(1)
					hf.fc.Advance(20 * time.Millisecond)
					if r := <-done; !r.ok() {
						t.Fatalf("hedged POST: %v", r)
					}
				}
				if n := hf.hits() - hitsBefore; n != tc.want {
					t.Fatalf("%d calls reached the backends, want %d", n, tc.want)
				}
			}, modeHTTP1, modeHTTP2)
		})
	}
}
