package meshgrpc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/resilience"
)

// The client-side concurrency limit, over HTTP and gRPC.

// holding is a backend that holds each call until release is closed,
// telling entered of each.
type holding struct {
	entered chan struct{}
	release chan struct{}
}

func newHolding() *holding {
	return &holding{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (h *holding) behaviour(int64) answer {
	h.entered <- struct{}{}
	<-h.release
	return ok
}

// limiterOf returns the concurrency limiter of billing in f's client mesh.
func limiterOf(t *testing.T, f *fleet) *resilience.Limiter {
	t.Helper()
	_, d := meshlink.Of(f.client).State().Destination("billing") // compiled as a first call would
	if d == nil || d.Limiter == nil {
		t.Fatal("billing has no concurrency limiter")
	}
	return d.Limiter
}

// overloaded checks that r failed at layer overload, as its protocol
// carries it.
func overloaded(t *testing.T, r result) {
	t.Helper()
	ce := r.callError()
	if ce == nil || ce.Layer != mesh.LayerOverload || ce.Service != "billing" {
		t.Fatalf("%v, want a CallError of layer overload toward billing", r)
	}
	// A CallError rebuilt from a gRPC status carries its cause as text.
	if !errors.Is(ce.Err, resilience.ErrOverload) && !strings.Contains(ce.Err.Error(), resilience.ErrOverload.Error()) {
		t.Errorf("cause %v, want the limiter's refusal", ce.Err)
	}
	if r.md == modeGRPC && grpcstatus.Code(r.err) != codes.ResourceExhausted {
		t.Errorf("code %v, want ResourceExhausted", grpcstatus.Code(r.err))
	}
}

func TestConcurrencyMax(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		h := newHolding()
		f := startFleet(t, md, "    concurrency: {max: 2}\n", nil, h.behaviour)
		results := make(chan result, 2)
		for range 2 {
			go func() { results <- f.call(context.Background()) }()
		}
		<-h.entered
		<-h.entered
		overloaded(t, f.call(context.Background()))
		close(h.release)
		for range 2 {
			if r := <-results; !r.ok() {
				t.Errorf("a call within the limit: %v", r)
			}
		}
		if got := f.Hits[0](); got != 2 {
			t.Errorf("the backend saw %d calls, want 2: the third was never sent", got)
		}
		if l := limiterOf(t, f); l.InFlight() != 0 {
			t.Errorf("%d slots held after every call ended", l.InFlight())
		}
	}, allModes...)
}

func TestConcurrencyMaxWait(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		h := newHolding()
		f := startFleet(t, md, "    concurrency: {max: 2, max_wait: 1h}\n", nil, h.behaviour)
		l := limiterOf(t, f)
		results := make(chan result, 3)
		for range 2 {
			go func() { results <- f.call(context.Background()) }()
		}
		<-h.entered
		<-h.entered
		go func() { results <- f.call(context.Background()) }()
		for l.Waiting() != 1 {
			time.Sleep(time.Millisecond) // until the third call is queued
		}
		if got := f.Hits[0](); got != 2 {
			t.Fatalf("the backend saw %d calls while the third waited, want 2", got)
		}
		close(h.release) // the first two answer; the third gets a slot
		for range 3 {
			if r := <-results; !r.ok() {
				t.Errorf("%v, want every call answered", r)
			}
		}
		if got := f.Hits[0](); got != 3 {
			t.Errorf("the backend saw %d calls, want 3", got)
		}
	}, modeHTTP1, modeGRPC)
}

func TestConcurrencyQueueDeadline(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		h := newHolding()
		f := startFleet(t, md, "    concurrency: {max: 1, max_wait: 1h}\n", nil, h.behaviour)
		done := make(chan result, 1)
		go func() { done <- f.call(context.Background()) }()
		<-h.entered
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		r := f.call(ctx)
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerTimeout {
			t.Errorf("%v, want layer timeout: the deadline ended in the queue", r)
		}
		close(h.release)
		if r := <-done; !r.ok() {
			t.Errorf("the first call: %v", r)
		}
		if got := f.Hits[0](); got != 1 {
			t.Errorf("the backend saw %d calls, want 1", got)
		}
	}, modeHTTP1, modeGRPC)
}

// slotted is a backend of k slots, each call taking service, that answers
// its overload (503, gRPC Unavailable) at once beyond them; it counts
// those, in call order.
type slotted struct {
	sem     chan struct{}
	service time.Duration
	mu      sync.Mutex
	order   []bool // per call, in arrival order: refused
}

func (s *slotted) behaviour(int64) answer {
	select {
	case s.sem <- struct{}{}:
		s.record(false)
		time.Sleep(s.service) // the work: a time a call takes, nothing timed
		<-s.sem
		return ok
	default:
		s.record(true)
		return fail
	}
}

func (s *slotted) record(refused bool) {
	s.mu.Lock()
	s.order = append(s.order, refused)
	s.mu.Unlock()
}

// refusedIn counts the refusals among calls [from, to) of the arrival
// order.
func (s *slotted) refusedIn(from, to int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.order[min(from, len(s.order)):min(to, len(s.order))] {
		if r {
			n++
		}
	}
	return n
}

func TestConcurrencyAdaptiveLearnsCapacity(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		const k = 3
		s := &slotted{sem: make(chan struct{}, k), service: 3 * time.Millisecond}
		f := startFleet(t, md, "    concurrency: {adaptive: {min: 1, initial: 20, max: 100}, max_wait: 10s}\n", nil, s.behaviour)
		l := limiterOf(t, f)
		const callers, each = 20, 40
		var answered atomic.Int64
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for range each {
					if r := f.call(context.Background()); r.ok() {
						answered.Add(1)
					}
				}
			})
		}
		wg.Wait()
		total := len(s.order)
		early, late := s.refusedIn(0, 100), s.refusedIn(total-100, total)
		t.Logf("limit %d; %d calls sent, %d answered; refused: %d of the first 100, %d of the last 100", l.Limit(), total, answered.Load(), early, late)
		// The limit learned on real time, on a shared machine: a slow
		// moment reads as the destination's latency rising and may take
		// the limit lower (the limiter's own tests pin its convergence on
		// a fake clock). Above the capacity it must not stay.
		if got := l.Limit(); got > k+1 {
			t.Errorf("the limit is %d, want at most %d: the backend has %d slots", got, k+1, k)
		}
		if early == 0 || late >= early {
			t.Errorf("the backend refused %d of the first 100 calls and %d of the last 100: the refusals should fall", early, late)
		}
	})
}
