package meshgrpc

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// pushSource is a policy source that emits the snapshots sent to it.
type pushSource chan *policy.Snapshot

func (s pushSource) Watch(ctx context.Context, emit func(policy.Event)) error {
	for {
		select {
		case snap := <-s:
			emit(policy.Event{Snapshot: snap})
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (pushSource) String() string { return "push" }

type pushPlane struct {
	testPlane
	src pushSource
}

func (p pushPlane) Policy(mesh.Workload) (policy.Source, error) { return p.src, nil }

// TestReusedDestinationNamesNewVersionRPC: after an update that changes
// another service's block, billing's destination is reused, and its RPC
// errors name the version now in force.
func TestReusedDestinationNamesNewVersionRPC(t *testing.T) {
	b := newGRPCBackend(t, "v1")
	b.serve(t, newTestMesh(t, billingPolicy("")(b.Addr()), mesh.WithService("billing")))
	snap := func(version, ledgerTimeout string) *policy.Snapshot {
		doc, err := policy.Parse([]byte(fmt.Sprintf(`version: %s
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    routes: [{name: marked, match: {header: [{name: x-route, exact: "1"}]}}]
  ledger:
    endpoints: [{address: 127.0.0.1:1}]
    timeout: %s
  enrollment: {}
`, version, b.Addr(), ledgerTimeout)))
		if err != nil {
			t.Fatal(err)
		}
		s, err := policy.NewSnapshot(doc, "push")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	g1 := snap("g1", "1s")
	src := make(pushSource, 1)
	src <- g1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := mesh.New(ctx, mesh.WithService("enrollment"), mesh.WithControlPlane(pushPlane{src: src}), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	c := dial(t, m, "billing")
	marked := metadata.AppendToOutgoingContext(ctx, "x-route", "1")
	if _, err := c.Check(marked, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a call of the route: %v", err)
	}

	// A write of ledger's block: billing's resolved service stays.
	g2 := *g1
	g2.Version = "g2"
	g2.Services = maps.Clone(g1.Services)
	g2.Services["ledger"] = snap("g2", "2s").Services["ledger"]
	src <- &g2
	meshtest.Eventually(t, 5*time.Second, "g2 applied", func() bool { return m.PolicyVersion() == "g2" })
	_, err = c.Check(ctx, &healthpb.HealthCheckRequest{})
	if ce := FromStatus(err); ce == nil || ce.Layer != mesh.LayerRoute || ce.Service != "billing" || ce.PolicyVersion != "g2" {
		t.Fatalf("unmarked call: %v (%+v), want layer route under g2", err, ce)
	}
	if _, err := c.Check(marked, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a call of the route after g2: %v", err)
	}
}
