package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// The attempt executor, tested once for every protocol with a fake sender.

var epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// testError is the error the tests' Env gives callers for a CallError.
type testError struct{ *CallError }

func (e testError) Error() string { return "core: " + string(e.Layer) + ": " + fmt.Sprint(e.Err) }
func (e testError) Unwrap() error { return e.Err }

// callErr returns the CallError of err, or nil.
func callErr(err error) *CallError {
	var te testError
	if errors.As(err, &te) {
		return te.CallError
	}
	return nil
}

// autoClock is a fake clock whose timers fire at once, moving its time by
// their duration: a call's backoff sleeps take no time, and the waits are
// recorded.
type autoClock struct {
	*clocktest.Fake
	mu     sync.Mutex
	waits  []time.Duration
	onWait func() // when set, called at each timer
}

func (c *autoClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	if c.onWait != nil {
		c.onWait()
	}
	c.Advance(d)
	return c.Fake.NewTimer(0)
}

// fixture is one destination with one route over hosts, on a fake clock.
type fixture struct {
	clk   *clocktest.Fake
	auto  *autoClock // the env's clock when settings.auto
	env   *Env
	dest  *Destination
	route *Route
	hosts []*discovery.Host
	// balancer is set when the adapter's balancer picks (gRPC): the
	// outcome says where the attempt went.
	balancer bool
}

// settings are a route's, in the policy's terms.
type settings struct {
	eff     policy.Effective // Attempts 0 means 1
	retryOn []string         // default: 503, connect-failure, per-try-timeout
	budget  *resilience.BudgetConfig
	breaker *resilience.BreakerConfig
	outlier *resilience.OutlierConfig
	hosts   int  // default 1
	auto    bool // timers fire at once (autoClock)
}

func newFixture(t testing.TB, s settings) *fixture {
	t.Helper()
	clk := clocktest.NewFake(epoch)
	in, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	f := &fixture{clk: clk, env: &Env{Clock: clk, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Instr: in,
		Err: func(ce *CallError) error { return testError{ce} }}}
	if s.auto {
		f.auto = &autoClock{Fake: clk}
		f.env.Clock = f.auto
	}
	eff := s.eff
	if eff.Attempts == 0 {
		eff.Attempts = 1
	}
	if s.retryOn == nil {
		s.retryOn = []string{"503", "connect-failure", "per-try-timeout"}
	}
	if s.hosts == 0 {
		s.hosts = 1
	}
	var outlier *resilience.Outlier
	if s.outlier != nil {
		outlier = resilience.NewOutlier(*s.outlier, clk)
	}
	for i := range s.hosts {
		addr := fmt.Sprintf("10.0.0.%d:80", i+1)
		var avail discovery.Availability
		if outlier != nil {
			avail = outlier.Host(addr)
		}
		f.hosts = append(f.hosts, discovery.NewHost(discovery.Endpoint{Address: addr}, avail))
	}
	picker, err := discovery.NewPicker("", f.hosts)
	if err != nil {
		t.Fatal(err)
	}
	f.dest = &Destination{Name: "billing", Outlier: outlier}
	rt := &Route{Dest: f.dest, Name: "charge", Eff: &eff, IdempotentOnly: !eff.NonIdempotent,
		All:     &Pool{Hosts: f.hosts, Picker: picker},
		Backoff: resilience.BackoffConfig{Initial: eff.BackoffInitial, Max: eff.BackoffMax}}
	if eff.Attempts > 1 {
		rt.RetryOn = resilience.MustParseRetryOn(s.retryOn...)
		b := resilience.BudgetConfig{Ratio: 1, MinPerSecond: 1000}
		if s.budget != nil {
			b = *s.budget
		}
		rt.Budget = resilience.NewBudget(b, f.env.Clock)
	}
	if s.breaker != nil {
		rt.Breaker = resilience.NewBreaker("billing", *s.breaker, nil)
	}
	f.route = rt
	f.dest.Routes = []*Route{rt}
	return f
}

// sent is what the fake sender saw of an attempt.
type sent struct {
	n        int
	host     *discovery.Host
	waited   time.Duration
	deadline time.Time // zero without one
}

// fakeSender answers each attempt with the outcome its script gives for
// the attempt's number, and records what it saw.
type fakeSender struct {
	script    func(a *Attempt) Outcome
	mu        sync.Mutex
	sent      []sent
	discarded []any
}

func (s *fakeSender) Send(a *Attempt) Outcome {
	dl, _ := a.Ctx.Deadline()
	s.mu.Lock()
	s.sent = append(s.sent, sent{n: a.N, host: a.Host, waited: a.Waited, deadline: dl})
	s.mu.Unlock()
	o := s.script(a)
	if o.Host == nil {
		o.Host = a.Host
	}
	return o
}

func (s *fakeSender) Discard(answer any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.discarded = append(s.discarded, answer)
}

func (s *fakeSender) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// Outcomes the scripts return.
func status(code int) Outcome {
	return Outcome{Result: resilience.Outcome{HTTPStatus: code}, Answer: code}
}

func failure(kind resilience.ErrKind, layer Layer) Outcome {
	return Outcome{Result: resilience.Outcome{Err: kind}, Layer: layer, Err: fmt.Errorf("%s failed", layer)}
}

var canceled = Outcome{Result: resilience.Outcome{Err: resilience.ErrCanceled}, Err: context.Canceled, Final: true}

// always answers every attempt with o.
func always(o Outcome) func(*Attempt) Outcome { return func(*Attempt) Outcome { return o } }

// sequence answers attempt n with os[n-1], and with the last one after.
func sequence(os ...Outcome) func(*Attempt) Outcome {
	return func(a *Attempt) Outcome { return os[min(a.N, len(os))-1] }
}

// call runs one call of req through f with s, in ctx.
func (f *fixture) call(ctx context.Context, req Request, s *fakeSender) (*Call, Outcome, error) {
	c := &Call{}
	c.Init(f.env, f.dest, req, !f.balancer)
	c.PolicyVersion = "v1"
	err := c.Start(ctx, nil)
	var o Outcome
	if err == nil {
		o, err = c.Run(s)
	}
	c.Finish()
	return c, o, err
}

var get = Request{Path: "/charge", Method: "GET", Replayable: true, Idempotent: true}

func TestRun(t *testing.T) {
	quick := policy.Effective{Attempts: 3, BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}
	for _, tc := range []struct {
		name         string
		s            settings
		req          Request
		script       func(*Attempt) Outcome
		wantAttempts int
		wantAnswer   any    // the answer returned, nil for none
		wantLayer    Layer  // of the CallError, "" for none
		wantErr      error  // errors.Is the caller's error, when set
		wantDiscards int    // superseded answers given back
		wantInCause  string // the CallError's cause says
	}{
		{name: "an answer at once", s: settings{eff: quick}, req: get, script: always(status(200)),
			wantAttempts: 1, wantAnswer: 200},
		{name: "retryable status up to attempts, last answer returned", s: settings{eff: quick}, req: get,
			script: always(status(503)), wantAttempts: 3, wantAnswer: 503, wantDiscards: 2},
		{name: "recovers", s: settings{eff: quick}, req: get, script: sequence(status(503), status(503), status(200)),
			wantAttempts: 3, wantAnswer: 200, wantDiscards: 2},
		{name: "retry_on does not match", s: settings{eff: quick}, req: get, script: always(status(500)),
			wantAttempts: 1, wantAnswer: 500},
		{name: "retry_on of the route", s: settings{eff: quick, retryOn: []string{"500"}}, req: get,
			script: always(status(500)), wantAttempts: 3, wantAnswer: 500, wantDiscards: 2},
		{name: "a failure becomes its CallError after the last attempt", s: settings{eff: quick}, req: get,
			script: always(failure(resilience.ErrConnect, LayerConnect)), wantAttempts: 3, wantLayer: LayerConnect},
		{name: "a final failure is not retried", s: settings{eff: quick}, req: get,
			script:       always(Outcome{Result: resilience.Outcome{HTTPStatus: 403}, Layer: LayerAuthz, Err: errors.New("denied"), Final: true}),
			wantAttempts: 1, wantLayer: LayerAuthz},
		{name: "the caller's cancellation is its own error", s: settings{eff: quick}, req: get,
			script: always(canceled), wantAttempts: 1, wantErr: context.Canceled},
		{name: "not idempotent: sent once", s: settings{eff: quick}, req: Request{Method: "POST", Replayable: true},
			script: always(status(503)), wantAttempts: 1, wantAnswer: 503},
		{name: "non_idempotent: retried", s: settings{eff: policy.Effective{Attempts: 3, NonIdempotent: true,
			BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}},
			req: Request{Method: "POST", Replayable: true}, script: always(status(503)), wantAttempts: 3, wantAnswer: 503, wantDiscards: 2},
		{name: "a body that cannot be replayed: sent once", s: settings{eff: quick}, req: Request{Method: "PUT", Idempotent: true},
			script: always(status(503)), wantAttempts: 1, wantAnswer: 503},
		{name: "budget refuses the retry of an answer: the answer", s: settings{eff: quick, budget: &resilience.BudgetConfig{}},
			req: get, script: always(status(503)), wantAttempts: 1, wantAnswer: 503},
		{name: "budget refuses the retry of a failure: layer budget", s: settings{eff: quick, budget: &resilience.BudgetConfig{}},
			req: get, script: always(failure(resilience.ErrConnect, LayerConnect)), wantAttempts: 1, wantLayer: LayerBudget,
			wantInCause: "retry budget exhausted; last attempt: core: connect: connect failed"},
		{name: "a server's stop is obeyed", s: settings{eff: quick}, req: get,
			script:       always(Outcome{Result: resilience.Outcome{HTTPStatus: 503}, Answer: 503, Hint: Hint{Kind: HintStop}}),
			wantAttempts: 1, wantAnswer: 503},
		{name: "a hint beyond the backoff max is not waited", s: settings{eff: quick}, req: get,
			script:       always(Outcome{Result: resilience.Outcome{HTTPStatus: 503}, Answer: 503, Hint: Hint{Kind: HintAtLeast, Wait: time.Hour}}),
			wantAttempts: 1, wantAnswer: 503},
		{name: "a pushback beyond the backoff max is not waited", s: settings{eff: quick}, req: get,
			script:       always(Outcome{Result: resilience.Outcome{HTTPStatus: 503}, Answer: 503, Hint: Hint{Kind: HintExactly, Wait: time.Hour}}),
			wantAttempts: 1, wantAnswer: 503},
		{name: "a pushback of zero retries at once, whatever the backoff", s: settings{eff: policy.Effective{Attempts: 2,
			BackoffInitial: time.Hour, BackoffMax: time.Hour}}, req: get,
			script:       sequence(Outcome{Result: resilience.Outcome{HTTPStatus: 503}, Answer: 503, Hint: Hint{Kind: HintExactly}}, status(200)),
			wantAttempts: 2, wantAnswer: 200, wantDiscards: 1},
		{name: "a backoff past the call's deadline is not waited", s: settings{eff: policy.Effective{Attempts: 3, Timeout: time.Hour,
			BackoffInitial: 2 * time.Hour, BackoffMax: 2 * time.Hour}}, req: get,
			// Full jitter draws in [0, 2h): the fake clock, moved to a day
			// after the (real) deadline, makes any wait outlive it.
			script: func(a *Attempt) Outcome {
				clk := a.call.env.Clock.(*autoClock)
				clk.Advance(time.Now().Add(24 * time.Hour).Sub(clk.Now()))
				return status(503)
			},
			wantAttempts: 1, wantAnswer: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.auto = true
			f := newFixture(t, tc.s)
			s := &fakeSender{script: tc.script}
			c, o, err := f.call(context.Background(), tc.req, s)
			if got := s.attempts(); got != tc.wantAttempts || c.Attempts != tc.wantAttempts {
				t.Fatalf("%d attempts sent, %d counted; want %d (err %v)", got, c.Attempts, tc.wantAttempts, err)
			}
			if o.Answer != tc.wantAnswer {
				t.Fatalf("answer %v, want %v (err %v)", o.Answer, tc.wantAnswer, err)
			}
			ce := callErr(err)
			switch {
			case tc.wantLayer != "" && (ce == nil || ce.Layer != tc.wantLayer):
				t.Fatalf("err %v, want a CallError of layer %s", err, tc.wantLayer)
			case tc.wantLayer == "" && ce != nil:
				t.Fatalf("err %v, want no CallError", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && tc.wantLayer == "" && err != nil:
				t.Fatalf("err %v, want none", err)
			}
			if ce != nil {
				if ce.Service != "billing" || ce.Route != "charge" || ce.PolicyVersion != "v1" || ce.Attempts != tc.wantAttempts ||
					ce.Endpoint != f.hosts[0].Address {
					t.Fatalf("CallError %+v", ce)
				}
				if tc.wantInCause != "" && ce.Err.Error() != tc.wantInCause {
					t.Fatalf("cause %q, want %q", ce.Err, tc.wantInCause)
				}
			}
			if len(s.discarded) != tc.wantDiscards {
				t.Fatalf("%d answers discarded, want %d", len(s.discarded), tc.wantDiscards)
			}
			if n := f.clk.PendingTimers(); n != 0 {
				t.Fatalf("%d timers left pending", n)
			}
			for _, w := range f.auto.waits {
				if w > tc.s.eff.BackoffMax && tc.s.eff.BackoffMax > 0 {
					t.Fatalf("waited %v, beyond the backoff max %v", w, tc.s.eff.BackoffMax)
				}
			}
		})
	}
}

func TestStartFailures(t *testing.T) {
	f := newFixture(t, settings{})
	f.route.Match = CompileMatch(policy.Match{PathPrefix: "/charge", Methods: []string{"POST"}})
	s := &fakeSender{script: always(status(200))}
	_, _, err := f.call(context.Background(), Request{Path: "/charge", Method: "GET"}, s)
	if ce := callErr(err); ce == nil || ce.Layer != LayerRoute || ce.Route != "" || ce.Err.Error() != `no route of service "billing" matches GET /charge` {
		t.Fatalf("no route: %v", err)
	}
	_, _, err = f.call(context.Background(), Request{Path: "/charge/x", Method: "POST", RPC: true}, s)
	if err != nil {
		t.Fatalf("matching route: %v", err)
	}
	f.route.All = &Pool{Subset: "v3"}
	_, _, err = f.call(context.Background(), Request{Path: "/charge", Method: "POST"}, s)
	if ce := callErr(err); ce == nil || ce.Layer != LayerDiscovery || ce.Route != "charge" || ce.Attempts != 0 {
		t.Fatalf("no endpoints: %+v", err)
	}
	if s.attempts() != 1 {
		t.Fatalf("%d attempts sent, want the one of the call that matched", s.attempts())
	}
}

func TestMatchHeaders(t *testing.T) {
	m := CompileMatch(policy.Match{Headers: map[string]string{"x-canary": "true"}})
	for _, tc := range []struct {
		h    Header
		want bool
	}{
		{HTTPHeader{"X-Canary": {"true"}}, true},
		{HTTPHeader{"X-Canary": {"false", "true"}}, true},
		{HTTPHeader{"x-canary": {"true"}}, false}, // not canonical: not an http.Header key
		{Metadata{"x-canary": {"true"}}, true},
		{Metadata{"X-Canary": {"true"}}, false},
		{nil, false},
	} {
		if got := m.Match(&Request{Header: tc.h}); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.h, got, tc.want)
		}
	}
	req := &Request{Header: HTTPHeader{"X-Canary": {"true"}}}
	if n := testing.AllocsPerRun(100, func() { m.Match(req) }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

// waitsExactly runs a call whose first attempt fails with a hint, and
// checks that the retry waits want on the fake clock, not a nanosecond
// less.
func TestHintIsWaited(t *testing.T) {
	for _, tc := range []struct {
		name string
		eff  policy.Effective
		hint Hint
		want time.Duration
	}{
		{"Retry-After within the backoff max", policy.Effective{Attempts: 2, BackoffInitial: time.Nanosecond, BackoffMax: time.Minute},
			Hint{Kind: HintAtLeast, Wait: 30 * time.Second}, 30 * time.Second},
		{"pushback replaces a longer backoff", policy.Effective{Attempts: 2, BackoffInitial: 10 * time.Second, BackoffMax: 10 * time.Second},
			Hint{Kind: HintExactly, Wait: 5 * time.Second}, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{eff: tc.eff})
			first := Outcome{Result: resilience.Outcome{HTTPStatus: 503}, Answer: 503, Hint: tc.hint}
			s := &fakeSender{script: sequence(first, status(200))}
			done := make(chan error, 1)
			go func() {
				_, _, err := f.call(context.Background(), get, s)
				done <- err
			}()
			f.clk.BlockUntilTimers(1)
			f.clk.Advance(tc.want - time.Nanosecond)
			if n, sent := f.clk.PendingTimers(), s.attempts(); n != 1 || sent != 1 {
				t.Fatalf("a nanosecond before the wait: %d timers, %d attempts; want 1 and 1", n, sent)
			}
			f.clk.Advance(time.Nanosecond)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if s.attempts() != 2 || s.sent[1].waited != tc.want {
				t.Fatalf("attempts %+v, want the second after %v", s.sent, tc.want)
			}
		})
	}
}

// TestTimeoutNamesItsDeadline: the CallError of a timeout says which
// deadline passed, the attempt's or the call's, in its cause.
func TestTimeoutNamesItsDeadline(t *testing.T) {
	waitEnd := func(a *Attempt) Outcome {
		<-a.Ctx.Done() // in real time
		kind, layer, _ := a.Ended()
		return Outcome{Result: resilience.Outcome{Err: kind}, Layer: layer, Err: a.Ctx.Err()}
	}
	for _, tc := range []struct {
		name   string
		eff    policy.Effective
		caller time.Duration // the caller's own deadline; 0: none
		want   string
	}{
		{"per-try", policy.Effective{Timeout: time.Hour, PerTryTimeout: time.Millisecond}, 0, "per_try_timeout passed: context deadline exceeded"},
		{"route", policy.Effective{Timeout: time.Millisecond}, 0, "the route's timeout passed: context deadline exceeded"},
		{"caller", policy.Effective{Timeout: time.Hour}, time.Millisecond, "the caller's deadline passed: context deadline exceeded"},
		{"caller, no route timeout", policy.Effective{}, time.Millisecond, "the caller's deadline passed: context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{eff: tc.eff})
			ctx := context.Background()
			if tc.caller > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.caller)
				defer cancel()
			}
			_, _, err := f.call(ctx, get, &fakeSender{script: waitEnd})
			ce := callErr(err)
			if ce == nil || ce.Layer != LayerTimeout || ce.Err.Error() != tc.want || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%v, want a timeout whose cause is %q", err, tc.want)
			}
		})
	}
}

func TestDeadlines(t *testing.T) {
	t.Run("per-try timeout is retried", func(t *testing.T) {
		f := newFixture(t, settings{auto: true, eff: policy.Effective{Attempts: 2, Timeout: time.Hour, PerTryTimeout: time.Millisecond,
			BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}})
		var which []string
		s := &fakeSender{script: func(a *Attempt) Outcome {
			if a.N == 1 {
				<-a.Ctx.Done() // the per-try deadline, in real time
				kind, layer, ended := a.Ended()
				which = append(which, a.Deadline())
				if !ended || !a.PerTry() {
					t.Errorf("the attempt's end: %v %v %v, per-try %v", kind, layer, ended, a.PerTry())
				}
				return Outcome{Result: resilience.Outcome{Err: kind}, Layer: layer, Err: a.Ctx.Err()}
			}
			return status(200)
		}}
		_, o, err := f.call(context.Background(), get, s)
		if err != nil || o.Answer != 200 || s.attempts() != 2 {
			t.Fatalf("%v %v after %d attempts", o.Answer, err, s.attempts())
		}
		if which[0] != "per_try_timeout" {
			t.Fatalf("deadline named %q", which[0])
		}
	})
	t.Run("the call's deadline is the route's timeout", func(t *testing.T) {
		f := newFixture(t, settings{eff: policy.Effective{Attempts: 3, Timeout: time.Millisecond,
			BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}})
		s := &fakeSender{script: func(a *Attempt) Outcome {
			<-a.Ctx.Done()
			kind, layer, _ := a.Ended()
			if a.Deadline() != "the route's timeout" || a.PerTry() {
				t.Errorf("deadline named %q, per-try %v", a.Deadline(), a.PerTry())
			}
			return Outcome{Result: resilience.Outcome{Err: kind}, Layer: layer, Err: a.Ctx.Err()}
		}}
		_, _, err := f.call(context.Background(), get, s)
		if ce := callErr(err); ce == nil || ce.Layer != LayerTimeout || s.attempts() != 1 {
			t.Fatalf("%v after %d attempts, want layer timeout after 1: no time is left", err, s.attempts())
		}
	})
	t.Run("the caller's shorter deadline wins", func(t *testing.T) {
		f := newFixture(t, settings{eff: policy.Effective{Attempts: 1, Timeout: time.Hour}})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		want, _ := ctx.Deadline()
		s := &fakeSender{script: func(a *Attempt) Outcome {
			if a.Deadline() != "the caller's deadline" {
				t.Errorf("deadline named %q", a.Deadline())
			}
			return status(200)
		}}
		if _, _, err := f.call(ctx, get, s); err != nil {
			t.Fatal(err)
		}
		if !s.sent[0].deadline.Equal(want) {
			t.Fatalf("the attempt's deadline %v, want the caller's %v", s.sent[0].deadline, want)
		}
	})
}

func TestBreaker(t *testing.T) {
	t.Run("open fails fast", func(t *testing.T) {
		f := newFixture(t, settings{breaker: &resilience.BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour}})
		s := &fakeSender{script: always(status(500))}
		for range 2 {
			if _, o, err := f.call(context.Background(), get, s); err != nil || o.Answer != 500 {
				t.Fatalf("before tripping: %v %v", o.Answer, err)
			}
		}
		_, _, err := f.call(context.Background(), get, s)
		if ce := callErr(err); ce == nil || ce.Layer != LayerBreaker || ce.Attempts != 1 || !errors.Is(err, resilience.ErrBreakerOpen) {
			t.Fatalf("open breaker: %v", err)
		}
		if s.attempts() != 2 {
			t.Fatalf("the open breaker let an attempt through: %d sent", s.attempts())
		}
	})
	t.Run("a canceled or unsent probe keeps it half-open", func(t *testing.T) {
		// open_for of a nanosecond: half-open at once, on the breaker's own
		// clock (the real time).
		f := newFixture(t, settings{breaker: &resilience.BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Nanosecond, HalfOpenRequests: 1}})
		if _, _, err := f.call(context.Background(), get, &fakeSender{script: always(status(500))}); err != nil {
			t.Fatal(err)
		}
		notSent := Outcome{Layer: LayerTLS, Err: errors.New("no transport"), Final: true, NotSent: true}
		for _, o := range []Outcome{canceled, notSent} {
			f.call(context.Background(), get, &fakeSender{script: always(o)})
			if got := f.route.Breaker.State(); got != "half-open" {
				t.Fatalf("after %+v: breaker %s, want half-open", o, got)
			}
		}
		if _, _, err := f.call(context.Background(), get, &fakeSender{script: always(status(200))}); err != nil {
			t.Fatalf("the next probe: %v", err)
		}
		if got := f.route.Breaker.State(); got != "closed" {
			t.Fatalf("after a successful probe: %s", got)
		}
	})
}

// TestRateBreakerCountsCalls: a rate breaker hears of each call once, by
// its last attempt: a failure that a retry repaired does not count, a call
// whose every attempt failed counts once; and a half-open breaker's one
// probe slot is not held by the call's own earlier attempt.
func TestRateBreakerCountsCalls(t *testing.T) {
	quick := policy.Effective{Attempts: 3, BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}
	rate := &resilience.BreakerConfig{FailureRate: 0.5, Window: time.Minute, MinCalls: 4, OpenFor: time.Hour, HalfOpenRequests: 1}
	t.Run("repaired failures", func(t *testing.T) {
		f := newFixture(t, settings{eff: quick, breaker: rate, auto: true})
		for range 10 {
			s := &fakeSender{script: sequence(status(503), status(200))}
			if _, o, err := f.call(context.Background(), get, s); err != nil || o.Answer != 200 {
				t.Fatalf("call: %v %v", o.Answer, err)
			}
		}
		// Counted by attempt, half of 20 failed: the breaker would be open.
		if calls, failures := f.route.Breaker.Window(); calls != 10 || failures != 0 || f.route.Breaker.State() != "closed" {
			t.Fatalf("window %d calls, %d failures, %s; want 10 calls, 0 failures, closed", calls, failures, f.route.Breaker.State())
		}
	})
	t.Run("failed calls", func(t *testing.T) {
		f := newFixture(t, settings{eff: quick, breaker: rate, auto: true})
		s := &fakeSender{script: always(status(503))}
		for range 3 {
			f.call(context.Background(), get, s)
		}
		if calls, failures := f.route.Breaker.Window(); calls != 3 || failures != 3 || s.attempts() != 9 {
			t.Fatalf("window %d calls, %d failures after %d attempts; want 3 and 3 after 9", calls, failures, s.attempts())
		}
		f.call(context.Background(), get, s) // the fourth failed call trips it
		if got := f.route.Breaker.State(); got != "open" {
			t.Fatalf("after 4 failed calls: %s, want open", got)
		}
	})
	t.Run("half-open probe retried", func(t *testing.T) {
		cfg := *rate
		cfg.MinCalls, cfg.OpenFor = 1, time.Nanosecond
		f := newFixture(t, settings{eff: quick, breaker: &cfg, auto: true})
		f.call(context.Background(), get, &fakeSender{script: always(status(503))}) // opens it
		// Half-open at once: the probe's first attempt fails and reopens
		// it at once; a nanosecond later its retry probes again, and
		// closes it.
		s := &fakeSender{script: sequence(status(503), status(200))}
		if _, o, err := f.call(context.Background(), get, s); err != nil || o.Answer != 200 || s.attempts() != 2 {
			t.Fatalf("probe call: %v %v after %d attempts", o.Answer, err, s.attempts())
		}
		if got := f.route.Breaker.State(); got != "closed" {
			t.Fatalf("after the probe call succeeded: %s, want closed", got)
		}
	})
	t.Run("failed probe reopens at once", func(t *testing.T) {
		f := newFixture(t, settings{eff: quick, auto: true})
		cfg := *rate
		cfg.MinCalls, cfg.OpenFor, cfg.Clock = 1, time.Minute, f.clk
		f.route.Breaker = resilience.NewBreaker("billing", cfg, nil)
		f.call(context.Background(), get, &fakeSender{script: always(status(503))}) // opens it
		f.clk.Advance(time.Minute + time.Nanosecond)
		// The probe fails: the breaker hears of it at once and opens
		// again, so the call's retry is refused rather than probing on.
		s := &fakeSender{script: sequence(status(503), status(200))}
		_, _, err := f.call(context.Background(), get, s)
		if ce := callErr(err); ce == nil || ce.Layer != LayerBreaker || s.attempts() != 1 {
			t.Fatalf("probe call: %v after %d attempts; want layer breaker after 1", err, s.attempts())
		}
		if got := f.route.Breaker.State(); got != "open" {
			t.Fatalf("after the failed probe: %s, want open", got)
		}
	})
}

// TestOverloadAnswersAreNeutral: an answer by which the destination says
// it is up but sheds load (429, ResourceExhausted, a 503 or Unavailable
// with a hint to wait) is neither a failure nor a success for the breaker
// and outlier detection; the same answer without the hint is a failure.
func TestOverloadAnswersAreNeutral(t *testing.T) {
	grpc := func(c resilience.GRPCCode, h HintKind) Outcome {
		return Outcome{Result: resilience.Outcome{IsGRPC: true, GRPCCode: c}, Err: errors.New(c.String()), Hint: Hint{Kind: h}}
	}
	http := func(code int, h HintKind) Outcome {
		o := status(code)
		o.Hint = Hint{Kind: h}
		return o
	}
	for _, tc := range []struct {
		name    string
		o       Outcome
		neutral bool
	}{
		{"429", http(429, HintNone), true},
		{"429 with Retry-After", http(429, HintAtLeast), true},
		{"503 with Retry-After", http(503, HintAtLeast), true},
		{"ResourceExhausted", grpc(resilience.CodeResourceExhausted, HintNone), true},
		{"Unavailable with a pushback", grpc(resilience.CodeUnavailable, HintExactly), true},
		{"plain 503", http(503, HintNone), false},
		{"503 with a stop", http(503, HintStop), false},
		{"502 with Retry-After", http(502, HintAtLeast), false},
		{"plain Unavailable", grpc(resilience.CodeUnavailable, HintNone), false},
		{"Unavailable with a stop pushback", grpc(resilience.CodeUnavailable, HintStop), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.o.Overloaded(); got != tc.neutral {
				t.Fatalf("Overloaded() = %v, want %v", got, tc.neutral)
			}
			// A failure, three of these, a failure: two failures in a row
			// when they are neutral, and not before.
			f := newFixture(t, settings{hosts: 2,
				breaker: &resilience.BreakerConfig{ConsecutiveFailures: 2, OpenFor: time.Hour},
				outlier: &resilience.OutlierConfig{ConsecutiveFailures: 2, BaseEjection: time.Minute, MaxEjectionPercent: 50}})
			f.balancer = true
			bad := f.hosts[0]
			send := func(o Outcome) {
				o.Host = bad
				f.call(context.Background(), get, &fakeSender{script: always(o)})
			}
			send(status(500))
			for range 3 {
				send(tc.o)
			}
			if !tc.neutral {
				if got := f.route.Breaker.State(); got != "open" {
					t.Fatalf("breaker after a failure and %s: %s, want open", tc.name, got)
				}
				return
			}
			if got, avail := f.route.Breaker.State(), Health(bad).Available(f.clk.Now()); got != "closed" || !avail {
				t.Fatalf("after a failure and three %s: breaker %s, host available %v; want closed, true", tc.name, got, avail)
			}
			send(status(500))
			if got, avail := f.route.Breaker.State(), Health(bad).Available(f.clk.Now()); got != "open" || avail {
				t.Fatalf("after a failure, three %s and a failure: breaker %s, host available %v; want open, false (they reset the streak)", tc.name, got, avail)
			}
		})
	}
}

func TestOutlierReports(t *testing.T) {
	f := newFixture(t, settings{hosts: 2, outlier: &resilience.OutlierConfig{ConsecutiveFailures: 2, BaseEjection: time.Minute, MaxEjectionPercent: 50}})
	bad := f.hosts[0]
	// Every attempt goes to bad, as gRPC's balancer may decide.
	f.balancer = true
	send := func(o Outcome) {
		o.Host = bad
		if _, _, err := f.call(context.Background(), get, &fakeSender{script: always(o)}); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	send(status(500))
	send(canceled) // proves nothing: the streak goes on
	if !Health(bad).Available(f.clk.Now()) {
		t.Fatal("ejected after one failure")
	}
	send(status(500))
	if Health(bad).Available(f.clk.Now()) {
		t.Fatal("not ejected after a failure, a canceled call and a failure: the cancellation reset the streak")
	}
}

func TestHostsAlternate(t *testing.T) {
	f := newFixture(t, settings{auto: true, hosts: 2, eff: policy.Effective{Attempts: 2, BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond}})
	s := &fakeSender{script: always(failure(resilience.ErrConnect, LayerConnect))}
	_, _, err := f.call(context.Background(), get, s)
	if s.sent[0].host == s.sent[1].host {
		t.Fatalf("both attempts went to %s", s.sent[0].host.Address)
	}
	if ce := callErr(err); ce == nil || ce.Endpoint != s.sent[1].host.Address {
		t.Fatalf("CallError %v, want the last endpoint tried", err)
	}
}

func TestCanceledDuringBackoff(t *testing.T) {
	f := newFixture(t, settings{eff: policy.Effective{Attempts: 2, BackoffInitial: time.Hour, BackoffMax: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	s := &fakeSender{script: always(status(503))}
	done := make(chan error, 1)
	go func() {
		_, _, err := f.call(ctx, get, s)
		done <- err
	}()
	f.clk.BlockUntilTimers(1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || callErr(err) != nil {
		t.Fatalf("%v, want the caller's context.Canceled", err)
	}
	if s.attempts() != 1 || len(s.discarded) != 1 {
		t.Fatalf("%d attempts, %d discarded", s.attempts(), len(s.discarded))
	}
}
