package meshgrpc

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// Split entries that call another service, failover, connect_timeout, in
// every protocol.

// ledgerFleet starts ledger's backends (their mesh runs as server, ledger
// unless a test makes them present another identity), on a policy that
// knows ledger and billing.
func ledgerFleet(t *testing.T, md mode, server string, bs ...behaviour) *fleet {
	t.Helper()
	return ledgerFleetWith(t, md, server, "", bs...)
}

// ledgerFleetWith is ledgerFleet with more lines of ledger's policy (four
// spaces in).
func ledgerFleetWith(t *testing.T, md mode, server, more string, bs ...behaviour) *fleet {
	t.Helper()
	return startFleetWith(t, md, fleetConfig{server: server, names: []string{"l0", "l1"}, policyFor: func(addrs ...string) string {
		return "services:\n  billing: {}\n  ledger:\n" + more + "    endpoints:\n" + endpointLines(addrs, "") + "\n"
	}}, bs...)
}

// endpointLines renders addrs as endpoint lines (six spaces in) with the
// labels in braces, or none.
func endpointLines(addrs []string, labels string) string {
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, "      - {address: %s%s}\n", a, labels)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func TestSplitToAnotherService(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		ledger := ledgerFleet(t, md, "ledger", alwaysAnswer(ok))
		f := startFleetWith(t, md, fleetConfig{policyFor: func(addrs ...string) string {
			return fmt.Sprintf(`
services:
  ledger:
    endpoints:
%s
  billing:
    endpoints:
%s
    routes:
      - name: half
        split: [{weight: 50}, {service: ledger, weight: 50}]
`, endpointLines(ledger.addrs, ""), endpointLines(addrs, ""))
		}}, alwaysAnswer(ok))
		const calls = 400
		for range calls {
			if r := f.call(context.Background()); !r.ok() {
				t.Fatalf("call: %v", r)
			}
		}
		b, l := f.Hits[0](), ledger.Hits[0]()
		t.Logf("billing %d, ledger %d of %d", b, l, calls)
		if b+l != calls || b < calls/4 || l < calls/4 {
			t.Fatalf("billing saw %d calls, ledger %d, of %d: want about half each", b, l, calls)
		}
	}, allModes...)
}

func TestSplitToAnotherServiceVerifiesItsIdentity(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// ledger's endpoint presents billing's identity.
		impostor := ledgerFleet(t, md, "billing", alwaysAnswer(ok))
		f := startFleetWith(t, md, fleetConfig{policyFor: func(addrs ...string) string {
			return fmt.Sprintf(`
services:
  ledger:
    endpoints:
%s
  billing:
    endpoints:
%s
    routes:
      - name: all-to-ledger
        split: [{service: ledger, weight: 1}]
`, endpointLines(impostor.addrs, ""), endpointLines(addrs, ""))
		}}, alwaysAnswer(ok))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := f.call(ctx)
		ce := r.callError()
		if ce == nil || ce.Layer != mesh.LayerTLS || ce.Subset != "ledger" {
			t.Fatalf("want layer tls on subset ledger, got %+v (%v)", ce, r)
		}
		if impostor.Hits[0]() != 0 || f.Hits[0]() != 0 {
			t.Fatalf("the impostor saw %d calls, billing %d", impostor.Hits[0](), f.Hits[0]())
		}
	}, allModes...)
}

func TestFailoverToAnotherSubsetAndService(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		ledger := ledgerFleet(t, md, "ledger", alwaysAnswer(ok))
		// v1 fails and is ejected at its first failure; its calls then go
		// to v2 while v2 is up, and to ledger once v2 is ejected too (a
		// third endpoint, in no subset of the split, keeps the service's
		// outlier detection from refusing to eject them all).
		f := startFleetWith(t, md, fleetConfig{names: []string{"v1", "v2", "spare"}, policyFor: func(addrs ...string) string {
			return fmt.Sprintf(`
services:
  ledger:
    endpoints:
%s
  billing:
    outlier_detection: {consecutive_failures: 1, base_ejection: 1h, max_ejection_percent: 100}
    endpoints:
      - {address: %s, labels: {version: v1}}
      - {address: %s, labels: {version: v2}}
      - {address: %s, labels: {version: spare}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: fo
        split: [{subset: v1, weight: 1, failover: [{subset: v2}, {service: ledger}]}]
`, endpointLines(ledger.addrs, ""), addrs[0], addrs[1], addrs[2])
		}}, alwaysAnswer(fail), func(n int64) answer {
			if n <= 3 {
				return ok
			}
			return fail
		}, alwaysAnswer(ok))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// gRPC: until v1's connection is ready the balancer may send its
		// calls elsewhere; call until v1 has failed once.
		for f.Hits[0]() < 1 && ctx.Err() == nil {
			f.call(ctx)
		}
		for f.Hits[1]() < 4 && ctx.Err() == nil {
			f.call(ctx)
		}
		before := ledger.Hits[0]()
		for range 10 {
			if r := f.call(ctx); !r.ok() {
				t.Fatalf("call after both subsets were ejected: %v", r)
			}
		}
		if f.Hits[0]() != 1 || f.Hits[1]() != 4 || ledger.Hits[0]()-before != 10 || f.Hits[2]() != 0 {
			t.Fatalf("v1 saw %d calls, v2 %d, ledger %d more: want 1, 4, 10", f.Hits[0](), f.Hits[1](), ledger.Hits[0]()-before)
		}
		ex, err := f.client.Explain(meshtest.MustRequest(t, http.MethodGet, "http://billing/x"))
		if err != nil {
			t.Fatal(err)
		}
		want := []mesh.SplitTarget{{Service: "billing", Subset: "v1", Weight: 1, Endpoints: 1, Available: 0,
			Failover: []mesh.SplitTarget{
				{Service: "billing", Subset: "v2", Endpoints: 1, Available: 0},
				{Service: "ledger", Endpoints: 1, Available: 1},
			},
			Now: "ledger (failover from v1)"}}
		if !reflect.DeepEqual(ex.Targets, want) {
			t.Errorf("Explain targets %+v, want %+v", ex.Targets, want)
		}
		if !strings.Contains(ex.Reasons.Split, "v1 has no available endpoint: its calls go to ledger (failover from v1)") {
			t.Errorf("Explain split reason %q says nothing of the failover", ex.Reasons.Split)
		}
		wantSplit := []mesh.WeightedSubset{{Subset: "v1", Weight: 1, Failover: []policy.Target{{Subset: "v2"}, {Service: "ledger"}}}}
		if !reflect.DeepEqual(ex.Split, wantSplit) {
			t.Errorf("Explain split %+v, want %+v", ex.Split, wantSplit)
		}
	}, allModes...)
}

func TestFailoverNamesTargetsWhenNoneIsAvailable(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// v1 is ejected at its first failure (the spare keeps the outlier
		// detection from refusing it); ledger has no endpoint.
		dead, spare := deadAddr(t), deadAddr(t)
		pol := fmt.Sprintf(`
services:
  ledger: {}
  billing:
    outlier_detection: {consecutive_failures: 1, base_ejection: 1h, max_ejection_percent: 100}
    endpoints: [{address: %s, labels: {version: v1}}, {address: %s}]
    subsets: {v1: {version: v1}}
    routes:
      - {name: fo, split: [{subset: v1, weight: 1, failover: [{service: ledger}]}]}
`, dead, spare)
		f := clientOnly(t, md, pol)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var ce *mesh.CallError
		for range 5 {
			if ce = f.call(ctx).callError(); ce != nil && ce.Layer == mesh.LayerDiscovery {
				break
			}
		}
		if ce == nil || ce.Layer != mesh.LayerDiscovery || !strings.Contains(ce.Err.Error(), "failover targets ledger") {
			t.Fatalf("want layer discovery naming the failover targets, got %+v", ce)
		}
	})
}

// TestConnectTimeoutIsAConnectFailure: an endpoint that accepts
// connections and never completes a TLS handshake outlasts
// connect_timeout; the attempt is a connect failure, retried to the other
// endpoint (gRPC: its balancer gives the connection up and picks the
// other endpoint), and the stuck connection is closed by the caller long
// before any transport default (gRPC: 20s) would.
func TestConnectTimeoutIsAConnectFailure(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		stuck, closed := stuckAddr(t)
		f := startFleetWith(t, md, fleetConfig{policyFor: func(addrs ...string) string {
			return fmt.Sprintf(`
services:
  billing:
    connect_timeout: 100ms
    load_balancer: round_robin
    retry: {attempts: 3, backoff: {initial: 1ms, max: 2ms}, retry_on: [connect-failure]}
    endpoints: [{address: %s}, {address: %s}]
`, stuck, addrs[0])
		}}, alwaysAnswer(ok))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for range 4 {
			if r := f.call(ctx); !r.ok() {
				t.Fatalf("call: %v", r)
			}
		}
		if f.Hits[0]() != 4 {
			t.Fatalf("the good endpoint saw %d of 4 calls", f.Hits[0]())
		}
		meshtest.Eventually(t, 10*time.Second, "the caller gives up a stuck connection", func() bool { return closed.Load() > 0 })
	}, allModes...)
}

// stuckAddr returns the address of a listener that accepts connections
// and never answers, so a TLS handshake with it outlasts any connect
// timeout, and the count of its connections the caller closed.
func stuckAddr(t *testing.T) (string, *atomic.Int64) {
	ln := listenLoopback(t)
	var closed atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				// Read until the caller closes (its hello is never answered).
				_, _ = io.Copy(io.Discard, c)
				closed.Add(1)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), &closed
}

// watchingEndpoints is an endpoint source that knows the endpoints of
// every service of all but publishes a service's only once it is watched,
// as Consul's does.
type watchingEndpoints struct {
	all     map[string][]discovery.Endpoint
	mu      sync.Mutex
	watched map[string][]discovery.Endpoint
	cur     atomic.Pointer[discovery.Snapshot]
	changed chan struct{}
}

func (e *watchingEndpoints) Watch(_ context.Context, service string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.watched[service]; ok {
		return
	}
	e.watched[service] = e.all[service]
	e.cur.Store(&discovery.Snapshot{Source: "test", Services: maps.Clone(e.watched)})
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *watchingEndpoints) Current() *discovery.Snapshot { return e.cur.Load() }

func (e *watchingEndpoints) Changed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

func (e *watchingEndpoints) isWatched(service string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.watched[service]
	return ok
}

// TestFirstCallWatchesTheSplitsServices: with a control plane that watches
// endpoints on demand, the first call to billing, whose split calls
// ledger, starts ledger's watch too, and reaches ledger.
func TestFirstCallWatchesTheSplitsServices(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		ledger := ledgerFleet(t, md, "ledger", alwaysAnswer(ok))
		doc, err := policy.Parse([]byte(`
services:
  ledger: {}
  billing:
    routes:
      - {name: moved, split: [{service: ledger, weight: 1}]}
`))
		if err != nil {
			t.Fatal(err)
		}
		eps := &watchingEndpoints{all: map[string][]discovery.Endpoint{"ledger": {{Address: ledger.addrs[0]}}},
			watched: map[string][]discovery.Endpoint{}, changed: make(chan struct{})}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m, err := mesh.New(ctx, mesh.WithService("enrollment"), mesh.WithControlPlane(testPlane{doc: doc, eps: eps}), mesh.WithLogger(meshtest.QuietLogger()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		if eps.isWatched("ledger") {
			t.Fatal("ledger watched before any call")
		}
		f := ledger.withClient(t, m)
		if r := f.call(ctx); !r.ok() {
			t.Fatalf("first call: %v", r)
		}
		if !eps.isWatched("billing") || !eps.isWatched("ledger") || ledger.Hits[0]() != 1 {
			t.Fatalf("billing watched %v, ledger %v, ledger saw %d calls", eps.isWatched("billing"), eps.isWatched("ledger"), ledger.Hits[0]())
		}
	})
}

// TestSplitToAnotherServiceDenied: the denial of the service a split
// entry calls is believed from that service's verified mesh: layer authz.
func TestSplitToAnotherServiceDenied(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		ledger := ledgerFleetWith(t, md, "ledger", "    authorization: {default: deny}\n", alwaysAnswer(ok))
		f := startFleetWith(t, md, fleetConfig{policyFor: func(addrs ...string) string {
			return fmt.Sprintf(`
services:
  ledger:
    endpoints:
%s
  billing:
    endpoints:
%s
    routes:
      - {name: moved, split: [{service: ledger, weight: 1}]}
`, endpointLines(ledger.addrs, ""), endpointLines(addrs, ""))
		}}, alwaysAnswer(ok))
		r := f.call(context.Background())
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerAuthz || !strings.Contains(ce.Err.Error(), "ledger") {
			t.Fatalf("want layer authz naming ledger, got %+v (%v)", ce, r)
		}
	}, modeHTTP1, modeGRPC)
}
