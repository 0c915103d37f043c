package resilience_test

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/resilience"
)

// offer calls l for caller every dt over elapsed of fake time (the first
// call at the start, the last at its end) and returns how many were
// allowed.
func offer(fc *clocktest.Fake, l *resilience.RateLimiter, caller string, dt, elapsed time.Duration) int {
	allowed := 0
	for t := time.Duration(0); ; t += dt {
		if l.Allow(caller).Allowed {
			allowed++
		}
		if t+dt > elapsed {
			return allowed
		}
		fc.Advance(dt)
	}
}

// TestRateLimitAccuracy: over 1 s of fake time at a steady offered rate
// above the limit, allowed = burst + rate × elapsed, within one call.
func TestRateLimitAccuracy(t *testing.T) {
	for _, tc := range []struct {
		rate    float64
		burst   int
		offered time.Duration // between calls
	}{
		{100, 20, time.Millisecond},
		{100, 1, 100 * time.Microsecond},
		{33.3, 7, 3 * time.Millisecond},
		{1, 1, 10 * time.Millisecond},
		{2500, 500, 50 * time.Microsecond},
		{0.5, 3, time.Millisecond},
	} {
		t.Run(fmt.Sprintf("%v/s burst %d every %v", tc.rate, tc.burst, tc.offered), func(t *testing.T) {
			fc := clocktest.NewFake(start)
			l := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: tc.rate, Burst: tc.burst}, fc)
			got := offer(fc, l, "enrollment", tc.offered, time.Second)
			want := float64(tc.burst) + tc.rate*1
			if math.Abs(float64(got)-want) > 1 {
				t.Fatalf("allowed %d over 1s, want %v ± 1", got, want)
			}
		})
	}
}

// TestRateLimitWait: a refused call learns the wait until the next token,
// which is then there, not a nanosecond before.
func TestRateLimitWait(t *testing.T) {
	fc := clocktest.NewFake(start)
	l := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 4, Burst: 2}, fc)
	for i := range 2 {
		if d := l.Allow("a"); !d.Allowed {
			t.Fatalf("call %d of the burst refused: %+v", i, d)
		}
	}
	fc.Advance(100 * time.Millisecond)
	d := l.Allow("a")
	if d.Allowed || d.Wait != 150*time.Millisecond {
		t.Fatalf("%+v, want refused with a wait of 150ms (250ms per token, 100ms gone)", d)
	}
	fc.Advance(d.Wait - time.Nanosecond)
	if d := l.Allow("a"); d.Allowed || d.Wait != time.Nanosecond {
		t.Fatalf("a nanosecond early: %+v", d)
	}
	fc.Advance(time.Nanosecond)
	if d := l.Allow("a"); !d.Allowed {
		t.Fatalf("on time: %+v", d)
	}
}

// TestRateLimitPerCaller: under per_caller, each caller has its bucket;
// an override gives its caller its rate and a burst scaled with it;
// without per_caller every caller shares one bucket but the overridden.
func TestRateLimitPerCaller(t *testing.T) {
	cfg := resilience.RateLimitConfig{RequestsPerSecond: 10, Burst: 5, Overrides: map[string]float64{"vip": 30, "slow": 0.1}}
	for _, tc := range []struct {
		perCaller bool
		// allowed per caller, called in this order, each until refused,
		// with no time passing: the burst of its bucket.
		order   []string
		allowed []int
		names   []string // the bucket each names
	}{
		{true, []string{"a", "b", "vip", "slow", ""}, []int{5, 5, 15, 1, 5}, []string{"a", "b", "vip", "slow", ""}},
		{false, []string{"a", "b", "vip", "slow", ""}, []int{5, 0, 15, 1, 0}, []string{"", "", "vip", "slow", ""}},
	} {
		t.Run(fmt.Sprint("per_caller=", tc.perCaller), func(t *testing.T) {
			c := cfg
			c.PerCaller = tc.perCaller
			fc := clocktest.NewFake(start)
			l := resilience.NewRateLimiter(c, fc)
			for i, caller := range tc.order {
				n := 0
				var d resilience.RateDecision
				for d = l.Allow(caller); d.Allowed; d = l.Allow(caller) {
					n++
				}
				if n != tc.allowed[i] || d.Caller != tc.names[i] {
					t.Fatalf("%q: %d allowed, bucket %q; want %d, %q", caller, n, d.Caller, tc.allowed[i], tc.names[i])
				}
			}
			// A second later, each bucket has refilled at its rate: vip 30,
			// the others 10 (the shared one too), slow none.
			fc.Advance(time.Second)
			for _, caller := range tc.order {
				want := map[string]int{"vip": 15, "slow": 0}[caller]
				if _, named := map[string]bool{"vip": true, "slow": true}[caller]; !named {
					want = 5 // refilled to its burst of 5 (10 in a second, at most 5)
					if !tc.perCaller && caller != tc.order[0] {
						want = 0 // the shared bucket: the first caller took it all
					}
				}
				n := 0
				for l.Allow(caller).Allowed {
					n++
				}
				if n != want {
					t.Fatalf("after 1s, %q: %d allowed, want %d", caller, n, want)
				}
			}
		})
	}
}

// TestRateLimitOverflow: past MaxCallers, new callers share one overflow
// bucket (named OverflowCaller), while the known ones keep theirs.
func TestRateLimitOverflow(t *testing.T) {
	fc := clocktest.NewFake(start)
	l := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 1, Burst: 2, PerCaller: true,
		Overrides: map[string]float64{"vip": 1}, MaxCallers: 3}, fc)
	for _, caller := range []string{"a", "b"} {
		if d := l.Allow(caller); !d.Allowed || d.Caller != caller {
			t.Fatalf("%q: %+v", caller, d)
		}
	}
	if n := l.Callers(); n != 3 {
		t.Fatalf("%d buckets, want 3 (vip, a, b)", n)
	}
	// c and d share the overflow bucket, of burst 2.
	for i, caller := range []string{"c", "d", "c"} {
		d := l.Allow(caller)
		if d.Caller != resilience.OverflowCaller || d.Allowed != (i < 2) {
			t.Fatalf("call %d of %q: %+v, want the overflow bucket, allowed for the first two", i, caller, d)
		}
	}
	if n := l.Callers(); n != 3 {
		t.Fatalf("%d buckets after overflowing, want 3", n)
	}
	if d := l.Allow("a"); !d.Allowed || d.Caller != "a" {
		t.Fatalf("a known caller after the overflow: %+v", d)
	}
}

// TestRateLimitReports: refusals ask to be reported at most once a second
// per bucket, counting the refusals the report covers.
func TestRateLimitReports(t *testing.T) {
	fc := clocktest.NewFake(start)
	l := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 0.001, Burst: 1, PerCaller: true}, fc)
	l.Allow("a")
	l.Allow("b")
	reports := map[string]int{}
	var covered int64
	for range 10 {
		for _, caller := range []string{"a", "b"} {
			for range 5 {
				if d := l.Allow(caller); d.Report {
					reports[caller]++
					covered += d.Refused
				}
			}
		}
		fc.Advance(300 * time.Millisecond) // 10 rounds: 2.7s
	}
	// At 0, 1.2 and 2.4 s: three reports each.
	if reports["a"] != 3 || reports["b"] != 3 {
		t.Fatalf("reports %v, want 3 each", reports)
	}
	if covered > 100 || covered < 100-2*4*5 {
		t.Fatalf("reports covered %d refusals of 100", covered)
	}
}

// TestRateLimitEdges: a rate that is not positive refuses every call with
// no wait to give; huge and tiny rates neither overflow nor stall.
func TestRateLimitEdges(t *testing.T) {
	fc := clocktest.NewFake(start)
	for _, rate := range []float64{0, -1, math.NaN()} {
		l := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: rate, Burst: 10}, fc)
		if d := l.Allow("a"); d.Allowed || d.Wait != 0 {
			t.Fatalf("rate %v: %+v, want refused without a wait", rate, d)
		}
	}
	huge := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 1e15, Burst: math.MaxInt32}, fc)
	for range 1000 {
		if !huge.Allow("a").Allowed {
			t.Fatal("a huge rate refused a call")
		}
	}
	tiny := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 1e-12, Burst: math.MaxInt32}, fc)
	if !tiny.Allow("a").Allowed {
		t.Fatal("a tiny rate's burst refused its first call")
	}
	one := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 1e-12, Burst: 1}, fc)
	one.Allow("a")
	if d := one.Allow("a"); d.Allowed || d.Wait != 24*time.Hour {
		t.Fatalf("a tiny rate: %+v, want a wait of a day (the slowest refill)", d)
	}
}

// TestRateLimitConcurrent: callers racing on one bucket take exactly its
// burst, no more (run with -race).
func TestRateLimitConcurrent(t *testing.T) {
	fc := clocktest.NewFake(start)
	l := resilience.NewRateLimiter(resilience.RateLimitConfig{RequestsPerSecond: 1, Burst: 500, PerCaller: true}, fc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			for i := range 400 {
				caller := fmt.Sprint("c", (g+i)%2)
				if l.Allow(caller).Allowed {
					mu.Lock()
					allowed[caller]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed["c0"] != 500 || allowed["c1"] != 500 {
		t.Fatalf("allowed %v, want 500 each", allowed)
	}
}

func TestRateLimitConfigEqual(t *testing.T) {
	a := resilience.RateLimitConfig{RequestsPerSecond: 1, Burst: 2, PerCaller: true, Overrides: map[string]float64{"x": 3}}
	b := a
	b.Overrides = map[string]float64{"x": 3}
	b.MaxCallers = resilience.DefaultMaxCallers
	if !a.Equal(b) {
		t.Fatal("equal configurations differ")
	}
	b.Overrides = map[string]float64{"x": 4}
	if a.Equal(b) {
		t.Fatal("another override is equal")
	}
}

// BenchmarkRateLimiter: Allow on the request path, parallel, for one
// shared bucket, for known callers each with its bucket, and with every
// call refused; 0 allocs/op.
func BenchmarkRateLimiter(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  resilience.RateLimitConfig
	}{
		{"shared", resilience.RateLimitConfig{RequestsPerSecond: 1e9, Burst: 1000}},
		{"per_caller", resilience.RateLimitConfig{RequestsPerSecond: 1e9, Burst: 1000, PerCaller: true}},
		{"refusing", resilience.RateLimitConfig{RequestsPerSecond: 1e-3, Burst: 1, PerCaller: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := resilience.NewRateLimiter(bc.cfg, nil)
			callers := []string{"enrollment", "progress", "admin", "catalog"}
			for _, c := range callers {
				l.Allow(c)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					l.Allow(callers[i&3])
					i++
				}
			})
		})
	}
}
