package resilience_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/resilience"
)

// acquire takes a slot of l or fails the test.
func acquire(t *testing.T, l *resilience.Limiter) resilience.Permit {
	t.Helper()
	p, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatalf("Acquire() = %v, want a slot (limit %d, %d in flight)", err, l.Limit(), l.InFlight())
	}
	return p
}

// refused checks that err is a refusal of l's destination at limit.
func refused(t *testing.T, err error, limit int) {
	t.Helper()
	var oe *resilience.OverloadError
	if !errors.Is(err, resilience.ErrOverload) || !errors.As(err, &oe) {
		t.Fatalf("Acquire() = %v, want an *OverloadError wrapping ErrOverload", err)
	}
	if oe.Name != "billing" || oe.Limit != limit {
		t.Errorf("refusal names %q at limit %d, want %q at %d", oe.Name, oe.Limit, "billing", limit)
	}
}

func TestLimiterFixed(t *testing.T) {
	for _, tt := range []struct {
		name string
		max  int
		want int // the limit
	}{
		{"max 2", 2, 2},
		{"max 0 is 1", 0, 1},
		{"max 5", 5, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := resilience.NewLimiter("billing", resilience.LimiterConfig{Max: tt.max}, clocktest.NewFake(start))
			if l.Limit() != tt.want || l.Adaptive() {
				t.Fatalf("Limit() = %d, Adaptive() = %v; want %d, false", l.Limit(), l.Adaptive(), tt.want)
			}
			var held []resilience.Permit
			for range tt.want {
				held = append(held, acquire(t, l))
			}
			_, err := l.Acquire(context.Background())
			refused(t, err, tt.want)
			if got := l.InFlight(); got != tt.want {
				t.Errorf("InFlight() = %d after a refusal, want %d", got, tt.want)
			}
			held[0].Done(time.Millisecond, false)
			held[0] = acquire(t, l) // the freed slot
			for i, p := range held {
				if i%2 == 0 {
					p.Release()
				} else {
					p.Done(time.Millisecond, true)
				}
			}
			if got := l.InFlight(); got != 0 {
				t.Errorf("InFlight() = %d after every slot was given back, want 0", got)
			}
			if l.Limit() != tt.want {
				t.Errorf("a fixed limit moved to %d", l.Limit())
			}
		})
	}
}

func TestLimiterNil(t *testing.T) {
	var l *resilience.Limiter
	for range 3 {
		p, err := l.Acquire(context.Background())
		if err != nil {
			t.Fatalf("a nil Limiter refused: %v", err)
		}
		p.Done(time.Second, true)
		p.Release()
	}
	if l.Limit() != 0 || l.InFlight() != 0 || l.Waiting() != 0 || l.Adaptive() || l.MaxWait() != 0 {
		t.Error("a nil Limiter reports a limit")
	}
}

// queued starts an Acquire of l in its own goroutine once the waiters
// before it are queued, and returns the channel of its result.
func queued(t *testing.T, l *resilience.Limiter, ctx context.Context, before int) <-chan error {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		p, err := l.Acquire(ctx)
		if err == nil {
			if !p.Queued() {
				err = errors.New("the slot did not come from the queue")
			}
			p.Release()
		}
		ch <- err
	}()
	for l.Waiting() != before+1 {
		time.Sleep(time.Millisecond) // polling the queue, not timing anything
	}
	return ch
}

func TestLimiterQueueFIFO(t *testing.T) {
	clk := clocktest.NewFake(start)
	l := resilience.NewLimiter("billing", resilience.LimiterConfig{Max: 1, MaxWait: time.Second}, clk)
	held := acquire(t, l)
	// Each waiter holds its slot until told, so the order is observable.
	order := make(chan int, 3)
	release := make([]chan struct{}, 3)
	for i := range release {
		release[i] = make(chan struct{})
		ready := make(chan struct{})
		go func() {
			close(ready)
			p, err := l.Acquire(context.Background())
			if err != nil {
				order <- -1
				return
			}
			order <- i
			<-release[i]
			p.Release()
		}()
		<-ready
		for l.Waiting() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	// A newcomer does not jump the queue, even as a slot frees.
	held.Release()
	if got := <-order; got != 0 {
		t.Fatalf("the slot went to waiter %d, want the oldest (0)", got)
	}
	close(release[0])
	if got := <-order; got != 1 {
		t.Fatalf("the next slot went to waiter %d, want 1", got)
	}
	close(release[1])
	if got := <-order; got != 2 {
		t.Fatalf("the last slot went to waiter %d, want 2", got)
	}
	close(release[2])
	for l.InFlight() != 0 {
		time.Sleep(time.Millisecond)
	}
	if clk.PendingTimers() != 0 {
		t.Errorf("%d wait timers left running", clk.PendingTimers())
	}
}

func TestLimiterQueueEnds(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(clk *clocktest.Fake, cancel context.CancelFunc)
		want error
	}{
		{"max_wait passes", func(clk *clocktest.Fake, _ context.CancelFunc) {
			clk.BlockUntilTimers(1)
			clk.Advance(25 * time.Millisecond)
		}, resilience.ErrOverload},
		{"the context ends", func(_ *clocktest.Fake, cancel context.CancelFunc) { cancel() }, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktest.NewFake(start)
			l := resilience.NewLimiter("billing", resilience.LimiterConfig{Max: 1, MaxWait: 25 * time.Millisecond}, clk)
			held := acquire(t, l)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := queued(t, l, ctx, 0)
			tt.end(clk, cancel)
			if err := <-got; !errors.Is(err, tt.want) {
				t.Fatalf("the wait ended with %v, want %v", err, tt.want)
			}
			if l.Waiting() != 0 || l.InFlight() != 1 {
				t.Errorf("after the wait: %d waiting, %d in flight; want 0, 1", l.Waiting(), l.InFlight())
			}
			held.Release()
			acquire(t, l).Release() // the slot is free, not given to the waiter gone
			if l.InFlight() != 0 || clk.PendingTimers() != 0 {
				t.Errorf("%d in flight, %d timers after all; want 0, 0", l.InFlight(), clk.PendingTimers())
			}
		})
	}
}

func TestLimiterQueueGetsSlot(t *testing.T) {
	clk := clocktest.NewFake(start)
	l := resilience.NewLimiter("billing", resilience.LimiterConfig{Max: 2, MaxWait: time.Second}, clk)
	a, b := acquire(t, l), acquire(t, l)
	got := queued(t, l, context.Background(), 0)
	a.Done(time.Millisecond, false)
	if err := <-got; err != nil {
		t.Fatalf("the waiter got %v, want the freed slot", err)
	}
	b.Release()
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Errorf("%d in flight, %d waiting; want 0, 0", l.InFlight(), l.Waiting())
	}
}

// sim runs a closed-loop load of callers against a simulated destination
// through l, in steps of 1 ms of clk: each idle caller asks for a slot;
// an admitted attempt is served by the destination (serve returns its
// round-trip time, or dropped for an overload answer given at once).
type sim struct {
	clk     *clocktest.Fake
	l       *resilience.Limiter
	callers int
	busy    int      // attempts being served
	ends    []simEnd // their ends
	serve   func(busy int) (rtt time.Duration, dropped bool)
	drops   int
	served  int
}

type simEnd struct {
	at  time.Time
	rtt time.Duration
	p   resilience.Permit
}

// run simulates ms steps and returns the lowest and highest limit seen
// from step from on.
func (s *sim) run(ms, from int) (lo, hi int) {
	lo, hi = 1<<31, 0
	for step := range ms {
		s.clk.Advance(time.Millisecond)
		now := s.clk.Now()
		kept := s.ends[:0]
		for _, e := range s.ends {
			if e.at.After(now) {
				kept = append(kept, e)
				continue
			}
			s.busy--
			s.served++
			e.p.Done(e.rtt, false)
		}
		s.ends = kept
		for range s.callers - s.busy { // each idle caller tries once a step
			p, err := s.l.Acquire(context.Background())
			if err != nil {
				break
			}
			rtt, dropped := s.serve(s.busy)
			if dropped {
				s.drops++
				p.Done(0, true)
				continue
			}
			s.busy++
			s.ends = append(s.ends, simEnd{at: now.Add(rtt), rtt: rtt, p: p})
		}
		if step >= from {
			lo, hi = min(lo, s.l.Limit()), max(hi, s.l.Limit())
		}
	}
	return lo, hi
}

// slots is a destination of k slots of d each that answers an overload
// at once beyond them.
func slots(k int, d time.Duration) func(int) (time.Duration, bool) {
	return func(busy int) (time.Duration, bool) { return d, busy >= k }
}

// queueing is a destination of k workers with a queue: latency grows with
// the attempts beyond k.
func queueing(k int, d *time.Duration) func(int) (time.Duration, bool) {
	return func(busy int) (time.Duration, bool) {
		return *d * time.Duration(max(busy+1, k)) / time.Duration(k), false
	}
}

func adaptiveLimiter(clk *clocktest.Fake, lo, initial, hi int) *resilience.Limiter {
	return resilience.NewLimiter("billing", resilience.LimiterConfig{Adaptive: true, Min: lo, Initial: initial, Max: hi}, clk)
}

func TestAdaptiveLearnsSlots(t *testing.T) {
	for _, tt := range []struct {
		name    string
		k       int
		initial int
	}{
		{"4 slots from 20", 4, 20},
		{"4 slots from 1", 4, 1},
		{"16 slots from 100", 16, 100},
		{"16 slots from 2", 16, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktest.NewFake(start)
			s := &sim{clk: clk, l: adaptiveLimiter(clk, 1, tt.initial, 1000), callers: 200, serve: slots(tt.k, 10*time.Millisecond)}
			s.run(200, 0)
			early := s.drops // in the first 200 ms
			s.run(1800, 0)
			s.drops = 0
			lo, hi := s.run(2000, 0)
			if lo < tt.k*85/100-1 || hi > tt.k+2 {
				t.Errorf("the limit moved in [%d, %d] once learned, want within [%d, %d]", lo, hi, tt.k*85/100-1, tt.k+2)
			}
			if late := s.drops / 10; tt.initial > tt.k && late >= early {
				t.Errorf("%d drops per 200 ms once learned, %d in the first 200 ms: they should fall", late, early)
			}
			t.Logf("limit in [%d, %d]; drops %d then %d; served %d", lo, hi, early, s.drops, s.served)
		})
	}
}

func TestAdaptiveLearnsLatency(t *testing.T) {
	clk := clocktest.NewFake(start)
	d := 10 * time.Millisecond
	const k = 10
	s := &sim{clk: clk, l: adaptiveLimiter(clk, 1, 2, 1000), callers: 200, serve: queueing(k, &d)}
	lo, hi := s.run(4000, 2000)
	t.Logf("limit in [%d, %d]", lo, hi)
	if lo < k-2 || hi > 2*k {
		t.Errorf("with latency rising past %d in flight, the limit moved in [%d, %d], want within [%d, %d]", k, lo, hi, k-2, 2*k)
	}
	// The destination gets twice as fast at once: the same k, latency
	// halved. The limit keeps near k, and does not collapse.
	d = 5 * time.Millisecond
	if lo, hi := s.run(4000, 2000); lo < k-2 || hi > 2*k {
		t.Errorf("after latency halved, the limit moved in [%d, %d], want within [%d, %d]", lo, hi, k-2, 2*k)
	}
	// Twice as slow for good: the limit re-learns the no-load latency
	// instead of staying at its floor.
	d = 20 * time.Millisecond
	if lo, hi := s.run(8000, 6000); lo < k-2 || hi > 2*k {
		t.Errorf("after latency doubled, the limit moved in [%d, %d], want within [%d, %d]", lo, hi, k-2, 2*k)
	}
}

func TestAdaptiveRecovers(t *testing.T) {
	clk := clocktest.NewFake(start)
	k := 4
	s := &sim{clk: clk, l: adaptiveLimiter(clk, 1, 20, 1000), callers: 200}
	s.serve = func(busy int) (time.Duration, bool) { return 10 * time.Millisecond, busy >= k }
	s.run(2000, 0)
	if got := s.l.Limit(); got > k+2 {
		t.Fatalf("limit %d against %d slots", got, k)
	}
	k = 40 // the destination scales up
	if lo, hi := s.run(4000, 3000); lo < k*85/100 || hi > k+2 {
		t.Errorf("after the destination grew to %d slots, the limit moved in [%d, %d]", k, lo, hi)
	}
}

func TestAdaptiveBounds(t *testing.T) {
	for _, tt := range []struct {
		name             string
		lo, initial, hi  int
		k                int
		wantLo, wantHigh int
	}{
		{"capacity below min", 8, 10, 100, 2, 8, 8},
		{"capacity above max", 1, 2, 6, 50, 6, 6},
		{"initial out of range", 3, 500, 9, 50, 9, 9},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktest.NewFake(start)
			l := adaptiveLimiter(clk, tt.lo, tt.initial, tt.hi)
			if l.Limit() < tt.lo || l.Limit() > tt.hi {
				t.Fatalf("initial limit %d out of [%d, %d]", l.Limit(), tt.lo, tt.hi)
			}
			s := &sim{clk: clk, l: l, callers: 200, serve: slots(tt.k, 10*time.Millisecond)}
			if lo, hi := s.run(3000, 2000); lo != tt.wantLo || hi != tt.wantHigh {
				t.Errorf("the limit moved in [%d, %d], want [%d, %d]", lo, hi, tt.wantLo, tt.wantHigh)
			}
		})
	}
}

func TestAdaptiveIgnoresReleases(t *testing.T) {
	clk := clocktest.NewFake(start)
	l := adaptiveLimiter(clk, 1, 10, 100)
	for range 1000 {
		var ps []resilience.Permit
		for range 10 {
			ps = append(ps, acquire(t, l))
		}
		clk.Advance(time.Millisecond)
		for _, p := range ps {
			p.Release() // canceled: no sample
		}
	}
	if got := l.Limit(); got != 10 {
		t.Errorf("released attempts moved the limit to %d, want 10", got)
	}
}

func TestIsDrop(t *testing.T) {
	for _, tt := range []struct {
		o    resilience.Outcome
		want bool
	}{
		{resilience.Outcome{HTTPStatus: 503}, true},
		{resilience.Outcome{HTTPStatus: 429}, true},
		{resilience.Outcome{HTTPStatus: 500}, false},
		{resilience.Outcome{HTTPStatus: 200}, false},
		{resilience.Outcome{Err: resilience.ErrTimeout}, true},
		{resilience.Outcome{Err: resilience.ErrConnect}, false},
		{resilience.Outcome{Err: resilience.ErrCanceled}, false},
		{resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeUnavailable}, true},
		{resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeResourceExhausted}, true},
		{resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeInternal}, false},
		{resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeOK}, false},
	} {
		if got := resilience.IsDrop(tt.o); got != tt.want {
			t.Errorf("IsDrop(%+v) = %v, want %v", tt.o, got, tt.want)
		}
	}
}

func BenchmarkLimiter(b *testing.B) {
	for _, bb := range []struct {
		name string
		cfg  resilience.LimiterConfig
	}{
		{"fixed", resilience.LimiterConfig{Max: 1 << 20}},
		{"adaptive", resilience.LimiterConfig{Adaptive: true, Min: 1 << 19, Initial: 1 << 20, Max: 1 << 20}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			l := resilience.NewLimiter("billing", bb.cfg, nil)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					p, err := l.Acquire(ctx)
					if err != nil {
						b.Fatal(err)
					}
					p.Done(time.Millisecond, false)
				}
			})
		})
	}
}
