package core

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// targetsFixture compiles billing, whose one route splits doc's way, with
// billing's endpoints v1 (two), v2 and spare, ledger's l1.
func targetsFixture(t testing.TB, split string) (*Env, *Destination, *clocktest.Fake) {
	t.Helper()
	doc, err := policy.Parse([]byte(`
services:
  ledger:
    tls: disable
    connect_timeout: 50ms
    subsets: {blue: {color: blue}}
  billing:
    connect_timeout: 20ms
    outlier_detection: {consecutive_failures: 1, base_ejection: 1m, max_ejection_percent: 100}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: r
        retry: {attempts: 3, retry_on: [503]}
        split: ` + split + `
`))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.NewSnapshot(doc, "test")
	if err != nil {
		t.Fatal(err)
	}
	eps := &discovery.Snapshot{Source: "test", Services: map[string][]discovery.Endpoint{
		"billing": {
			{Address: "10.0.0.1:80", Labels: map[string]string{"version": "v1"}},
			{Address: "10.0.0.2:80", Labels: map[string]string{"version": "v1"}},
			{Address: "10.0.0.3:80", Labels: map[string]string{"version": "v2"}},
			{Address: "10.0.0.4:80", Labels: map[string]string{"version": "spare"}},
		},
		"ledger": {{Address: "10.0.1.1:80", Labels: map[string]string{"color": "blue"}}},
	}}
	clk := clocktest.NewFake(epoch)
	in, err := telemetry.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	// Backoff sleeps take no time (autoClock).
	env := &Env{Clock: &autoClock{Fake: clk}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Instr: in,
		Err: func(ce *CallError) error { return testError{ce} }}
	dests, _ := Compile(env, NewRegistry(), snap, eps)
	return env, dests["billing"], clk
}

// eject fails every host of p once (consecutive_failures 1).
func eject(p *Pool, clk *clocktest.Fake) {
	for _, h := range p.Hosts {
		Health(h).Report(true, clk.Now())
	}
}

func TestSplitTargetsCompile(t *testing.T) {
	_, d, _ := targetsFixture(t, "[{subset: v1, weight: 1}, {service: ledger, subset: blue, weight: 1, failover: [{subset: v2}, {}]}]")
	if len(d.Needs) != 1 || d.Needs[0] != "ledger" {
		t.Fatalf("needs %v, want [ledger]", d.Needs)
	}
	rt := d.Routes[0]
	own, other := rt.Split[0].Pool, rt.Split[1].Pool
	if own.Service != "billing" || !own.MTLS || own.ConnectTimeout.Milliseconds() != 20 || len(own.Hosts) != 2 || own.Label != "v1" {
		t.Errorf("own pool %+v", own)
	}
	if other.Service != "ledger" || other.MTLS || other.ConnectTimeout.Milliseconds() != 50 || len(other.Hosts) != 1 || other.Label != "ledger/blue" {
		t.Errorf("ledger pool %+v", other)
	}
	if Health(other.Hosts[0]) != nil {
		t.Error("ledger's host has outlier detection; ledger has none")
	}
	fo := rt.Split[1].Failover
	if len(fo) != 2 || fo[0].Label != "v2 (failover from ledger/blue)" || fo[1].Label != "every endpoint (failover from ledger/blue)" || len(fo[1].Hosts) != 4 {
		t.Fatalf("failover %+v", fo)
	}
	// The hosts are billing's own, shared with the route's other pools.
	if fo[1].Hosts[0] != own.Hosts[0] {
		t.Error("the failover's hosts are not billing's")
	}
}

func TestFailoverAtPick(t *testing.T) {
	tests := []struct {
		name      string
		eject     []string // pools ejected before the call: "v1", "v2"
		script    []Outcome
		wantLabel string
		wantLayer Layer
		wantErr   string
	}{
		{name: "own subset available", wantLabel: "v1"},
		{name: "v1 ejected", eject: []string{"v1"}, wantLabel: "v2 (failover from v1)"},
		{name: "v1 and v2 ejected", eject: []string{"v1", "v2"}, wantLabel: "ledger (failover from v1)"},
		// The first attempt fails on v1's hosts one by one: they are
		// ejected, the third attempt fails over.
		{name: "ejected during the call", script: []Outcome{status(503), status(503), status(200)}, wantLabel: "v2 (failover from v1)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, d, clk := targetsFixture(t, "[{subset: v1, weight: 1, failover: [{subset: v2}, {service: ledger}]}]")
			e := &d.Routes[0].Split[0]
			for _, name := range tc.eject {
				if name == "v1" {
					eject(e.Pool, clk)
				} else {
					eject(e.Failover[0], clk)
				}
			}
			script := tc.script
			if script == nil {
				script = []Outcome{status(200)}
			}
			s := &fakeSender{script: sequence(script...)}
			c := &Call{}
			c.Init(env, d, get, true)
			err := c.Start(context.Background(), nil)
			if err == nil {
				_, err = c.Run(s)
			}
			c.Finish()
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if got := c.SubsetName(); got != tc.wantLabel {
				t.Errorf("subset %q, want %q", got, tc.wantLabel)
			}
		})
	}
}

func TestFailoverNoneAvailable(t *testing.T) {
	env, d, clk := targetsFixture(t, "[{subset: v1, weight: 1, failover: [{subset: v2}, {service: ledger, subset: blue}]}]")
	e := &d.Routes[0].Split[0]
	eject(e.Pool, clk)
	eject(e.Failover[0], clk)
	// ledger has no outlier detection: empty its pool instead.
	e.Failover[1] = &Pool{Service: "ledger", Subset: "blue", Label: e.Failover[1].Label, Picker: mustPicker(nil)}
	c := &Call{}
	c.Init(env, d, get, true)
	err := c.Start(context.Background(), nil)
	c.Finish()
	ce := callErr(err)
	want := `no available endpoint in v1 of service "billing", nor in its failover targets v2, ledger/blue`
	if ce == nil || ce.Layer != LayerDiscovery || ce.Subset != "v1" || !strings.Contains(ce.Err.Error(), want) {
		t.Fatalf("got %v, want layer discovery: %s", err, want)
	}
}

func TestConnectTimeoutClassifies(t *testing.T) {
	kind, layer := ClassifyErr(&ConnectTimeoutError{Addr: "h:1", Err: context.DeadlineExceeded})
	if kind != resilience.ErrConnect || layer != LayerConnect {
		t.Fatalf("got %v %v, want a connect failure", kind, layer)
	}
}

func BenchmarkStartSplit(b *testing.B) {
	for _, bc := range []struct{ name, split string }{
		{"own", "[{subset: v1, weight: 1}, {subset: v2, weight: 1}]"},
		{"failover", "[{subset: v1, weight: 1, failover: [{subset: v2}]}]"},
		{"other-service", "[{service: ledger, weight: 1}]"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			env, d, _ := targetsFixture(b, bc.split)
			ctx := context.Background()
			var a Attempt
			b.ReportAllocs()
			for b.Loop() {
				var c Call
				c.Init(env, d, get, true)
				if err := c.Start(ctx, nil); err != nil {
					b.Fatal(err)
				}
				if err := c.Begin(&a, 0); err != nil {
					b.Fatal(err)
				}
				a.ticket.Release()
				c.Finish()
			}
		})
	}
}
