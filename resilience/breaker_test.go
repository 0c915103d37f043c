package resilience_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/resilience"
)

// openFor is short because the breaker reads the real time; tests wait for the
// open -> half-open transition by polling, never by sleeping a fixed time.
const openFor = 20 * time.Millisecond

// waitState polls b until it reports want, failing after a generous bound.
func waitState(t *testing.T, b *resilience.Breaker, want string) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for b.State() != want {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("breaker still %q, want %q", b.State(), want)
		}
	}
}

// attempt runs one attempt through b and reports whether it was allowed.
func attempt(t *testing.T, b *resilience.Breaker, failed bool) bool {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		if !errors.Is(err, resilience.ErrBreakerOpen) {
			t.Fatalf("Allow() = %v, want an error wrapping ErrBreakerOpen", err)
		}
		return false
	}
	done.Done(failed)
	return true
}

// transitions records the onChange calls of a breaker.
type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) record(name, from, to string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.got = append(tr.got, name+":"+from+"->"+to)
}

func (tr *transitions) list() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.got)
}

func TestBreakerTripsAfterConsecutiveFailures(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		want     int // consecutive failures that trip it
	}{
		{name: "1", failures: 1, want: 1},
		{name: "3", failures: 3, want: 3},
		{name: "5", failures: 5, want: 5},
		{name: "zero means 5", failures: 0, want: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: tt.failures, OpenFor: time.Hour}, nil)
			// want-1 failures, a success, want-1 failures: never tripped.
			for range 2 {
				for range tt.want - 1 {
					if !attempt(t, b, true) {
						t.Fatal("rejected before the threshold")
					}
				}
				if got := b.State(); got != "closed" {
					t.Fatalf("State() after %d failures = %q, want closed", tt.want-1, got)
				}
				if !attempt(t, b, false) {
					t.Fatal("rejected a success before the threshold")
				}
			}
			for i := range tt.want {
				if !attempt(t, b, true) {
					t.Fatalf("failure %d rejected", i+1)
				}
			}
			if got := b.State(); got != "open" {
				t.Fatalf("State() after %d consecutive failures = %q, want open", tt.want, got)
			}
			if _, err := b.Allow(); !errors.Is(err, resilience.ErrBreakerOpen) {
				t.Fatalf("Allow() when open = %v; want ErrBreakerOpen", err)
			}
		})
	}
}

func TestBreakerHalfOpenProbes(t *testing.T) {
	tests := []struct {
		name   string
		probes int
	}{
		{name: "1 probe", probes: 1},
		{name: "3 probes", probes: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr transitions
			b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 1, OpenFor: openFor, HalfOpenRequests: tt.probes}, tr.record)
			attempt(t, b, true)
			waitState(t, b, "half-open")

			// Concurrent callers: exactly tt.probes get through.
			const callers = 16
			var (
				mu       sync.Mutex
				dones    []resilience.Ticket
				rejected int
				wg       sync.WaitGroup
			)
			for range callers {
				wg.Go(func() {
					done, err := b.Allow()
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						if !errors.Is(err, resilience.ErrBreakerOpen) {
							t.Errorf("Allow() = %v, want ErrBreakerOpen", err)
						}
						rejected++
						return
					}
					dones = append(dones, done)
				})
			}
			wg.Wait()
			if len(dones) != tt.probes || rejected != callers-tt.probes {
				t.Fatalf("half-open let %d through and rejected %d, want %d and %d", len(dones), rejected, tt.probes, callers-tt.probes)
			}
			// All but the last probe succeed: still half-open, still full.
			for _, done := range dones[:len(dones)-1] {
				done.Done(false)
			}
			if got := b.State(); got != "half-open" {
				t.Fatalf("State() with one probe pending = %q, want half-open", got)
			}
			const wantErr = "resilience: circuit breaker is open: billing: half-open, every probe in flight"
			if _, err := b.Allow(); !errors.Is(err, resilience.ErrBreakerOpen) || err.Error() != wantErr {
				t.Fatalf("Allow() with every probe used = %v, want %s", err, wantErr)
			}
			dones[len(dones)-1].Done(false)
			if got := b.State(); got != "closed" {
				t.Fatalf("State() after %d successful probes = %q, want closed", tt.probes, got)
			}
			want := []string{"billing:closed->open", "billing:open->half-open", "billing:half-open->closed"}
			if got := tr.list(); !slices.Equal(got, want) {
				t.Errorf("onChange calls = %q, want %q", got, want)
			}
		})
	}
}

func TestBreakerReopensOnFailedProbe(t *testing.T) {
	var tr transitions
	b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 2, OpenFor: openFor, HalfOpenRequests: 2}, tr.record)
	attempt(t, b, true)
	attempt(t, b, true)
	waitState(t, b, "half-open")
	ok, failed := mustAllow(t, b), mustAllow(t, b)
	ok(false)
	failed(true)
	if got := b.State(); got != "open" {
		t.Fatalf("State() after a failed probe = %q, want open", got)
	}
	waitState(t, b, "half-open")
	attempt(t, b, false)
	attempt(t, b, false)
	if got := b.State(); got != "closed" {
		t.Fatalf("State() = %q, want closed", got)
	}
	want := []string{
		"billing:closed->open", "billing:open->half-open", "billing:half-open->open",
		"billing:open->half-open", "billing:half-open->closed",
	}
	if got := tr.list(); !slices.Equal(got, want) {
		t.Errorf("onChange calls = %q, want %q", got, want)
	}
}

func TestBreakerReleasedProbeProvesNothing(t *testing.T) {
	var tr transitions
	b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 1, OpenFor: openFor, HalfOpenRequests: 1}, tr.record)
	attempt(t, b, true)
	waitState(t, b, "half-open")

	probe, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow() in half-open = %v, want the probe", err)
	}
	if _, err := b.Allow(); !errors.Is(err, resilience.ErrBreakerOpen) {
		t.Fatalf("Allow() with the probe in flight = %v, want ErrBreakerOpen", err)
	}
	probe.Release() // its caller canceled it
	if got := b.State(); got != "half-open" {
		t.Fatalf("State() after a released probe = %q, want half-open", got)
	}
	// The slot went back: the next attempt probes, and its success closes.
	next := mustAllow(t, b)
	next(false)
	if got := b.State(); got != "closed" {
		t.Fatalf("State() after the next probe succeeded = %q, want closed", got)
	}
	want := []string{"billing:closed->open", "billing:open->half-open", "billing:half-open->closed"}
	if got := tr.list(); !slices.Equal(got, want) {
		t.Errorf("onChange calls = %q, want %q", got, want)
	}
}

func TestBreakerReleaseKeepsTheFailureStreak(t *testing.T) {
	b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 3, OpenFor: time.Hour}, nil)
	attempt(t, b, true)
	attempt(t, b, true)
	released, err := b.Allow()
	if err != nil {
		t.Fatal(err)
	}
	released.Release()
	if got := b.State(); got != "closed" {
		t.Fatalf("State() = %q, want closed", got)
	}
	attempt(t, b, true)
	if got := b.State(); got != "open" {
		t.Fatalf("State() after 2 failures, a released attempt and a failure = %q, want open (3 in a row)", got)
	}
}

func mustAllow(t *testing.T, b *resilience.Breaker) func(bool) {
	t.Helper()
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("Allow() = %v, want allowed", err)
	}
	return done.Done
}

func TestNilBreaker(t *testing.T) {
	var b *resilience.Breaker
	done, err := b.Allow()
	if err != nil {
		t.Fatalf("nil Breaker: Allow() = %v", err)
	}
	done.Done(true)
	done.Release()
	if got := b.State(); got != "closed" {
		t.Errorf("nil Breaker: State() = %q, want closed", got)
	}
}

func BenchmarkBreakerAllow(b *testing.B) {
	br := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 5}, nil)
	b.ReportAllocs()
	for b.Loop() {
		done, err := br.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done.Done(false)
	}
}

// TestBreakerIgnoresReportsOfAnEarlierGeneration: an attempt allowed before
// a transition reports into nothing: its success neither closes a
// half-open breaker nor resets the streak of a later closed one.
func TestBreakerIgnoresReportsOfAnEarlierGeneration(t *testing.T) {
	b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 2, OpenFor: openFor, HalfOpenRequests: 1}, nil)
	early := mustAllow(t, b) // allowed while closed, reports late
	attempt(t, b, true)
	attempt(t, b, true)
	if got := b.State(); got != "open" {
		t.Fatalf("State() = %q, want open", got)
	}
	waitState(t, b, "half-open")
	early(false)
	if got := b.State(); got != "half-open" {
		t.Fatalf("State() after a success of the closed generation = %q, want half-open", got)
	}
	if !attempt(t, b, false) {
		t.Fatal("the probe was rejected")
	}
	if got := b.State(); got != "closed" {
		t.Fatalf("State() after the probe = %q, want closed", got)
	}
	// Reports of the closed generation in force count: an attempt allowed
	// before a failure, failing after it, completes a streak of 2.
	waitingProbe := func() func(bool) {
		attempt(t, b, true)
		attempt(t, b, true)
		waitState(t, b, "half-open")
		return mustAllow(t, b)
	}
	probe := waitingProbe()
	probe(false) // closes
	late := mustAllow(t, b)
	attempt(t, b, true)
	late(true) // the streak is 2
	if got := b.State(); got != "open" {
		t.Fatalf("State() after 2 failures in a row = %q, want open", got)
	}
}

// TestBreakerConcurrentReports runs allows and reports from many
// goroutines (for the race detector) and checks the breaker ends in a
// state it can be in: a success streak at the end closes it.
func TestBreakerConcurrentReports(t *testing.T) {
	b := resilience.NewBreaker("billing", resilience.BreakerConfig{ConsecutiveFailures: 3, OpenFor: time.Nanosecond, HalfOpenRequests: 2}, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
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
				_ = b.State()
			}
		})
	}
	wg.Wait()
	for range 100 {
		if b.State() == "closed" {
			break
		}
		if tk, err := b.Allow(); err == nil {
			tk.Done(false)
		}
	}
	if got := b.State(); got != "closed" {
		t.Fatalf("State() after successes = %q, want closed", got)
	}
}
