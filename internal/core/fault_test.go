package core

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
)

// seeded returns a random source for Env.Rand that gives the same draws on
// every run.
func seeded(seed uint64) func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

// mustFault compiles f, which must inject something.
func mustFault(t *testing.T, f *policy.Fault) *Fault {
	t.Helper()
	c, err := CompileFault(f)
	if err != nil || c == nil {
		t.Fatalf("CompileFault: %v, %v", c, err)
	}
	return c
}

func abortAll(status int, code string) *policy.Fault {
	return &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: status, GRPCCode: code}}
}

// TestFaultAbort: an abort fails the call at layer fault before any
// attempt, naming the injected status; nothing is sent, and the breaker,
// the budget and outlier detection hear nothing.
func TestFaultAbort(t *testing.T) {
	for _, tc := range []struct {
		name    string
		req     Request
		fault   *policy.Fault
		want    string
		rpc     bool
		rpcCode resilience.GRPCCode
	}{
		{name: "HTTP", req: get, fault: abortAll(503, "unavailable"), want: "fault injected: abort with HTTP 503"},
		{name: "HTTP 429", req: get, fault: abortAll(429, "resource-exhausted"), want: "fault injected: abort with HTTP 429"},
		{name: "RPC", req: Request{Path: "/pkg.S/M", Method: "POST", RPC: true, Replayable: true, Idempotent: true},
			fault: abortAll(503, "resource-exhausted"), want: "fault injected: abort with gRPC resource-exhausted",
			rpc: true, rpcCode: resilience.CodeResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{
				eff:     policy.Effective{Attempts: 3, BackoffInitial: time.Nanosecond, BackoffMax: time.Nanosecond},
				breaker: &resilience.BreakerConfig{ConsecutiveFailures: 1, OpenFor: time.Hour, HalfOpenRequests: 1},
				outlier: &resilience.OutlierConfig{ConsecutiveFailures: 1, BaseEjection: time.Hour, MaxEjectionPercent: 100},
			})
			f.route.Fault = mustFault(t, tc.fault)
			balance := f.route.Budget.Balance()
			s := &fakeSender{script: always(status(200))}
			for range 5 {
				_, _, err := f.call(context.Background(), tc.req, s)
				ce := callErr(err)
				if ce == nil || ce.Layer != LayerFault || ce.Attempts != 0 || ce.Endpoint != "" || ce.Service != "billing" ||
					ce.Route != "charge" || ce.PolicyVersion != "v1" || ce.Err.Error() != tc.want {
					t.Fatalf("error %v (%+v), want layer fault with %q after 0 attempts", err, ce, tc.want)
				}
				var fa *FaultAbort
				if !errors.As(err, &fa) || fa.RPC != tc.rpc || (tc.rpc && fa.GRPCCode != tc.rpcCode) {
					t.Fatalf("cause %+v", fa)
				}
			}
			if n := s.attempts(); n != 0 {
				t.Errorf("%d attempts sent, want none", n)
			}
			if st := f.route.Breaker.State(); st != "closed" {
				t.Errorf("breaker %s, want closed: it heard of an abort", st)
			}
			if got := f.route.Budget.Balance(); got != balance {
				t.Errorf("budget balance %v, was %v: an aborted call deposited", got, balance)
			}
			if hh := Health(f.hosts[0]); hh.TimesEjected() != 0 || !hh.Available(f.clk.Now()) {
				t.Error("outlier detection heard of an abort")
			}
		})
	}
}

// TestFaultPercentages: over 2000 calls, the share faulted is within 3
// points of the percent, for delays and aborts alike. The source is seeded:
// the counts are the same on every run.
func TestFaultPercentages(t *testing.T) {
	const calls = 2000
	for _, pct := range []float64{0.5, 1, 10, 25, 50, 75, 99.5} {
		for _, kind := range []string{"abort", "delay"} {
			f := newFixture(t, settings{auto: true})
			f.env.Rand = seeded(uint64(pct * 10))
			pf := &policy.Fault{}
			if kind == "abort" {
				pf.Abort = &policy.FaultAbort{Percent: pct, HTTPStatus: 503, GRPCCode: "unavailable"}
			} else {
				pf.Delay = &policy.FaultDelay{Percent: pct, Duration: policy.Duration(time.Second)}
			}
			f.route.Fault = mustFault(t, pf)
			s := &fakeSender{script: always(status(200))}
			faulted := 0
			for range calls {
				_, _, err := f.call(context.Background(), get, s)
				if callErr(err) != nil {
					faulted++
				}
			}
			if kind == "delay" {
				faulted = len(f.auto.waits)
				if s.attempts() != calls {
					t.Fatalf("delay %v%%: %d attempts of %d calls: a delay failed calls", pct, s.attempts(), calls)
				}
			}
			got := 100 * float64(faulted) / calls
			t.Logf("%s %v%%: %d of %d calls (%.2f%%)", kind, pct, faulted, calls, got)
			if got < pct-3 || got > pct+3 {
				t.Errorf("%s %v%%: %.2f%% of the calls faulted, want within 3 points", kind, pct, got)
			}
		}
	}
}

// TestFaultDelay: a delayed call waits on the call's clock before its first
// attempt; a call not delayed does not wait.
func TestFaultDelay(t *testing.T) {
	f := newFixture(t, settings{})
	f.route.Fault = mustFault(t, &policy.Fault{Delay: &policy.FaultDelay{Percent: 100, Duration: policy.Duration(3 * time.Second)}})
	s := &fakeSender{script: always(status(200))}
	type end struct {
		c   *Call
		err error
	}
	done := make(chan end, 1)
	go func() {
		c, _, err := f.call(context.Background(), get, s)
		done <- end{c, err}
	}()
	f.clk.BlockUntilTimers(1)
	f.clk.Advance(3*time.Second - time.Nanosecond)
	if n := s.attempts(); n != 0 || f.clk.PendingTimers() != 1 {
		t.Fatalf("a nanosecond before the delay's end: %d attempts, %d timers; want 0 and 1", n, f.clk.PendingTimers())
	}
	f.clk.Advance(time.Nanosecond)
	e := <-done
	if e.err != nil || s.attempts() != 1 || e.c.Attempts != 1 {
		t.Fatalf("after the delay: %v, %d attempts", e.err, s.attempts())
	}
	if !e.c.Now.Equal(epoch.Add(3 * time.Second)) {
		t.Errorf("the attempt started at %v, want after the delay", e.c.Now)
	}
}

// TestFaultDelayEndsWithTheCall: the end of the call's context during a
// delay ends the call: its deadline as a timeout, its cancellation as the
// caller's own; nothing is sent.
func TestFaultDelayEndsWithTheCall(t *testing.T) {
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		wantLayer Layer
		wantErr   error
	}{
		{"deadline", past, LayerTimeout, context.DeadlineExceeded},
		{"canceled", canceled, "", context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, settings{})
			f.route.Fault = mustFault(t, &policy.Fault{
				Delay: &policy.FaultDelay{Percent: 100, Duration: policy.Duration(time.Hour)},
				Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 503, GRPCCode: "unavailable"},
			})
			s := &fakeSender{script: always(status(200))}
			_, _, err := f.call(tc.ctx, get, s)
			ce := callErr(err)
			switch {
			case tc.wantLayer == "" && ce != nil, tc.wantLayer != "" && (ce == nil || ce.Layer != tc.wantLayer || ce.Attempts != 0):
				t.Fatalf("error %v, want layer %q", err, tc.wantLayer)
			case !errors.Is(err, tc.wantErr):
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if tc.wantLayer == LayerTimeout && !strings.Contains(err.Error(), "while the fault block delayed the call by 1h0m0s") {
				t.Errorf("error %q does not say the delay was under way", err)
			}
			if s.attempts() != 0 {
				t.Errorf("%d attempts", s.attempts())
			}
		})
	}
}

// headers is a Header of the given canonical names, each with value "".
type headers map[string]bool

func (h headers) Values(k HeaderKey) []string {
	if h[k.Canonical] {
		return []string{""}
	}
	return nil
}

// TestFaultOnlyWithHeader: with only_with_header, a call is subject to the
// fault only when it carries the header, whatever its value.
func TestFaultOnlyWithHeader(t *testing.T) {
	f := newFixture(t, settings{})
	pf := abortAll(503, "unavailable")
	pf.OnlyWithHeader = "x-inmesh-fault"
	f.route.Fault = mustFault(t, pf)
	for _, tc := range []struct {
		name    string
		header  Header
		faulted bool
	}{
		{"no headers", nil, false},
		{"other headers", headers{"X-Other": true}, false},
		{"the header, empty", headers{"X-Inmesh-Fault": true}, true},
		{"the header in HTTP form", HTTPHeader{"X-Inmesh-Fault": {"1"}}, true},
		{"the header in metadata form", Metadata{"x-inmesh-fault": {"on"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := get
			req.Header = tc.header
			s := &fakeSender{script: always(status(200))}
			_, _, err := f.call(context.Background(), req, s)
			if got := callErr(err) != nil && callErr(err).Layer == LayerFault; got != tc.faulted || s.attempts() != map[bool]int{true: 0, false: 1}[tc.faulted] {
				t.Fatalf("faulted %v (%v, %d attempts), want %v", got, err, s.attempts(), tc.faulted)
			}
		})
	}
}

func TestCompileFault(t *testing.T) {
	sec := policy.Duration(time.Second)
	for _, tc := range []struct {
		name    string
		in      *policy.Fault
		want    string // String of the compiled fault, "" for nil
		wantErr bool
	}{
		{"none", nil, "", false},
		{"empty (validation rejects it)", &policy.Fault{}, "", false},
		{"zero percents: a route turning off its service's fault", &policy.Fault{Delay: &policy.FaultDelay{Duration: sec}, Abort: &policy.FaultAbort{HTTPStatus: 503, GRPCCode: "unavailable"}}, "", false},
		{"delay", &policy.Fault{Delay: &policy.FaultDelay{Percent: 10, Duration: sec}}, "delay 10% by 1s", false},
		{"abort", &policy.Fault{Abort: &policy.FaultAbort{Percent: 2.5, HTTPStatus: 500, GRPCCode: "internal"}, OnlyWithHeader: "x-fault"},
			"abort 2.5% with HTTP 500 / gRPC internal, only with header X-Fault", false},
		{"unknown code", &policy.Fault{Abort: &policy.FaultAbort{Percent: 1, HTTPStatus: 503, GRPCCode: "Unavailable"}},
			"abort 1% with HTTP 503 / gRPC unavailable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := CompileFault(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v", err)
			}
			got := ""
			if f != nil {
				got = f.String()
			}
			if got != tc.want {
				t.Fatalf("compiled %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCompileWarnsOfFaults: a route whose policy injects faults is warned
// of once while its fault block stays the same, naming the service, the
// route and the policy version; a recompilation of the same version (new
// endpoints) or of a new version that leaves the block does not warn
// again, one that changes it does.
func TestCompileWarnsOfFaults(t *testing.T) {
	var buf bytes.Buffer
	env := &Env{Log: slog.New(slog.NewTextHandler(&buf, nil)), Err: func(ce *CallError) error { return testError{ce} }}
	snap := func(version string, delay ...string) *policy.Snapshot {
		charge := "10"
		if len(delay) > 0 {
			charge = delay[0]
		}
		doc, err := policy.Parse([]byte("version: " + version + `
services:
  billing:
    endpoints: [{address: 127.0.0.1:1}]
    fault: {abort: {percent: 5}}
    routes:
      - {name: charge, match: {path_prefix: /charge}, fault: {delay: {percent: ` + charge + `, duration: 1s}}}
      - {name: off, match: {path_prefix: /off}, fault: {abort: {percent: 0}}}
      - {name: rest}
  ledger:
    endpoints: [{address: 127.0.0.1:2}]
`))
		if err != nil {
			t.Fatal(err)
		}
		s, err := policy.NewSnapshot(doc, "test")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var eps *discovery.Snapshot
	warnings := func() []string {
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
		buf.Reset()
		return out
	}
	dests, reg := Compile(env, NewRegistry(), snap("v1"), eps)
	w := warnings()
	if len(w) != 2 || !strings.Contains(w[0]+w[1], "route=charge") || !strings.Contains(w[0]+w[1], "route=rest") {
		t.Fatalf("warnings %q, want one for charge and one for rest", w)
	}
	for _, l := range w {
		if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "service=billing") || !strings.Contains(l, "policy_version=v1") {
			t.Errorf("warning %q", l)
		}
	}
	b := dests["billing"]
	if b.Routes[0].Fault == nil || b.Routes[0].Fault.DelayPercent != 10 || b.Routes[0].Fault.AbortPercent != 0 {
		t.Errorf("charge: %+v, want its own delay only", b.Routes[0].Fault)
	}
	if b.Routes[1].Fault != nil || dests["ledger"].Routes[0].Fault != nil {
		t.Error("a route without faults has a Fault")
	}
	if f := b.Routes[2].Fault; f == nil || f.AbortPercent != 5 || f.httpAbort.HTTPStatus != 503 || f.rpcAbort.GRPCCode != resilience.CodeUnavailable {
		t.Errorf("rest: %+v, want the service's abort with the defaults", f)
	}
	_, reg = Compile(env, reg, snap("v1"), eps)
	if w := warnings(); len(w) != 0 {
		t.Fatalf("the same version warned again: %q", w)
	}
	if _, reg = Compile(env, reg, snap("v2"), eps); len(warnings()) != 0 {
		t.Fatal("a new version that leaves the blocks warned again")
	}
	_, _ = Compile(env, reg, snap("v3", "20"), eps)
	if w := warnings(); len(w) != 1 || !strings.Contains(w[0], "route=charge") || !strings.Contains(w[0], "policy_version=v3") ||
		!strings.Contains(w[0], "delay 20%") {
		t.Fatalf("warnings %q, want one for charge's new block", w)
	}
}

// A fault that does not fire costs a draw, no allocation: the call
// allocates what it allocates without the block.
func TestFaultNotFiredAllocatesNothing(t *testing.T) {
	s := &fakeSender{script: always(status(200))}
	none := newFixture(t, settings{})
	base := testing.AllocsPerRun(200, func() { _, _, _ = none.call(context.Background(), get, s) })
	for _, tc := range []struct {
		name  string
		fault *policy.Fault
	}{
		{"percent not drawn", &policy.Fault{
			Delay: &policy.FaultDelay{Percent: 1, Duration: policy.Duration(time.Second)},
			Abort: &policy.FaultAbort{Percent: 1, HTTPStatus: 503, GRPCCode: "unavailable"}}},
		{"header absent", &policy.Fault{Abort: &policy.FaultAbort{Percent: 100, HTTPStatus: 503, GRPCCode: "unavailable"},
			OnlyWithHeader: "x-inmesh-fault"}},
	} {
		f := newFixture(t, settings{})
		f.env.Rand = func() float64 { return 0.5 }
		f.route.Fault = mustFault(t, tc.fault)
		req := get
		req.Header = HTTPHeader{"X-Other": {"1"}}
		if got := testing.AllocsPerRun(200, func() { _, _, _ = f.call(context.Background(), req, s) }); got > base {
			t.Errorf("%s: %v allocations per call, %v without a fault block", tc.name, got, base)
		}
	}
}

func BenchmarkFault(b *testing.B) {
	for _, bc := range []struct {
		name  string
		fault *policy.Fault
	}{
		{"none", nil},
		{"not fired", &policy.Fault{Abort: &policy.FaultAbort{Percent: 1, HTTPStatus: 503, GRPCCode: "unavailable"}}},
		{"abort", abortAll(503, "unavailable")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFixture(b, settings{})
			f.env.Rand = func() float64 { return 0.5 }
			if bc.fault != nil {
				f.route.Fault, _ = CompileFault(bc.fault)
			}
			s := &fakeSender{script: always(status(200))}
			b.ReportAllocs()
			for b.Loop() {
				c := Call{}
				c.Init(f.env, f.dest, get, true)
				if c.Start(context.Background(), nil) == nil {
					_, _ = c.Run(s)
				}
				c.Finish()
				s.sent = s.sent[:0]
			}
		})
	}
}
