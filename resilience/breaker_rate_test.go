package resilience_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/resilience"
)

// step is one step of a breaker script: n reports of kind op ('s'
// success, 'f' failure, 'r' released, 'x' an attempt that must be
// rejected), or ('a') an advance of the fake clock by d; want, when set,
// is the state after the step.
type step struct {
	op   byte
	n    int
	d    time.Duration
	want string
}

func oks(n int) step                 { return step{op: 's', n: n} }
func fails(n int) step               { return step{op: 'f', n: n} }
func releases(n int) step            { return step{op: 'r', n: n} }
func rejects(n int) step             { return step{op: 'x', n: n} }
func adv(d time.Duration) step       { return step{op: 'a', d: d} }
func (st step) is(state string) step { st.want = state; return st }

// play runs the script on b, advancing fc.
func play(t *testing.T, b *resilience.Breaker, fc *clocktest.Fake, script []step) {
	t.Helper()
	for i, st := range script {
		if st.op == 'a' {
			fc.Advance(st.d)
		}
		for j := range st.n {
			tk, err := b.Allow()
			if st.op == 'x' {
				if !errors.Is(err, resilience.ErrBreakerOpen) {
					t.Fatalf("step %d (%c), attempt %d: Allow() = %v, want ErrBreakerOpen", i, st.op, j+1, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("step %d (%c), attempt %d: Allow() = %v in state %q", i, st.op, j+1, err, b.State())
			}
			switch st.op {
			case 's':
				tk.Done(false)
			case 'f':
				tk.Done(true)
			case 'r':
				tk.Release()
			}
		}
		if st.want != "" {
			if got := b.State(); got != st.want {
				t.Fatalf("after step %d (%c %d %v): State() = %q, want %q", i, st.op, st.n, st.d, got, st.want)
			}
		}
	}
}

func rateConfig(rate float64, minCalls, probes int, fc *clocktest.Fake) resilience.BreakerConfig {
	return resilience.BreakerConfig{
		FailureRate: rate, Window: 10 * time.Second, MinCalls: minCalls,
		OpenFor: 5 * time.Second, HalfOpenRequests: probes, Clock: fc,
	}
}

func TestRateBreaker(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		minCalls int
		probes   int
		script   []step
		changes  []string
	}{
		{
			name: "opens at the rate with min_calls met", rate: 0.5, minCalls: 10,
			script:  []step{oks(5), fails(4).is("closed"), fails(1).is("open"), rejects(3)},
			changes: []string{"closed->open"},
		},
		{
			name: "never below min_calls", rate: 0.5, minCalls: 20,
			script:  []step{fails(19).is("closed"), fails(1).is("open")},
			changes: []string{"closed->open"},
		},
		{
			name: "below the rate stays closed", rate: 0.5, minCalls: 10,
			script: []step{oks(2), fails(1), oks(2), fails(1), oks(2), fails(1), oks(2), fails(1), oks(2), fails(1), oks(2), fails(1), oks(2), fails(1).is("closed")},
		},
		{
			name: "a rate of 1 needs every call failed", rate: 1, minCalls: 5,
			script:  []step{oks(1), fails(20).is("closed"), adv(10 * time.Second), fails(5).is("open")},
			changes: []string{"closed->open"},
		},
		{
			name: "a rate above 1 is 1", rate: 3, minCalls: 5,
			script:  []step{fails(5).is("open")},
			changes: []string{"closed->open"},
		},
		{
			name: "a failure at the window's end still counts", rate: 0.5, minCalls: 10,
			script:  []step{fails(9), adv(9999 * time.Millisecond), fails(1).is("open")},
			changes: []string{"closed->open"},
		},
		{
			name: "old buckets age out", rate: 0.5, minCalls: 10,
			script: []step{fails(9), adv(10 * time.Second), fails(1).is("closed"), oks(8), fails(1).is("closed")},
		},
		{
			name: "the window slides by buckets", rate: 0.5, minCalls: 4,
			// 3 failures at 0s, 4 successes at 5s: 3 of 7. At 10s the
			// failures of 0s are out: 1 failure of 5, not 4 of 8.
			script: []step{fails(3), adv(5 * time.Second), oks(4).is("closed"), adv(5 * time.Second), fails(1).is("closed")},
		},
		{
			name: "canceled attempts count as neither", rate: 0.5, minCalls: 10,
			// Released attempts are no successes (10 calls, 6 failed)
			// and no calls (min_calls waits for the 10th report).
			script:  []step{oks(4), fails(5), releases(20).is("closed"), fails(1).is("open")},
			changes: []string{"closed->open"},
		},
		{
			name: "half-open probes close it, with an empty window", rate: 0.5, minCalls: 10, probes: 3,
			script: []step{
				fails(10).is("open"), adv(5 * time.Second).is("open"), adv(time.Nanosecond).is("half-open"),
				oks(2).is("half-open"), releases(1), oks(1).is("closed"),
				fails(9).is("closed"), fails(1).is("open"),
			},
			changes: []string{"closed->open", "open->half-open", "half-open->closed", "closed->open"},
		},
		{
			name: "a failed probe reopens it", rate: 0.5, minCalls: 10, probes: 3,
			script: []step{
				fails(10), adv(6 * time.Second).is("half-open"), oks(1), fails(1).is("open"), rejects(1),
				adv(6 * time.Second).is("half-open"), oks(3).is("closed"),
			},
			changes: []string{"closed->open", "open->half-open", "half-open->open", "open->half-open", "half-open->closed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := clocktest.NewFake(time.Unix(1e9, 0))
			var tr transitions
			b := resilience.NewBreaker("billing", rateConfig(tt.rate, tt.minCalls, tt.probes, fc), tr.record)
			play(t, b, fc, tt.script)
			want := make([]string, len(tt.changes))
			for i, c := range tt.changes {
				want[i] = "billing:" + c
			}
			if got := tr.list(); !slices.Equal(got, want) {
				t.Errorf("onChange calls = %q, want %q", got, want)
			}
		})
	}
}

// TestRateBreakerIgnoresReportsOfAnEarlierGeneration: an attempt allowed
// before a transition reports into nothing, success or failure.
func TestRateBreakerIgnoresReportsOfAnEarlierGeneration(t *testing.T) {
	fc := clocktest.NewFake(time.Unix(1e9, 0))
	b := resilience.NewBreaker("billing", rateConfig(0.5, 4, 1, fc), nil)
	early := mustAllow(t, b)       // allowed while closed, reports late
	lateFailure := mustAllow(t, b) // the same
	play(t, b, fc, []step{fails(4).is("open"), adv(6 * time.Second).is("half-open")})
	early(false)
	if got := b.State(); got != "half-open" {
		t.Fatalf("State() after a success of the closed generation = %q, want half-open", got)
	}
	play(t, b, fc, []step{oks(1).is("closed"), fails(3).is("closed")})
	lateFailure(true) // would make 4 of 4
	if got := b.State(); got != "closed" {
		t.Fatalf("State() after a failure of an earlier generation = %q, want closed", got)
	}
	if calls, failures := b.Window(); calls != 3 || failures != 3 {
		t.Fatalf("Window() = %d, %d; want 3, 3", calls, failures)
	}
}

func TestBreakerWindow(t *testing.T) {
	fc := clocktest.NewFake(time.Unix(1e9, 0))
	b := resilience.NewBreaker("billing", rateConfig(0.5, 100, 1, fc), nil)
	play(t, b, fc, []step{oks(7), fails(3), releases(5), adv(3 * time.Second), oks(2), fails(1)})
	if calls, failures := b.Window(); calls != 13 || failures != 4 {
		t.Fatalf("Window() = %d, %d; want 13, 4", calls, failures)
	}
	fc.Advance(8 * time.Second) // the first 10 are out
	if calls, failures := b.Window(); calls != 3 || failures != 1 {
		t.Fatalf("Window() 11s on = %d, %d; want 3, 1", calls, failures)
	}
	cons := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 5}, nil)
	attempt(t, cons, true)
	var nilBreaker *resilience.Breaker
	for _, br := range []*resilience.Breaker{cons, nilBreaker} {
		if calls, failures := br.Window(); calls != 0 || failures != 0 {
			t.Errorf("Window() of a breaker without a window = %d, %d", calls, failures)
		}
	}
}

// TestBreakerOpenForOnTheClock: both forms turn half-open when their clock
// passes open_for, not before.
func TestBreakerOpenForOnTheClock(t *testing.T) {
	for _, form := range []string{"consecutive", "rate"} {
		t.Run(form, func(t *testing.T) {
			fc := clocktest.NewFake(time.Unix(1e9, 0))
			cfg := resilience.BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Minute, Clock: fc}
			if form == "rate" {
				cfg = rateConfig(1, 1, 1, fc)
				cfg.OpenFor = time.Minute
			}
			b := resilience.NewBreaker("billing", cfg, nil)
			play(t, b, fc, []step{
				fails(1).is("open"), adv(time.Minute).is("open"), rejects(1),
				adv(time.Nanosecond).is("half-open"), oks(1).is("closed"),
			})
		})
	}
}

// TestRateBreakerConcurrentReports runs allows, reports and window reads
// from many goroutines while the clock moves (for the race detector), and
// checks that the breaker closes after successes.
func TestRateBreakerConcurrentReports(t *testing.T) {
	fc := clocktest.NewFake(time.Unix(1e9, 0))
	cfg := rateConfig(0.3, 20, 2, fc)
	cfg.OpenFor = time.Millisecond
	b := resilience.NewBreaker("billing", cfg, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				if g == 0 && i%10 == 0 {
					fc.Advance(700 * time.Millisecond)
				}
				tk, err := b.Allow()
				if err != nil {
					continue
				}
				switch (g + i) % 3 {
				case 0:
					tk.Done(true)
				case 1:
					tk.Done(false)
				default:
					tk.Release()
				}
				_, _ = b.Window()
			}
		})
	}
	wg.Wait()
	for range 100 {
		if b.State() == "closed" {
			break
		}
		fc.Advance(time.Second)
		if tk, err := b.Allow(); err == nil {
			tk.Done(false)
		}
	}
	if got := b.State(); got != "closed" {
		t.Fatalf("State() after successes = %q, want closed", got)
	}
}

// breakerForms are the two forms, for the benchmarks and the allocation
// pin: the closed state's admission and reports.
var breakerForms = []struct {
	name string
	cfg  resilience.BreakerConfig
}{
	{"consecutive", resilience.BreakerConfig{ConsecutiveFailures: 5}},
	{"rate", resilience.BreakerConfig{FailureRate: 0.5, Window: 10 * time.Second, MinCalls: 20}},
}

func TestBreakerClosedPathAllocatesNothing(t *testing.T) {
	for _, form := range breakerForms {
		b := resilience.NewBreaker("billing", form.cfg, nil)
		i := 0
		allocs := testing.AllocsPerRun(1000, func() {
			tk, err := b.Allow()
			if err != nil {
				t.Fatal(err)
			}
			i++
			switch {
			case i%7 == 0:
				tk.Release()
			default:
				tk.Done(i%9 == 0) // a failure now and then: never trips
			}
		})
		if allocs != 0 {
			t.Errorf("%s: Allow and a report allocate %v times, want 0", form.name, allocs)
		}
	}
}

// BenchmarkBreakerAllowDone is a closed breaker's admission and a
// success's report, for each form, from one goroutine and in parallel.
func BenchmarkBreakerAllowDone(b *testing.B) {
	for _, form := range breakerForms {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/parallel=%v", form.name, parallel), func(b *testing.B) {
				br := resilience.NewBreaker("billing", form.cfg, nil)
				b.ReportAllocs()
				if !parallel {
					for b.Loop() {
						tk, err := br.Allow()
						if err != nil {
							b.Fatal(err)
						}
						tk.Done(false)
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						tk, err := br.Allow()
						if err != nil {
							b.Error(err)
							return
						}
						tk.Done(false)
					}
				})
			})
		}
	}
}
