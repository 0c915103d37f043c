package core

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// limited is the refusal of the destination's rate limit, as an adapter
// classifies it from a verified peer, with its hint.
func limited(code int, hint Hint) Outcome {
	return Outcome{Result: resilience.Outcome{HTTPStatus: code}, Layer: LayerRateLimit,
		Err: errors.New("billing refused caller \"enrollment\": over its rate limit"), Hint: hint}
}

// TestRateLimitHint: the refusal of the destination's rate limit is
// retried after its hint even past the route's backoff max, when the wait
// ends before the call's deadline; otherwise the call fails at once at
// layer rate_limit, saying why. An ordinary answer's hint keeps the rule
// of the backoff max.
func TestRateLimitHint(t *testing.T) {
	short := policy.Effective{Attempts: 3, BackoffInitial: time.Millisecond, BackoffMax: time.Millisecond}
	for _, tc := range []struct {
		name     string
		first    Outcome
		deadline time.Duration // the caller's, 0 for none
		waited   bool          // the hint is waited, then the retry succeeds
	}{
		{"Retry-After past the backoff max", limited(429, Hint{Kind: HintAtLeast, Wait: 30 * time.Second}), 0, true},
		{"pushback past the backoff max", limited(0, Hint{Kind: HintExactly, Wait: 30 * time.Second}), 0, true},
		{"within the deadline", limited(429, Hint{Kind: HintAtLeast, Wait: 30 * time.Second}), time.Hour, true},
		{"past the deadline", limited(429, Hint{Kind: HintAtLeast, Wait: 30 * time.Second}), 10 * time.Second, false},
		{"an ordinary 429 keeps the backoff max", Outcome{Result: resilience.Outcome{HTTPStatus: 429}, Answer: 429,
			Hint: Hint{Kind: HintAtLeast, Wait: 30 * time.Second}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{eff: short, retryOn: []string{"429", "resource-exhausted"}})
			// Contexts run on the real time: the fake clock starts at it,
			// so the deadline check compares like with like.
			clk := clocktest.NewFake(time.Now())
			f.env.Clock = clk
			first := tc.first
			if first.Result.HTTPStatus == 0 {
				first.Result = resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeResourceExhausted}
			}
			s := &fakeSender{script: sequence(first, status(200))}
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			type end struct {
				o   Outcome
				err error
			}
			done := make(chan end, 1)
			go func() {
				_, o, err := f.call(ctx, get, s)
				done <- end{o, err}
			}()
			if !tc.waited {
				e := <-done
				if s.attempts() != 1 {
					t.Fatalf("%d attempts, want 1: a wait that cannot help is not waited", s.attempts())
				}
				if tc.first.Layer != LayerRateLimit {
					if e.err != nil || e.o.Answer != 429 {
						t.Fatalf("%v %v, want the 429 back", e.o.Answer, e.err)
					}
					return
				}
				ce := callErr(e.err)
				if ce == nil || ce.Layer != LayerRateLimit || ce.Attempts != 1 ||
					!strings.Contains(ce.Err.Error(), "waiting 30s") || !strings.Contains(ce.Err.Error(), "deadline") ||
					!strings.Contains(ce.Err.Error(), "over its rate limit") {
					t.Fatalf("%v, want layer rate_limit naming the wait and the deadline", e.err)
				}
				return
			}
			waiting := make(chan struct{})
			go func() { clk.BlockUntilTimers(1); close(waiting) }()
			select {
			case <-waiting:
			case e := <-done:
				clk.NewTimer(time.Hour) // ends the goroutine waiting for a timer
				t.Fatalf("the call ended (%v %v) after %d attempts without waiting", e.o.Answer, e.err, s.attempts())
			}
			clk.Advance(30*time.Second - time.Nanosecond)
			if n, sent := clk.PendingTimers(), s.attempts(); n != 1 || sent != 1 {
				t.Fatalf("a nanosecond before the hint: %d timers, %d attempts; want 1 and 1", n, sent)
			}
			clk.Advance(time.Nanosecond)
			if e := <-done; e.err != nil || e.o.Answer != 200 || s.attempts() != 2 {
				t.Fatalf("%v %v after %d attempts, want the retry's 200", e.o.Answer, e.err, s.attempts())
			}
		})
	}
}

// TestRateLimitRetriesSpent: once its retries are spent, the refusal is
// the caller's CallError of layer rate_limit.
func TestRateLimitRetriesSpent(t *testing.T) {
	f := newFixture(t, settings{auto: true, eff: policy.Effective{Attempts: 2, BackoffInitial: time.Millisecond, BackoffMax: time.Millisecond},
		retryOn: []string{"429"}})
	s := &fakeSender{script: always(limited(429, Hint{Kind: HintAtLeast, Wait: time.Second}))}
	_, _, err := f.call(context.Background(), get, s)
	if ce := callErr(err); ce == nil || ce.Layer != LayerRateLimit || ce.Attempts != 2 || ce.Service != "billing" {
		t.Fatalf("%v after %d attempts, want layer rate_limit after 2", err, s.attempts())
	}
	if w := f.auto.waits; len(w) != 1 || w[0] != time.Second {
		t.Fatalf("waits %v, want the Retry-After of 1s", w)
	}
}
