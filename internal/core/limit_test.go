package core

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// withLimit gives f's destination a concurrency limit of cfg.
func (f *fixture) withLimit(cfg resilience.LimiterConfig) *resilience.Limiter {
	f.dest.Limiter = resilience.NewLimiter("billing", cfg, f.env.Clock)
	f.dest.Shed = f.env.Instr.ShedCounter("billing")
	return f.dest.Limiter
}

func TestLimitRefusesAtOnce(t *testing.T) {
	f := newFixture(t, settings{eff: policy.Effective{Attempts: 3}, auto: true,
		breaker: &resilience.BreakerConfig{ConsecutiveFailures: 1}})
	l := f.withLimit(resilience.LimiterConfig{Max: 1})
	held, err := l.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSender{script: always(status(200))}
	_, o, err := f.call(context.Background(), get, s)
	ce := callErr(err)
	if ce == nil || ce.Layer != LayerOverload || !errors.Is(err, resilience.ErrOverload) {
		t.Fatalf("err %v, want a CallError of layer overload wrapping ErrOverload", err)
	}
	if s.attempts() != 0 || o.Answer != nil || ce.Endpoint != "" {
		t.Errorf("%d attempts sent (endpoint %q), want none", s.attempts(), ce.Endpoint)
	}
	if got := f.route.Breaker.State(); got != "closed" {
		t.Errorf("breaker %s after a shed attempt, want closed: it hears nothing", got)
	}
	if got := f.dest.Shed; got == nil {
		t.Fatal("no shed counter")
	}
	held.Release()
	if _, _, err := f.call(context.Background(), get, s); err != nil || s.attempts() != 1 {
		t.Fatalf("after the slot freed: err %v, %d attempts; want an answer", err, s.attempts())
	}
	if l.InFlight() != 0 {
		t.Errorf("%d slots held after the calls ended", l.InFlight())
	}
}

func TestLimitRefusedRetry(t *testing.T) {
	quick := policy.Effective{Attempts: 3, BackoffInitial: time.Millisecond, BackoffMax: time.Millisecond}
	for _, tc := range []struct {
		name        string
		first       Outcome
		wantAnswer  any
		wantLayer   Layer
		wantInCause string
	}{
		{"an answer is returned as is", status(503), 503, "", ""},
		{"a failure fails at layer overload", failure(resilience.ErrConnect, LayerConnect), nil, LayerOverload,
			"has its limit of 1 attempts in flight; last attempt: core: connect: connect failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{eff: quick, auto: true})
			l := f.withLimit(resilience.LimiterConfig{Max: 1})
			// During the backoff, another call takes the freed slot.
			var other resilience.Permit
			f.auto.onWait = func() {
				var err error
				if other, err = l.Acquire(context.Background()); err != nil {
					t.Error(err)
				}
			}
			first := tc.first
			first.Hint = Hint{Kind: HintExactly, Wait: time.Millisecond} // a timer for onWait
			s := &fakeSender{script: sequence(first, status(200))}
			c, o, err := f.call(context.Background(), get, s)
			if s.attempts() != 1 || c.Attempts != 2 {
				t.Fatalf("%d attempts sent, %d counted; want 1 sent, the refused retry counted", s.attempts(), c.Attempts)
			}
			if o.Answer != tc.wantAnswer {
				t.Errorf("answer %v, want %v (err %v)", o.Answer, tc.wantAnswer, err)
			}
			if len(s.discarded) != 0 {
				t.Errorf("discarded %v: the returned answer must not be", s.discarded)
			}
			ce := callErr(err)
			switch {
			case tc.wantLayer == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case tc.wantLayer != "" && (ce == nil || ce.Layer != tc.wantLayer):
				t.Errorf("err %v, want layer %s", err, tc.wantLayer)
			case tc.wantInCause != "" && !strings.Contains(ce.Err.Error(), tc.wantInCause):
				t.Errorf("cause %q, want it to say %q", ce.Err, tc.wantInCause)
			}
			other.Release()
			if l.InFlight() != 0 {
				t.Errorf("%d slots held", l.InFlight())
			}
		})
	}
}

func TestLimitRetryTakesSlotThenDiscards(t *testing.T) {
	quick := policy.Effective{Attempts: 3, BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}
	f := newFixture(t, settings{eff: quick, auto: true})
	l := f.withLimit(resilience.LimiterConfig{Max: 1})
	s := &fakeSender{script: sequence(status(503), status(503), status(200))}
	_, o, err := f.call(context.Background(), get, s)
	if err != nil || o.Answer != 200 || s.attempts() != 3 || len(s.discarded) != 2 {
		t.Fatalf("answer %v err %v, %d attempts, %d discarded; want 200 after 3, 2 discarded", o.Answer, err, s.attempts(), len(s.discarded))
	}
	if l.InFlight() != 0 {
		t.Errorf("%d slots held", l.InFlight())
	}
}

func TestLimitQueue(t *testing.T) {
	for _, tc := range []struct {
		name      string
		free      bool // the held slot is given back while the call waits
		wantLayer Layer
	}{
		{"a slot frees: sent", true, ""},
		{"the deadline ends in the queue: timeout", false, LayerTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{})
			l := f.withLimit(resilience.LimiterConfig{Max: 1, MaxWait: time.Hour}) // the fake clock never ends the wait
			held, err := l.Acquire(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if !tc.free {
				ctx, cancel = context.WithTimeout(ctx, 10*time.Millisecond)
			}
			defer cancel()
			s := &fakeSender{script: always(status(200))}
			done := make(chan error, 1)
			go func() {
				_, _, err := f.call(ctx, get, s)
				done <- err
			}()
			for l.Waiting() != 1 {
				time.Sleep(time.Millisecond) // until the call is queued
			}
			if tc.free {
				held.Release()
			}
			err = <-done
			if ce := callErr(err); (tc.wantLayer == "" && err != nil) || (tc.wantLayer != "" && (ce == nil || ce.Layer != tc.wantLayer)) {
				t.Fatalf("err %v, want layer %q", err, tc.wantLayer)
			}
			if want := map[bool]int{true: 1, false: 0}[tc.free]; s.attempts() != want {
				t.Errorf("%d attempts sent, want %d", s.attempts(), want)
			}
			if !tc.free {
				held.Release()
			}
			if l.InFlight() != 0 || l.Waiting() != 0 {
				t.Errorf("%d in flight, %d waiting after the call", l.InFlight(), l.Waiting())
			}
		})
	}
}

func TestLimitLearns(t *testing.T) {
	for _, tc := range []struct {
		name   string
		req    Request
		answer Outcome
		lower  bool // the limit must fall; else it must stay
	}{
		{"overload answers lower it", get, status(503), true},
		{"a gRPC resource-exhausted lowers it", get, Outcome{Result: resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeResourceExhausted}}, true},
		{"the caller's cancellations teach nothing", get, canceled, false},
		{"connect failures teach nothing", get, failure(resilience.ErrConnect, LayerConnect), false},
		{"a stream's attempts teach nothing", Request{Path: "/s", Method: "POST", RPC: true, Stream: true}, status(503), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{auto: true})
			l := f.withLimit(resilience.LimiterConfig{Adaptive: true, Min: 1, Initial: 50, Max: 100})
			s := &fakeSender{script: func(*Attempt) Outcome {
				f.clk.Advance(time.Millisecond)
				return tc.answer
			}}
			// Calls in flight together: each one's attempt holds its slot
			// while the next ones start.
			for range 20 {
				_, _, _ = f.call(context.Background(), tc.req, s)
			}
			if got := l.Limit(); tc.lower != (got < 50) {
				t.Errorf("limit %d after %d attempts, from 50 (want lowered: %v)", got, s.attempts(), tc.lower)
			}
		})
	}
}

func TestLimitKeptAcrossReloads(t *testing.T) {
	compile := func(reg *Registry, concurrency string) (*Destination, *Registry) {
		t.Helper()
		doc, err := policy.Parse([]byte("services:\n  billing:\n    endpoints: [{address: 127.0.0.1:9}]\n" + concurrency))
		if err != nil {
			t.Fatal(err)
		}
		snap, err := policy.NewSnapshot(doc, "test")
		if err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, settings{})
		ds, next := Compile(f.env, reg, snap, discovery.StaticOf(snap))
		return ds["billing"], next
	}
	adaptive := "    concurrency: {adaptive: {min: 2, initial: 10, max: 50}}\n"
	d1, reg := compile(NewRegistry(), adaptive)
	if d1.Limiter == nil || !d1.Limiter.Adaptive() || d1.Limiter.Limit() != 10 || d1.Shed == nil {
		t.Fatalf("limiter %v, want an adaptive one at 10 with its shed counter", d1.Limiter)
	}
	d2, reg := compile(reg, adaptive)
	if d2.Limiter != d1.Limiter {
		t.Error("a reload of the same concurrency block made a new limiter: its learned limit is lost")
	}
	d3, reg := compile(reg, "    concurrency: {max: 3}\n")
	if d3.Limiter == d1.Limiter || d3.Limiter.Adaptive() || d3.Limiter.Limit() != 3 {
		t.Errorf("a new block kept the old limiter (limit %d)", d3.Limiter.Limit())
	}
	if d4, _ := compile(reg, ""); d4.Limiter != nil {
		t.Error("a limiter without a concurrency block")
	}
}
