package core

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

// compileBreaker compiles billing with the circuit_breaker block cb over
// old and returns its service breaker and the registry for the next
// compilation.
func compileBreaker(t *testing.T, env *Env, old *Registry, cb string) (*Destination, *Registry) {
	t.Helper()
	doc, err := policy.Parse([]byte("services:\n  billing:\n    endpoints: [{address: 10.0.0.1:80}]\n    circuit_breaker: " + cb + "\n"))
	if err != nil {
		t.Fatalf("%s: %v", cb, err)
	}
	snap, err := policy.NewSnapshot(doc, "test")
	if err != nil {
		t.Fatalf("%s: %v", cb, err)
	}
	dests, next := Compile(env, old, snap, discovery.StaticOf(snap))
	return dests["billing"], next
}

// TestCompileKeepsBreakerState: a reload whose breaker block is the same
// (once resolved) keeps the breaker and its state; one that changes the
// form or any field of it gets a fresh, closed breaker on the env's clock.
func TestCompileKeepsBreakerState(t *testing.T) {
	const rate = "{failure_rate: 0.5, window: 10s, min_calls: 2, open_for: 1m}"
	for _, tc := range []struct {
		name, from, to string
		kept           bool
	}{
		{"same rate form", rate, rate, true},
		{"defaults written out", "{failure_rate: 0.5, min_calls: 2, open_for: 1m}", "{failure_rate: 0.5, window: 10s, min_calls: 2, open_for: 1m, half_open_requests: 1}", true},
		{"same consecutive form", "{consecutive_failures: 2, open_for: 1m}", "{consecutive_failures: 2, open_for: 1m}", true},
		{"consecutive to rate", "{consecutive_failures: 2, open_for: 1m}", rate, false},
		{"rate to consecutive", rate, "{consecutive_failures: 2, open_for: 1m}", false},
		{"failure_rate", rate, "{failure_rate: 0.6, window: 10s, min_calls: 2, open_for: 1m}", false},
		{"window", rate, "{failure_rate: 0.5, window: 20s, min_calls: 2, open_for: 1m}", false},
		{"min_calls", rate, "{failure_rate: 0.5, window: 10s, min_calls: 3, open_for: 1m}", false},
		{"open_for", rate, "{failure_rate: 0.5, window: 10s, min_calls: 2, open_for: 2m}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := telemetry.New(nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = in.Close() })
			fc := clocktest.NewFake(epoch)
			env := &Env{Clock: fc, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Instr: in}
			d, reg := compileBreaker(t, env, NewRegistry(), tc.from)
			b := d.Breaker
			for range 2 {
				tk, err := b.Allow()
				if err != nil {
					t.Fatal(err)
				}
				tk.Done(true)
			}
			if got := b.State(); got != "open" {
				t.Fatalf("before the reload: %s, want open", got)
			}
			d2, _ := compileBreaker(t, env, reg, tc.to)
			if kept := d2.Breaker == b; kept != tc.kept {
				t.Fatalf("breaker kept %v, want %v", kept, tc.kept)
			}
			if d2.Routes[0].Breaker != d2.Breaker {
				t.Fatal("the route does not share the service's breaker")
			}
			want := "closed"
			if tc.kept {
				want = "open"
			}
			if got := d2.Breaker.State(); got != want {
				t.Fatalf("after the reload: %s, want %s", got, want)
			}
			// On the env's clock: half-open once the fake time passes open_for.
			fc.Advance(3 * time.Minute)
			if got := b.State(); got != "half-open" {
				t.Fatalf("after open_for on the env's clock: %s, want half-open", got)
			}
		})
	}
}
