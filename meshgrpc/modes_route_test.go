package meshgrpc

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// Routes, splits and discovery, in every protocol.

// canaryPolicy routes billing 90/10 over two plain backends, with a header
// route that sends everything to v2.
func canaryPolicy(addrs ...string) string {
	return fmt.Sprintf(`
version: canary-1
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints:
      - {address: %s, labels: {version: v1}}
      - {address: %s, labels: {version: v2}}
    subsets:
      v1: {version: v1}
      v2: {version: v2}
    routes:
      - name: canary-by-header
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: default
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`, addrs[0], addrs[1])
}

func TestSplitAndHeaderRoute(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// HTTP splits 90/10 (canaryPolicy), gRPC's Check 80/20 on a route
		// that matches its method (grpcCanaryPolicy).
		want := byMode(md, map[mode]struct {
			policy     func(addrs ...string) string
			calls      int
			share, tol float64
		}{
			modeHTTP1: {canaryPolicy, 2000, 0.10, 0.025},
			modeGRPC:  {grpcCanaryPolicy, 1000, 0.20, 0.04},
		})
		f := startFleetWith(t, md, fleetConfig{policyFor: want.policy, names: []string{"v1", "v2"}}, alwaysAnswer(ok), alwaysAnswer(ok))
		v1, v2 := f.Hits[0], f.Hits[1]
		got := map[string]int{}
		for range want.calls {
			r := f.call(context.Background())
			if !r.ok() {
				t.Fatalf("call: %v", r)
			}
			got[r.from]++
		}
		share := float64(v2()) / float64(want.calls)
		t.Logf("v2 share over %d calls: %.2f%% (%v)", want.calls, share*100, got)
		if math.Abs(share-want.share) > want.tol {
			t.Fatalf("v2 share %.3f, want %.2f ± %.3f", share, want.share, want.tol)
		}
		if v1()+v2() != int64(want.calls) || got["v2"] != int(v2()) {
			t.Fatalf("backends saw %d + %d calls for %d calls, answers %v", v1(), v2(), want.calls, got)
		}

		before1, before2 := v1(), v2()
		for range 50 {
			if r := f.call(context.Background(), "X-Canary", "true"); !r.ok() || r.from != "v2" {
				t.Fatalf("header route: %v", r)
			}
		}
		if v1() != before1 || v2() != before2+50 {
			t.Fatalf("header route leaked to v1: v1 %d->%d v2 %d->%d", before1, v1(), before2, v2())
		}
	})
}

// testPlane is a control plane of a fixed policy and fixed endpoints, as
// a discovery source (a catalog) reports them.
type testPlane struct {
	doc *policy.Document
	eps mesh.EndpointSource
}

func (p testPlane) Policy(mesh.Workload) (policy.Source, error) {
	return policy.NewStaticSource(p.doc), nil
}
func (p testPlane) Endpoints(mesh.Workload) (mesh.EndpointSource, error) {
	return p.eps, nil
}
func (testPlane) Identity(context.Context, mesh.Workload) (identity.Source, error) { return nil, nil }
func (testPlane) Authorizer(mesh.Workload) (*mesh.Authorization, error)            { return nil, nil }
func (testPlane) Register(context.Context, mesh.Workload, mesh.Instance) error {
	return mesh.ErrNoCatalog
}
func (testPlane) Close() error { return nil }

// fixedEndpoints is an endpoint source that knows snap from the first
// Watch on (the mesh applies what a source publishes after its start), and
// never changes after.
type fixedEndpoints struct {
	snap    *discovery.Snapshot
	cur     atomic.Pointer[discovery.Snapshot]
	changed chan struct{}
}

func (e *fixedEndpoints) Watch(context.Context, string) { e.cur.CompareAndSwap(nil, e.snap) }
func (e *fixedEndpoints) Current() *discovery.Snapshot  { return e.cur.Load() }
func (e *fixedEndpoints) Changed() <-chan struct{}      { return e.changed }

// withEndpoints starts a client mesh of enrollment on pol whose endpoints
// are eps, as discovery reports them.
func withEndpoints(t *testing.T, pol string, eps map[string][]discovery.Endpoint) *mesh.Mesh {
	t.Helper()
	doc, err := policy.Parse([]byte(pol))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	plane := testPlane{doc: doc, eps: &fixedEndpoints{snap: &discovery.Snapshot{Source: "test", Services: eps}, changed: make(chan struct{})}}
	m, err := mesh.New(ctx, mesh.WithService("enrollment"), mesh.WithControlPlane(plane), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// TestRouteAndDiscoveryLayers: a call no route matches fails at layer
// route; a call routed to a subset discovery left empty, or of a service
// without endpoints, at layer discovery.
func TestRouteAndDiscoveryLayers(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		// HTTP: charge is POST /charge, next is /next. gRPC: charge is Watch
		// (every RPC is a POST), next is the metadata x-next: true.
		routes := byMode(md, map[mode]string{
			modeHTTP1: `
defaults: {tls: disable} # plain test backends
services:
  billing:
    subsets: {v1: {version: v1}, v3: {version: v3}}
    routes:
      - name: charge
        match: {path_prefix: /charge, methods: [POST]}
        split: [{subset: v1, weight: 1}]
      - name: next
        match: {path_prefix: /next}
        split: [{subset: v3, weight: 1}]
  empty: {}
`,
			modeGRPC: `
trust_domain: mesh.local
services:
  billing:
    subsets: {v1: {version: v1}, v3: {version: v3}}
    routes:
      - name: charge
        match: {path_prefix: /grpc.health.v1.Health/Watch, methods: [POST]}
        split: [{subset: v1, weight: 1}]
      - name: next
        match: {headers: {x-next: "true"}}
        split: [{subset: v3, weight: 1}]
  empty: {}
  enrollment: {}
`,
		})
		f := startFleetWith(t, md, fleetConfig{policyFor: func(...string) string { return routes }}, alwaysAnswer(ok))
		// Discovery knows billing's v1 endpoint and nothing of v3.
		f = f.withClient(t, withEndpoints(t, routes, map[string][]discovery.Endpoint{
			"billing": {{Address: f.addrs[0], Labels: map[string]string{"version": "v1"}}},
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		// No route: HTTP GET /refund, gRPC Check.
		r := f.call(ctx)
		if md != modeGRPC {
			r = f.request(ctx, http.MethodGet, "http://billing/refund", "")
		}
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerRoute || ce.Route != "" {
			t.Fatalf("no route: %+v (%v)", ce, r)
		}
		if md == modeGRPC && grpcstatus.Code(r.err) != codes.FailedPrecondition {
			t.Fatalf("no route: code %v", grpcstatus.Code(r.err))
		}
		if md != modeGRPC {
			r := f.request(ctx, http.MethodGet, "http://billing/charge", "")
			if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerRoute {
				t.Fatalf("GET matched a POST-only route: %+v (%v)", ce, r)
			}
		}

		// Routed to the empty subset v3.
		r = f.call(ctx, "x-next", "true")
		if md != modeGRPC {
			r = f.request(ctx, http.MethodGet, "http://billing/next", "")
		}
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerDiscovery || ce.Route != "next" || ce.Subset != "v3" {
			t.Fatalf("empty subset: %+v (%v)", ce, r)
		}
		if md == modeGRPC && grpcstatus.Code(r.err) != codes.Unavailable {
			t.Fatalf("empty subset: code %v", grpcstatus.Code(r.err))
		}

		// A service without endpoints.
		target := byMode(md, map[mode]string{modeHTTP1: "http://empty/x", modeGRPC: "mesh:///empty"})
		r = f.callTarget(ctx, target)
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerDiscovery {
			t.Fatalf("no endpoints: %+v (%v)", ce, r)
		}
		if md == modeGRPC {
			if grpcstatus.Code(r.err) != codes.Unavailable {
				t.Fatalf("no endpoints: code %v", grpcstatus.Code(r.err))
			}
			// A service the policy does not know (HTTP: a host outside the
			// mesh, passed through).
			r = f.callTarget(ctx, "mesh:///nosuch")
			if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerPolicy || grpcstatus.Code(r.err) != codes.Unavailable {
				t.Fatalf("unknown service: %v", r)
			}
		}

		// The route that matches is served.
		if md == modeGRPC {
			w, err := f.grpc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = w.Recv()
			}
			if err != nil || f.Hits[0]() != 1 {
				t.Fatalf("Watch: %v, %d calls", err, f.Hits[0]())
			}
		} else if r := f.request(ctx, http.MethodPost, "http://billing/charge", "x"); !r.ok() || r.from != "b0" {
			t.Fatalf("POST /charge: %v", r)
		}
	})
}
