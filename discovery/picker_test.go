package discovery_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
)

var (
	now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	lbs = []string{discovery.RoundRobin, discovery.LeastRequest, discovery.Random}
)

// health is a switchable Availability.
type health struct{ down atomic.Bool }

func (h *health) Available(time.Time) bool { return !h.down.Load() }

// ejectedUntil is available from a point in time on, like an ejected host.
type ejectedUntil time.Time

func (e ejectedUntil) Available(now time.Time) bool { return !now.Before(time.Time(e)) }

// newHosts returns n hosts named h0..h(n-1) and their switchable health.
func newHosts(n int) ([]*discovery.Host, []*health) {
	hosts := make([]*discovery.Host, n)
	hs := make([]*health, n)
	for i := range hosts {
		hs[i] = &health{}
		hosts[i] = discovery.NewHost(discovery.Endpoint{Address: fmt.Sprintf("h%d:80", i)}, hs[i])
	}
	return hosts, hs
}

func mustPicker(t testing.TB, lb string, hosts []*discovery.Host) discovery.Picker {
	t.Helper()
	p, err := discovery.NewPicker(lb, hosts)
	if err != nil {
		t.Fatalf("NewPicker(%q): %v", lb, err)
	}
	return p
}

// countPicks picks n times and counts the picks per address.
func countPicks(p discovery.Picker, n int, at time.Time) map[string]int {
	counts := map[string]int{}
	for range n {
		counts[p.Pick(at).Address]++
	}
	return counts
}

func TestNewPicker(t *testing.T) {
	hosts, _ := newHosts(2)
	for _, lb := range []string{"", discovery.RoundRobin, discovery.LeastRequest, discovery.Random} {
		if _, err := discovery.NewPicker(lb, hosts); err != nil {
			t.Errorf("NewPicker(%q): %v", lb, err)
		}
	}
	for _, lb := range []string{"MAGLEV", "ROUND_ROBIN", "round-robin"} {
		p, err := discovery.NewPicker(lb, hosts)
		if !errors.Is(err, discovery.ErrUnknownLoadBalancer) || p != nil {
			t.Errorf("NewPicker(%q) = %v, %v; want nil, ErrUnknownLoadBalancer", lb, p, err)
		}
	}
}

func TestPickNoHosts(t *testing.T) {
	for _, lb := range lbs {
		for _, hosts := range [][]*discovery.Host{nil, {}, {nil, nil}} {
			if h := mustPicker(t, lb, hosts).Pick(now); h != nil {
				t.Errorf("%s over %v: Pick = %v, want nil", lb, hosts, h)
			}
		}
	}
}

func TestPickerCopiesHosts(t *testing.T) {
	hosts, _ := newHosts(1)
	p := mustPicker(t, discovery.RoundRobin, hosts)
	hosts[0] = discovery.NewHost(discovery.Endpoint{Address: "other:80"}, nil)
	if got := p.Pick(now).Address; got != "h0:80" {
		t.Errorf("Pick after the caller changed its slice = %s, want h0:80", got)
	}
}

func TestRoundRobinExactlyEven(t *testing.T) {
	const k = 97
	for n := 1; n <= 7; n++ {
		t.Run(fmt.Sprintf("%d hosts", n), func(t *testing.T) {
			hosts, _ := newHosts(n)
			counts := countPicks(mustPicker(t, discovery.RoundRobin, hosts), n*k, now)
			for _, h := range hosts {
				if counts[h.Address] != k {
					t.Errorf("%s picked %d times in %d picks, want %d (counts %v)", h.Address, counts[h.Address], n*k, k, counts)
				}
			}
		})
	}
}

func TestRoundRobinInTurn(t *testing.T) {
	hosts, _ := newHosts(4)
	p := mustPicker(t, "", hosts)
	first := p.Pick(now)
	i := 0
	for ; hosts[i] != first; i++ {
	}
	for step := 1; step < 12; step++ {
		want := hosts[(i+step)%len(hosts)]
		if got := p.Pick(now); got != want {
			t.Fatalf("pick %d = %s, want %s", step, got.Address, want.Address)
		}
	}
}

func TestUnavailableHostsSkipped(t *testing.T) {
	tests := []struct {
		name string
		n    int
		down []int
	}{
		{name: "one of two", n: 2, down: []int{0}},
		{name: "first of three", n: 3, down: []int{0}},
		{name: "middle of three", n: 3, down: []int{1}},
		{name: "all but one of five", n: 5, down: []int{0, 1, 3, 4}},
		{name: "half of ten", n: 10, down: []int{0, 2, 4, 6, 8}},
	}
	for _, lb := range lbs {
		for _, tt := range tests {
			t.Run(lb+"/"+tt.name, func(t *testing.T) {
				hosts, hs := newHosts(tt.n)
				down := map[string]bool{}
				for _, i := range tt.down {
					hs[i].down.Store(true)
					down[hosts[i].Address] = true
				}
				p := mustPicker(t, lb, hosts)
				counts := countPicks(p, 200*tt.n, now)
				for addr, c := range counts {
					if down[addr] {
						t.Errorf("unavailable %s picked %d times", addr, c)
					}
				}
				if up := tt.n - len(tt.down); len(counts) != up {
					t.Errorf("picked %d distinct hosts, want all %d available ones: %v", len(counts), up, counts)
				}
			})
		}
	}
}

func TestAvailabilityUsesNow(t *testing.T) {
	back := now.Add(time.Minute)
	ejected := discovery.NewHost(discovery.Endpoint{Address: "ejected:80"}, ejectedUntil(back))
	ok := discovery.NewHost(discovery.Endpoint{Address: "ok:80"}, nil)
	for _, lb := range lbs {
		p := mustPicker(t, lb, []*discovery.Host{ejected, ok})
		if c := countPicks(p, 50, now); c["ejected:80"] != 0 {
			t.Errorf("%s: ejected host picked %d times before it came back", lb, c["ejected:80"])
		}
		if c := countPicks(p, 200, back); c["ejected:80"] == 0 {
			t.Errorf("%s: host never picked after its ejection ended: %v", lb, c)
		}
	}
}

func TestPanicMode(t *testing.T) {
	for _, lb := range lbs {
		for _, n := range []int{1, 2, 5} {
			t.Run(fmt.Sprintf("%s/%d hosts", lb, n), func(t *testing.T) {
				hosts, hs := newHosts(n)
				for _, h := range hs {
					h.down.Store(true)
				}
				p := mustPicker(t, lb, hosts)
				counts := countPicks(p, 100*n, now)
				if counts[""] != 0 {
					t.Fatalf("Pick returned nil with %d unavailable hosts", n)
				}
				if len(counts) != n {
					t.Errorf("panic mode picked %d distinct hosts of %d: %v", len(counts), n, counts)
				}
			})
		}
	}
}

// TestRandomUniform checks a loose chi-square bound: with 9 degrees of
// freedom, a statistic above 60 has a probability far below 1e-9 for a
// uniform choice, while a biased picker exceeds it by far.
func TestRandomUniform(t *testing.T) {
	tests := []struct {
		name string
		n    int
		down []int
	}{
		{name: "all available", n: 10},
		// Ten available hosts, two unavailable ones placed so that a
		// scan-forward fallback would double the share of 1 and 6.
		{name: "some unavailable", n: 12, down: []int{0, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts, hs := newHosts(tt.n)
			for _, i := range tt.down {
				hs[i].down.Store(true)
			}
			const picks = 50_000
			counts := countPicks(mustPicker(t, discovery.Random, hosts), picks, now)
			up := tt.n - len(tt.down)
			if len(counts) != up {
				t.Fatalf("picked %d distinct hosts, want %d: %v", len(counts), up, counts)
			}
			expected := float64(picks) / float64(up)
			chi2 := 0.0
			for _, c := range counts {
				d := float64(c) - expected
				chi2 += d * d / expected
			}
			if chi2 > 60 {
				t.Errorf("chi-square %.1f over %d hosts is not uniform: %v", chi2, up, counts)
			}
		})
	}
}

func TestLeastRequestPrefersLessLoaded(t *testing.T) {
	t.Run("two hosts: always the idle one", func(t *testing.T) {
		hosts, _ := newHosts(2)
		hosts[0].Begin()
		p := mustPicker(t, discovery.LeastRequest, hosts)
		if c := countPicks(p, 100, now); c["h1:80"] != 100 {
			t.Errorf("picks %v, want all on the idle h1", c)
		}
	})
	t.Run("ties are broken at random", func(t *testing.T) {
		hosts, _ := newHosts(2)
		c := countPicks(mustPicker(t, discovery.LeastRequest, hosts), 2000, now)
		if c["h0:80"] < 800 || c["h1:80"] < 800 {
			t.Errorf("tied picks %v, want both near 1000", c)
		}
	})
	t.Run("the busiest of many is never picked", func(t *testing.T) {
		// With P2C the most loaded host loses every comparison; the least
		// loaded wins every comparison it takes part in (2/n of them).
		hosts, _ := newHosts(5)
		for i, h := range hosts {
			for range i * 2 {
				h.Begin()
			}
		}
		c := countPicks(mustPicker(t, discovery.LeastRequest, hosts), 5000, now)
		if c["h4:80"] != 0 {
			t.Errorf("the busiest host was picked %d times", c["h4:80"])
		}
		if c["h0:80"] < 1600 {
			t.Errorf("the idle host was picked %d of 5000 times, want about 2000: %v", c["h0:80"], c)
		}
	})
	t.Run("load is followed as it changes", func(t *testing.T) {
		hosts, _ := newHosts(2)
		p := mustPicker(t, discovery.LeastRequest, hosts)
		for range 100 {
			p.Pick(now).Begin() // every pick goes to the less loaded host
		}
		if a, b := hosts[0].InFlight(), hosts[1].InFlight(); a != 50 || b != 50 {
			t.Errorf("in flight after 100 picks: %d and %d, want 50 and 50", a, b)
		}
	})
}

func TestHostInFlight(t *testing.T) {
	h := discovery.NewHost(discovery.Endpoint{Address: "a:1"}, nil)
	if !h.Available(now) {
		t.Error("a host without Health is unavailable")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				h.Begin()
			}
			for range 999 {
				h.End()
			}
		})
	}
	wg.Wait()
	if got := h.InFlight(); got != 8 {
		t.Errorf("InFlight = %d, want 8", got)
	}
}

// TestConcurrentPicks runs pickers from many goroutines while hosts go up
// and down; run with -race.
func TestConcurrentPicks(t *testing.T) {
	for _, lb := range lbs {
		t.Run(lb, func(t *testing.T) {
			hosts, hs := newHosts(5)
			p := mustPicker(t, lb, hosts)
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					hs[i%len(hs)].down.Store(i%3 == 0)
				}
			})
			var picks atomic.Int64
			var workers sync.WaitGroup
			for range 8 {
				workers.Go(func() {
					for range 2000 {
						h := p.Pick(now)
						if h == nil {
							t.Error("Pick returned nil")
							return
						}
						h.Begin()
						h.End()
						picks.Add(1)
					}
				})
			}
			workers.Wait()
			close(stop)
			wg.Wait()
			for _, h := range hosts {
				if f := h.InFlight(); f != 0 {
					t.Errorf("%s in flight %d after all requests ended", h.Address, f)
				}
			}
			if picks.Load() != 8*2000 {
				t.Errorf("%d picks, want %d", picks.Load(), 8*2000)
			}
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	for _, lb := range lbs {
		hosts, hs := newHosts(6)
		hs[2].down.Store(true)
		p := mustPicker(t, lb, hosts)
		if a := testing.AllocsPerRun(1000, func() { p.Pick(now) }); a != 0 {
			t.Errorf("%s: %v allocations per Pick, want 0", lb, a)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, lb := range lbs {
		for _, n := range []int{3, 50} {
			for _, ejected := range []int{0, n / 3} {
				b.Run(fmt.Sprintf("%s/hosts=%d/ejected=%d", lb, n, ejected), func(b *testing.B) {
					hosts, hs := newHosts(n)
					for i := range ejected {
						hs[i*n/ejected].down.Store(true)
					}
					p := mustPicker(b, lb, hosts)
					b.Run("serial", func(b *testing.B) {
						b.ReportAllocs()
						for b.Loop() {
							p.Pick(now)
						}
					})
					b.Run("parallel", func(b *testing.B) {
						b.ReportAllocs()
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								h := p.Pick(now)
								h.Begin()
								h.End()
							}
						})
					})
				})
			}
		}
	}
}

// BenchmarkHostBeginEnd measures Begin/End on distinct hosts from parallel
// goroutines while their neighbours' fields are read, the pattern that
// false sharing would slow down.
func BenchmarkHostBeginEnd(b *testing.B) {
	hosts, _ := newHosts(64)
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		h := hosts[next.Add(1)%int64(len(hosts))]
		for pb.Next() {
			h.Begin()
			if !h.Available(now) {
				b.Error("unavailable")
			}
			h.End()
		}
	})
}
