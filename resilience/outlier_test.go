package resilience_test

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/resilience"
)

// ejections records the OnEject calls of an Outlier.
type ejections struct {
	mu  sync.Mutex
	got []string
}

func (e *ejections) record(addr string, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, fmt.Sprintf("%s until +%v", addr, until.Sub(start)))
}

func (e *ejections) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

func addrs(n int) []string {
	a := make([]string, n)
	for i := range a {
		a[i] = fmt.Sprintf("10.0.0.%d:80", i+1)
	}
	return a
}

func fail(h *resilience.HostHealth, n int, now time.Time) {
	for range n {
		h.Report(true, now)
	}
}

func TestOutlierEjectsAfterConsecutiveFailures(t *testing.T) {
	var ej ejections
	c := clocktest.NewFake(start)
	o := resilience.NewOutlier(resilience.OutlierConfig{
		ConsecutiveFailures: 3, BaseEjection: 30 * time.Second, MaxEjectionPercent: 50, OnEject: ej.record,
	}, c)
	o.SetPool(addrs(3))
	h := o.Host("10.0.0.1:80")

	fail(h, 2, c.Now())
	h.Report(false, c.Now()) // resets the streak
	fail(h, 2, c.Now())
	if !h.Available(c.Now()) {
		t.Fatal("ejected after 2 consecutive failures, want 3")
	}
	fail(h, 1, c.Now())
	if h.Available(c.Now()) {
		t.Fatal("available after 3 consecutive failures, want ejected")
	}
	if got, want := h.EjectedUntil(), start.Add(30*time.Second); !got.Equal(want) {
		t.Errorf("EjectedUntil() = %v, want %v", got, want)
	}
	if got := h.TimesEjected(); got != 1 {
		t.Errorf("TimesEjected() = %d, want 1", got)
	}
	if got, want := ej.list(), []string{"10.0.0.1:80 until +30s"}; !slices.Equal(got, want) {
		t.Errorf("OnEject calls = %q, want %q", got, want)
	}
	if other := o.Host("10.0.0.2:80"); !other.Available(c.Now()) {
		t.Error("another host is not available")
	}
}

func TestOutlierEjectionTimes(t *testing.T) {
	tests := []struct {
		name   string
		base   time.Duration
		quiet  time.Duration // time the host behaves after each return
		expect []time.Duration
	}{
		{name: "grows by base, capped at 300s", base: 100 * time.Second,
			expect: []time.Duration{100 * time.Second, 200 * time.Second, 300 * time.Second, 300 * time.Second}},
		{name: "doubles", base: 30 * time.Second,
			expect: []time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second}},
		{name: "base above 300s is the cap", base: 400 * time.Second,
			expect: []time.Duration{400 * time.Second, 400 * time.Second}},
		{name: "a quiet base forgives one ejection", base: 10 * time.Second, quiet: 10 * time.Second,
			expect: []time.Duration{10 * time.Second, 10 * time.Second, 10 * time.Second}},
		{name: "less than a quiet base forgives nothing", base: 10 * time.Second, quiet: 9 * time.Second,
			expect: []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clocktest.NewFake(start)
			o := resilience.NewOutlier(resilience.OutlierConfig{ConsecutiveFailures: 2, BaseEjection: tt.base, MaxEjectionPercent: 50}, c)
			o.SetPool(addrs(2))
			h := o.Host("10.0.0.1:80")
			for i, want := range tt.expect {
				fail(h, 2, c.Now())
				if got := h.EjectedUntil().Sub(c.Now()); got != want {
					t.Fatalf("ejection %d lasts %v, want %v", i+1, got, want)
				}
				c.Advance(want - 1)
				if h.Available(c.Now()) {
					t.Fatalf("ejection %d: available 1ns before its end", i+1)
				}
				fail(h, 2, c.Now()) // ignored while ejected
				c.Advance(1)
				if !h.Available(c.Now()) || !h.EjectedUntil().IsZero() {
					t.Fatalf("ejection %d: not back after %v", i+1, want)
				}
				h.Report(false, c.Now())
				c.Advance(tt.quiet)
			}
		})
	}
}

// An ejection too long for the clock (UnixNano ends in 2262) saturates
// instead of wrapping into the past, where it would never eject.
func TestOutlierHugeEjectionSaturates(t *testing.T) {
	for _, base := range []time.Duration{2562047 * time.Hour, math.MaxInt64} {
		t.Run(base.String(), func(t *testing.T) {
			var ej ejections
			c := clocktest.NewFake(start)
			o := resilience.NewOutlier(resilience.OutlierConfig{ConsecutiveFailures: 1, BaseEjection: base, MaxEjectionPercent: 50, OnEject: ej.record}, c)
			o.SetPool(addrs(2))
			h := o.Host("10.0.0.1:80")
			fail(h, 1, c.Now())
			if h.Available(c.Now()) {
				t.Fatal("not ejected: the ejection's end wrapped into the past")
			}
			c.Advance(100 * 365 * 24 * time.Hour)
			if h.Available(c.Now()) || !h.EjectedUntil().After(c.Now()) {
				t.Fatalf("ejection over after a century: until %v", h.EjectedUntil())
			}
			if got := ej.list(); len(got) != 1 {
				t.Fatalf("OnEject calls = %q, want 1", got)
			}
		})
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		pool, percent, want int
	}{
		{pool: 1, percent: 100, want: 0}, // never eject every host
		{pool: 2, percent: 10, want: 1},  // at least one
		{pool: 2, percent: 100, want: 1},
		{pool: 3, percent: 10, want: 1},
		{pool: 3, percent: 50, want: 1},
		{pool: 3, percent: 100, want: 2},
		{pool: 10, percent: 0, want: 1}, // default 10%
		{pool: 10, percent: 10, want: 1},
		{pool: 10, percent: 35, want: 3},
		{pool: 10, percent: 50, want: 5},
		{pool: 10, percent: 100, want: 9},
		{pool: 10, percent: 250, want: 9},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d hosts %d%%", tt.pool, tt.percent), func(t *testing.T) {
			c := clocktest.NewFake(start)
			o := resilience.NewOutlier(resilience.OutlierConfig{ConsecutiveFailures: 1, MaxEjectionPercent: tt.percent}, c)
			o.SetPool(addrs(tt.pool))
			hosts := make([]*resilience.HostHealth, tt.pool)
			for i, a := range addrs(tt.pool) {
				hosts[i] = o.Host(a)
			}
			for range 3 {
				for _, h := range hosts {
					h.Report(true, c.Now())
				}
			}
			if got := countEjected(hosts, c.Now()); got != tt.want {
				t.Fatalf("%d hosts ejected, want %d", got, tt.want)
			}
			// Once the ejections end, the others get their turn.
			c.Advance(resilience.DefaultBaseEjection)
			fail(hosts[len(hosts)-1], 1, c.Now())
			if tt.want > 0 && hosts[len(hosts)-1].Available(c.Now()) {
				t.Error("last host not ejected once the first ejections ended")
			}
		})
	}
}

func countEjected(hosts []*resilience.HostHealth, now time.Time) int {
	n := 0
	for _, h := range hosts {
		if !h.Available(now) {
			n++
		}
	}
	return n
}

func TestOutlierPool(t *testing.T) {
	c := clocktest.NewFake(start)
	o := resilience.NewOutlier(resilience.OutlierConfig{ConsecutiveFailures: 1, MaxEjectionPercent: 100}, c)
	a := o.Host("a:1") // Host adds to the pool
	if o.Host("a:1") != a {
		t.Fatal("Host returned a new handle for the same address")
	}
	fail(a, 1, c.Now())
	if !a.Available(c.Now()) {
		t.Fatal("the only host of a pool was ejected")
	}
	b := o.Host("b:1")
	fail(a, 1, c.Now())
	if a.Available(c.Now()) {
		t.Fatal("a not ejected from a pool of two")
	}

	o.SetPool([]string{"a:1", "c:1"}) // b forgotten, a kept with its state
	if o.Host("a:1") != a {
		t.Error("SetPool replaced the handle of a kept address")
	}
	if a.Available(c.Now()) {
		t.Error("SetPool cleared the ejection of a kept address")
	}
	fail(b, 5, c.Now())
	if !b.Available(c.Now()) {
		t.Error("a forgotten handle was ejected")
	}
	cc := o.Host("c:1")
	fail(cc, 1, c.Now())
	if !cc.Available(c.Now()) {
		t.Error("c ejected while a is: that is every host of the pool")
	}
	if o.Host("b:1") == b { // adds b again, with a new handle
		t.Error("Host returned a forgotten handle")
	}
}

func TestOutlierConcurrent(t *testing.T) {
	c := clocktest.NewFake(start)
	var ej ejections
	o := resilience.NewOutlier(resilience.OutlierConfig{ConsecutiveFailures: 3, MaxEjectionPercent: 50, OnEject: ej.record}, c)
	all := addrs(10)
	o.SetPool(all)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				h := o.Host(all[(w+i)%len(all)])
				now := c.Now()
				if h.Available(now) {
					h.Report(i%7 != 0, now)
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			o.SetPool(all[:10-i%3]) // shrink and grow again
			c.Advance(time.Second)
		}
		o.SetPool(all)
	})
	wg.Wait()
	hosts := make([]*resilience.HostHealth, len(all))
	for i, a := range all {
		hosts[i] = o.Host(a)
	}
	if got := countEjected(hosts, c.Now()); got > 5 {
		t.Errorf("%d of 10 hosts ejected, want at most 5", got)
	}
	if len(ej.list()) == 0 {
		t.Error("no ejection at all")
	}
}

func TestNilHostHealth(t *testing.T) {
	var h *resilience.HostHealth
	h.Report(true, start)
	if !h.Available(start) || !h.EjectedUntil().IsZero() || h.TimesEjected() != 0 || h.Addr() != "" {
		t.Error("nil HostHealth is not an always available host")
	}
}

func BenchmarkHostHealthAvailable(b *testing.B) {
	o := resilience.NewOutlier(resilience.OutlierConfig{}, nil)
	h := o.Host("10.0.0.1:80")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		h.Available(now)
	}
}

func BenchmarkHostHealthReport(b *testing.B) {
	o := resilience.NewOutlier(resilience.OutlierConfig{ConsecutiveFailures: 5}, nil)
	o.SetPool(addrs(3))
	h := o.Host("10.0.0.1:80")
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.Report(i%4 == 0, now) // failures, never 5 in a row
		i++
	}
}
