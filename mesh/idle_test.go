package mesh

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// stopSource is an endpoint source that can stop a watch: it counts the
// Watch and StopWatching calls per service, and always has one endpoint
// of billing.
type stopSource struct {
	mu      sync.Mutex
	watches map[string]int
	stops   map[string]int
	changed chan struct{}
}

func (s *stopSource) Watch(_ context.Context, service string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watches[service]++
}

func (s *stopSource) StopWatching(service string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops[service]++
}

func (s *stopSource) Current() *discovery.Snapshot {
	return &discovery.Snapshot{Source: "test", Services: map[string][]discovery.Endpoint{"billing": {{Address: "127.0.0.1:1"}}}}
}

func (s *stopSource) Changed() <-chan struct{} { return s.changed }

func (s *stopSource) counts(service string) (watches, stops int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watches[service], s.stops[service]
}

type stopPlane struct {
	localPlane
	src *stopSource
}

func (p *stopPlane) Endpoints(Workload) (EndpointSource, error) { return p.src, nil }

// TestIdleDestinationStopsBeingWatched: a destination without a call for
// idleSweeps sweeps in a row stops being watched, one called in between
// does not, and the next call watches it again.
func TestIdleDestinationStopsBeingWatched(t *testing.T) {
	ctx, m, src, fc := newIdleMesh(t, "services: {billing: {}}\n")
	call := func() { m.ensureWatched(ctx, "billing") } // what every call to billing does first
	sweep := func() {
		fc.BlockUntilTimers(1)
		fc.Advance(idleSweep)
	}

	call()
	for range 4 { // called before each sweep: stays watched
		sweep()
		call()
	}
	fc.BlockUntilTimers(1)
	if w, s := src.counts("billing"); w != 1 || s != 0 {
		t.Fatalf("while called: %d watches, %d stops; want 1, 0", w, s)
	}
	sweep() // the call before it counts
	sweep() // idle 1
	sweep() // idle 2: stopped
	fc.BlockUntilTimers(1)
	if w, s := src.counts("billing"); w != 1 || s != 1 {
		t.Fatalf("idle: %d watches, %d stops; want 1, 1", w, s)
	}
	if !m.ensureWatched(ctx, "billing") {
		t.Fatal("the call after an idle spell started no watch")
	}
	if w, s := src.counts("billing"); w != 2 || s != 1 {
		t.Fatalf("called again: %d watches, %d stops; want 2, 1", w, s)
	}
}

// TestIdleSplitTargetWatchedAgain: a split target stopped with its idle
// destination is watched again with the destination's next call, though
// the destination was not compiled again in between (reused).
func TestIdleSplitTargetWatchedAgain(t *testing.T) {
	ctx, m, src, fc := newIdleMesh(t, `
services:
  ledger: {}
  billing:
    routes: [{name: r, split: [{weight: 1}, {service: ledger, weight: 1}]}]
`)
	_, d := m.destination(m.state.Load(), "billing") // compiled as a first call would
	m.ensureWatchedAll(ctx, "billing")
	if w, _ := src.counts("ledger"); w != 1 {
		t.Fatalf("ledger watched %d times, want 1", w)
	}
	for range 3 { // the call before the first counts; idle 1, idle 2: stopped
		fc.BlockUntilTimers(1)
		fc.Advance(idleSweep)
	}
	fc.BlockUntilTimers(1)
	if _, s := src.counts("ledger"); s != 1 {
		t.Fatalf("ledger stopped %d times, want 1", s)
	}
	m.ensureWatchedAll(ctx, "billing")
	if w, _ := src.counts("ledger"); w != 2 || m.state.Load().services["billing"] != d {
		t.Fatalf("ledger watched %d times after billing's next call, want 2 (billing reused)", w)
	}
}

// newIdleMesh is a mesh "web" on the policy yaml, whose endpoint source
// counts the watches it starts and stops, on a fake clock; it closes with
// the test.
func newIdleMesh(t *testing.T, yaml string) (context.Context, *Mesh, *stopSource, *clocktest.Fake) {
	t.Helper()
	doc, err := policy.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	src := &stopSource{watches: map[string]int{}, stops: map[string]int{}, changed: make(chan struct{})}
	fc := clocktest.NewFake(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	m, err := New(ctx, WithService("web"), WithControlPlane(&stopPlane{localPlane: localPlane{doc: doc}, src: src}),
		WithLogger(meshtest.QuietLogger()), optionFunc(func(cfg *config) { cfg.clock = fc }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return ctx, m, src, fc
}
