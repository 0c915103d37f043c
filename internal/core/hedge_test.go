package core

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Hedging, with the fake sender: an attempt the script holds blocks until
// its context ends or the test releases it; the hedge delay runs on the
// fixture's fake clock.

// hedged is a fixture of hosts whose route hedges as h says, with hedges
// counted through an SDK reader.
func hedged(t *testing.T, s settings, h Hedge) (*fixture, *sdkmetric.ManualReader) {
	t.Helper()
	if s.hosts == 0 {
		s.hosts = 2
	}
	f := newFixture(t, s)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	in, err := telemetry.New(mp)
	if err != nil {
		t.Fatal(err)
	}
	f.env.Instr = in
	f.route.Hedge = &h
	if f.route.Budget == nil {
		f.route.Budget = resilience.NewBudget(resilience.BudgetConfig{Ratio: 1, MinPerSecond: 1000}, f.env.Clock)
	}
	return f, reader
}

// hedgeCounts reads inmesh.hedges by result.
func hedgeCounts(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != telemetry.MetricHedges {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				r, _ := dp.Attributes.Value(telemetry.AttrHedgeResult)
				got[r.AsString()] += dp.Value
			}
		}
	}
	return got
}

// holder scripts a call whose attempts are held: hold(n) makes attempt n
// block until its context ends (then it returns what ended reports, by
// default the end of its context as the adapters classify it) or until
// release(n), then answer with what answers gives for n.
type holder struct {
	mu       sync.Mutex
	held     map[int]chan struct{}
	answers  func(n int) Outcome
	ended    func(a *Attempt) Outcome
	canceled map[int]bool // attempts whose context ended while held
	started  chan int     // the number of each attempt, as it starts
	hedges   map[int]bool // attempts sent as hedges
}

func newHolder(answers func(n int) Outcome, held ...int) *holder {
	h := &holder{held: map[int]chan struct{}{}, answers: answers, canceled: map[int]bool{},
		started: make(chan int, 16), hedges: map[int]bool{}}
	for _, n := range held {
		h.held[n] = make(chan struct{})
	}
	return h
}

func (h *holder) script(a *Attempt) Outcome {
	h.mu.Lock()
	wait := h.held[a.N]
	h.hedges[a.N] = a.Hedge
	h.mu.Unlock()
	h.started <- a.N
	if wait != nil {
		select {
		case <-wait:
		case <-a.Ctx.Done():
			h.mu.Lock()
			h.canceled[a.N] = true
			h.mu.Unlock()
			if h.ended != nil {
				return h.ended(a)
			}
			kind, layer, _ := a.Ended()
			return Outcome{Result: resilience.Outcome{Err: kind}, Layer: layer, Err: a.Ctx.Err(), Final: layer == ""}
		}
	}
	return h.answers(a.N)
}

func (h *holder) release(n int) { close(h.held[n]) }

func (h *holder) wasCanceled(n int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.canceled[n]
}

// waitStarted waits for the start of attempt n (in any order with others).
func (h *holder) waitStarted(t *testing.T, n int, seen map[int]bool) {
	t.Helper()
	for !seen[n] {
		select {
		case m := <-h.started:
			seen[m] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d never started", n)
		}
	}
}

type callResult struct {
	c   *Call
	o   Outcome
	err error
}

// start runs a call of req on its own goroutine.
func (f *fixture) start(ctx context.Context, req Request, s *fakeSender) <-chan callResult {
	done := make(chan callResult, 1)
	go func() {
		c, o, err := f.call(ctx, req, s)
		done <- callResult{c, o, err}
	}()
	return done
}

func TestHedgeWinsOverASlowAttempt(t *testing.T) {
	for _, balancer := range []bool{false, true} {
		name := map[bool]string{false: "core picks", true: "balancer picks"}[balancer]
		t.Run(name, func(t *testing.T) {
			f, reader := hedged(t, settings{
				outlier: &resilience.OutlierConfig{ConsecutiveFailures: 1, BaseEjection: time.Hour, MaxEjectionPercent: 100},
				breaker: &resilience.BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Hour},
			}, Hedge{Delay: 20 * time.Millisecond, Max: 1})
			f.balancer = balancer
			h := newHolder(func(int) Outcome { return status(200) }, 1)
			// The slow attempt's answer comes as it is canceled, a 503: a
			// loser's, which the breaker and outlier detection must not hear.
			h.ended = func(*Attempt) Outcome { return status(503) }
			s := &fakeSender{script: h.script}
			if balancer {
				s.script = func(a *Attempt) Outcome {
					o := h.script(a)
					o.Host = f.hosts[a.N-1] // the balancer's picks: one host each
					return o
				}
			}
			done := f.start(context.Background(), get, s)
			seen := map[int]bool{}
			h.waitStarted(t, 1, seen)
			f.clk.BlockUntilTimers(1)
			f.clk.Advance(20*time.Millisecond - time.Nanosecond)
			if n := s.attempts(); n != 1 {
				t.Fatalf("%d attempts before the delay, want 1", n)
			}
			f.clk.Advance(time.Nanosecond)
			r := <-done
			if r.err != nil || r.o.Answer != 200 {
				t.Fatalf("answer %v, err %v; want the hedge's 200", r.o.Answer, r.err)
			}
			if r.c.Attempts != 2 || s.attempts() != 2 {
				t.Fatalf("%d attempts counted, %d sent; want 2", r.c.Attempts, s.attempts())
			}
			if !h.wasCanceled(1) {
				t.Fatal("the slow attempt's context was not canceled")
			}
			if !h.hedges[2] || h.hedges[1] {
				t.Fatalf("attempts marked as hedges: %v, want the second only", h.hedges)
			}
			if !balancer && s.sent[0].host == s.sent[1].host {
				t.Fatalf("the hedge went to the slow attempt's endpoint %s", s.sent[0].host.Address)
			}
			if len(s.discarded) != 1 || s.discarded[0] != 503 {
				t.Fatalf("discarded %v, want the loser's answer", s.discarded)
			}
			for _, hh := range f.hosts {
				if !Health(hh).Available(f.clk.Now()) {
					t.Fatalf("%s ejected: the loser's 503 reached outlier detection", hh.Address)
				}
			}
			if st := f.route.Breaker.State(); st != "closed" {
				t.Fatalf("breaker %s: the loser's 503 reached it", st)
			}
			if got := hedgeCounts(t, reader); got[telemetry.HedgeSent] != 1 || got[telemetry.HedgeWon] != 1 || got[telemetry.HedgeRefused] != 0 {
				t.Fatalf("hedges %v, want 1 sent, 1 won", got)
			}
			if n := f.clk.PendingTimers(); n != 0 {
				t.Fatalf("%d timers left", n)
			}
		})
	}
}

func TestHedgeNotNeeded(t *testing.T) {
	f, reader := hedged(t, settings{}, Hedge{Delay: 20 * time.Millisecond, Max: 1})
	s := &fakeSender{script: always(status(200))}
	_, o, err := f.call(context.Background(), get, s)
	if err != nil || o.Answer != 200 || s.attempts() != 1 {
		t.Fatalf("%v %v after %d attempts", o.Answer, err, s.attempts())
	}
	if n := f.clk.PendingTimers(); n != 0 {
		t.Fatalf("%d timers left: the hedge timer was not stopped", n)
	}
	if got := hedgeCounts(t, reader); len(got) != 0 {
		t.Fatalf("hedges %v, want none", got)
	}
}

func TestHedgeMax(t *testing.T) {
	for _, max := range []int{1, 2} {
		t.Run("max "+string(rune('0'+max)), func(t *testing.T) {
			f, reader := hedged(t, settings{hosts: 4}, Hedge{Delay: 20 * time.Millisecond, Max: max})
			// Every attempt is held; the last hedge allowed answers once released.
			h := newHolder(func(int) Outcome { return status(200) }, 1, 2, 3, 4)
			s := &fakeSender{script: h.script}
			done := f.start(context.Background(), get, s)
			seen := map[int]bool{}
			h.waitStarted(t, 1, seen)
			for n := 2; n <= max+1; n++ {
				f.clk.BlockUntilTimers(1)
				f.clk.Advance(20 * time.Millisecond)
				h.waitStarted(t, n, seen)
			}
			// No timer is left for another hedge: a long wait sends nothing.
			if n := f.clk.PendingTimers(); n != 0 {
				t.Fatalf("%d timers pending after %d hedges", n, max)
			}
			f.clk.Advance(time.Hour)
			h.release(max + 1)
			r := <-done
			if r.err != nil || r.o.Answer != 200 || r.c.Attempts != max+1 || s.attempts() != max+1 {
				t.Fatalf("%v %v after %d attempts (%d sent), want 200 after %d", r.o.Answer, r.err, r.c.Attempts, s.attempts(), max+1)
			}
			for n := 1; n <= max; n++ {
				if !h.wasCanceled(n) {
					t.Fatalf("attempt %d not canceled", n)
				}
			}
			hosts := map[string]bool{}
			for _, sn := range s.sent {
				hosts[sn.host.Address] = true
			}
			if len(hosts) != max+1 {
				t.Fatalf("attempts went to %v, want %d endpoints", hosts, max+1)
			}
			if got := hedgeCounts(t, reader); got[telemetry.HedgeSent] != int64(max) || got[telemetry.HedgeWon] != 1 {
				t.Fatalf("hedges %v", got)
			}
		})
	}
}

func TestHedgeOnlyWhatMayBeSentTwice(t *testing.T) {
	post := Request{Path: "/charge", Method: "POST", Replayable: true}
	for _, tc := range []struct {
		name          string
		req           Request
		nonIdempotent bool
		hosts         int
		want          bool
	}{
		{"GET", get, false, 2, true},
		{"POST", post, false, 2, false},
		{"POST, non_idempotent", post, true, 2, true},
		{"a body that cannot be replayed", Request{Path: "/charge", Method: "PUT", Idempotent: true}, true, 2, false},
		{"an adapter that cannot send two at once", Request{Path: "/charge", Method: "GET", Replayable: true, Idempotent: true, Single: true}, true, 2, false},
		{"one endpoint", get, false, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := hedged(t, settings{hosts: tc.hosts}, Hedge{Delay: 20 * time.Millisecond, Max: 1, NonIdempotent: tc.nonIdempotent})
			h := newHolder(func(int) Outcome { return status(200) }, 1)
			s := &fakeSender{script: h.script}
			done := f.start(context.Background(), tc.req, s)
			h.waitStarted(t, 1, map[int]bool{})
			if tc.want {
				f.clk.BlockUntilTimers(1)
				f.clk.Advance(20 * time.Millisecond)
			} else if n := f.clk.PendingTimers(); n != 0 {
				t.Fatalf("%d timers: a hedge is planned", n)
			}
			if !tc.want {
				h.release(1)
			}
			r := <-done
			want := 1
			if tc.want {
				want = 2
			}
			if r.err != nil || r.c.Attempts != want {
				t.Fatalf("%v after %d attempts, want %d", r.err, r.c.Attempts, want)
			}
		})
	}
}

func TestHedgeBudgetRefusal(t *testing.T) {
	f, reader := hedged(t, settings{}, Hedge{Delay: 20 * time.Millisecond, Max: 1})
	f.route.Budget = resilience.NewBudget(resilience.BudgetConfig{}, f.clk) // no token ever
	h := newHolder(func(int) Outcome { return status(200) }, 1)
	s := &fakeSender{script: h.script}
	done := f.start(context.Background(), get, s)
	h.waitStarted(t, 1, map[int]bool{})
	f.clk.BlockUntilTimers(1)
	f.clk.Advance(20 * time.Millisecond)
	// The refusal is counted, and the call goes on waiting for its attempt.
	deadline := time.Now().Add(10 * time.Second)
	for hedgeCounts(t, reader)[telemetry.HedgeRefused] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("hedges %v, want one refused", hedgeCounts(t, reader))
		}
		time.Sleep(time.Millisecond)
	}
	if n := f.clk.PendingTimers(); n != 0 || s.attempts() != 1 {
		t.Fatalf("%d timers, %d attempts after the refusal; want 0 and 1", n, s.attempts())
	}
	h.release(1)
	r := <-done
	if r.err != nil || r.o.Answer != 200 || r.c.Attempts != 1 || h.wasCanceled(1) {
		t.Fatalf("%v %v after %d attempts (canceled %v), want the first attempt's 200", r.o.Answer, r.err, r.c.Attempts, h.wasCanceled(1))
	}
	if got := hedgeCounts(t, reader); got[telemetry.HedgeSent] != 0 {
		t.Fatalf("hedges %v", got)
	}
}

func TestHedgeFailureWaitsForTheOthers(t *testing.T) {
	// A backoff of up to an hour on the fake clock: the retry waits for
	// the test to move it.
	slow := policy.Effective{Attempts: 2, BackoffInitial: time.Hour, BackoffMax: time.Hour}
	for _, tc := range []struct {
		name         string
		eff          policy.Effective
		first, hedge Outcome // the first attempt's (after the hedge started), the hedge's
		retry        Outcome // a retry's, when one is made
		wantAttempts int
		wantAnswer   any
		wantLayer    Layer
	}{
		{name: "the first fails, the hedge answers", first: status(503), hedge: status(200),
			wantAttempts: 2, wantAnswer: 200},
		{name: "the first fails to connect, the hedge answers", first: failure(resilience.ErrConnect, LayerConnect), hedge: status(200),
			wantAttempts: 2, wantAnswer: 200},
		// Both fail: the last failure decides (both are alike: the two
		// attempts end in either order).
		{name: "both fail: the last answer", first: status(503), hedge: status(503),
			wantAttempts: 2, wantAnswer: 503},
		{name: "both fail: the last failure", first: failure(resilience.ErrConnect, LayerConnect), hedge: failure(resilience.ErrConnect, LayerConnect),
			wantAttempts: 2, wantLayer: LayerConnect},
		{name: "both fail, then a retry answers", eff: slow, first: status(503), hedge: status(503), retry: status(200),
			wantAttempts: 3, wantAnswer: 200},
		{name: "a final failure decides", first: Outcome{Result: resilience.Outcome{HTTPStatus: 403}, Layer: LayerAuthz, Err: errors.New("denied"), Final: true},
			hedge: status(200), wantAttempts: 2, wantLayer: LayerAuthz},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := hedged(t, settings{eff: tc.eff, auto: false}, Hedge{Delay: 20 * time.Millisecond, Max: 1})
			h := newHolder(func(n int) Outcome { return []Outcome{tc.first, tc.hedge, tc.retry}[n-1] }, 1, 2)
			s := &fakeSender{script: h.script}
			done := f.start(context.Background(), get, s)
			seen := map[int]bool{}
			h.waitStarted(t, 1, seen)
			f.clk.BlockUntilTimers(1)
			f.clk.Advance(20 * time.Millisecond)
			h.waitStarted(t, 2, seen)
			h.release(1)
			if tc.first.Final {
				// The hedge is canceled by the first's final outcome.
			} else {
				// The first's failure waits for the hedge: release it.
				h.release(2)
			}
			if tc.retry.Answer != nil {
				// The retry waits its backoff on the fake clock.
				f.clk.BlockUntilTimers(1)
				f.clk.Advance(time.Hour)
			}
			r := <-done
			if r.c.Attempts != tc.wantAttempts {
				t.Fatalf("%d attempts, want %d (err %v)", r.c.Attempts, tc.wantAttempts, r.err)
			}
			if r.o.Answer != tc.wantAnswer {
				t.Fatalf("answer %v, want %v (err %v)", r.o.Answer, tc.wantAnswer, r.err)
			}
			ce := callErr(r.err)
			if tc.wantLayer != "" && (ce == nil || ce.Layer != tc.wantLayer || ce.Attempts != tc.wantAttempts) {
				t.Fatalf("err %v, want layer %s after %d attempts", r.err, tc.wantLayer, tc.wantAttempts)
			}
			if tc.wantLayer == "" && r.err != nil {
				t.Fatalf("err %v", r.err)
			}
			if tc.first.Final && !h.wasCanceled(2) {
				t.Fatal("the hedge was not canceled by the final outcome")
			}
		})
	}
}

func TestHedgeCallerCancels(t *testing.T) {
	f, _ := hedged(t, settings{}, Hedge{Delay: 20 * time.Millisecond, Max: 1})
	h := newHolder(func(int) Outcome { return status(200) }, 1, 2)
	s := &fakeSender{script: h.script}
	ctx, cancel := context.WithCancel(context.Background())
	done := f.start(ctx, get, s)
	seen := map[int]bool{}
	h.waitStarted(t, 1, seen)
	f.clk.BlockUntilTimers(1)
	f.clk.Advance(20 * time.Millisecond)
	h.waitStarted(t, 2, seen)
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) || callErr(r.err) != nil || r.c.Attempts != 2 {
		t.Fatalf("%v after %d attempts, want the caller's cancellation after 2", r.err, r.c.Attempts)
	}
	if !h.wasCanceled(1) || !h.wasCanceled(2) {
		t.Fatal("an attempt's context outlived the caller's")
	}
}

func TestHedgeQuantile(t *testing.T) {
	lt := resilience.NewLatencyTracker(resilience.LatencyConfig{})
	f, _ := hedged(t, settings{}, Hedge{Quantile: 0.95, Latency: lt, Max: 1})
	// Each attempt takes 4ms on the fake clock.
	fast := &fakeSender{script: func(a *Attempt) Outcome {
		f.clk.Advance(4 * time.Millisecond)
		return status(200)
	}}
	for i := range resilience.DefaultLatencyMinSamples {
		if _, _, err := f.call(context.Background(), get, fast); err != nil {
			t.Fatal(err)
		}
		// Too few samples yet: no hedge is planned (no timer).
		if n := f.clk.PendingTimers(); n != 0 {
			t.Fatalf("a timer after %d samples", i+1)
		}
	}
	want, ok := lt.Quantile(0.95, f.clk.Now())
	if !ok || want < 4*time.Millisecond || want > 4*time.Millisecond*17/16 {
		t.Fatalf("p95 of 4ms samples: %v %v", want, ok)
	}
	h := newHolder(func(int) Outcome { return status(200) }, 1)
	s := &fakeSender{script: h.script}
	done := f.start(context.Background(), get, s)
	h.waitStarted(t, 1, map[int]bool{})
	f.clk.BlockUntilTimers(1)
	f.clk.Advance(want - time.Nanosecond)
	if s.attempts() != 1 {
		t.Fatal("hedged before the quantile")
	}
	f.clk.Advance(time.Nanosecond)
	if r := <-done; r.err != nil || r.c.Attempts != 2 || !h.wasCanceled(1) {
		t.Fatalf("%v after %d attempts", r.err, r.c.Attempts)
	}
}

func TestHedgesDoNotTakeRetries(t *testing.T) {
	// attempts: 2 and a hedge: the first and its hedge fail, and the retry
	// the route allows is still made.
	f, _ := hedged(t, settings{eff: policy.Effective{Attempts: 2, BackoffInitial: time.Hour, BackoffMax: time.Hour}},
		Hedge{Delay: 20 * time.Millisecond, Max: 1})
	h := newHolder(func(n int) Outcome { return []Outcome{status(503), status(503), status(503), status(503)}[n-1] }, 1, 2)
	s := &fakeSender{script: h.script}
	done := f.start(context.Background(), get, s)
	seen := map[int]bool{}
	h.waitStarted(t, 1, seen)
	f.clk.BlockUntilTimers(1)
	f.clk.Advance(20 * time.Millisecond)
	h.waitStarted(t, 2, seen)
	h.release(1)
	h.release(2)
	// The retry's backoff; the retry fails at once, before its own hedge.
	f.clk.BlockUntilTimers(1)
	f.clk.Advance(time.Hour)
	r := <-done
	if r.c.Attempts != 3 || r.o.Answer != 503 {
		t.Fatalf("%v %v after %d attempts, want the retry's 503 after 3", r.o.Answer, r.err, r.c.Attempts)
	}
}
