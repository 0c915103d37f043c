package consul_test

import (
	"context"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// TestFleetStatus: three registered instances of billing, two on one
// policy version and one on another, report what they applied; the fleet
// status counts 2 and 1, and an instance that closes its mesh takes its
// report out.
func TestFleetStatus(t *testing.T) {
	agent := consultest.Start(t)
	putKV(t, agent.Client, "blue/services/billing", "timeout: 1s\n")
	putKV(t, agent.Client, "green/services/billing", "timeout: 2s\n")
	cfg := func(prefix string) consul.Config {
		return consul.Config{Client: agent.Client, Prefix: prefix, StatusPrefix: "fleet"}
	}
	start := func(prefix string) *mesh.Mesh {
		t.Helper()
		m := meshWith(t, cfg(prefix), "billing")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		if err := m.Register(ctx, mesh.Instance{Address: ln.Addr().String()}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	blue1, _, green := start("blue"), start("blue"), start("green")

	counts := func() map[string]int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fleet, err := consul.FleetStatus(ctx, cfg("blue"))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, ss := range fleet {
			if ss.Service != "billing" {
				t.Errorf("a status of service %q", ss.Service)
			}
			for v, insts := range ss.Versions {
				out[v] = len(insts)
			}
		}
		return out
	}
	want := map[string]int{blue1.PolicyVersion(): 2, green.PolicyVersion(): 1}
	if blue1.PolicyVersion() == green.PolicyVersion() {
		t.Fatalf("both prefixes give version %s", green.PolicyVersion())
	}
	meshtest.Eventually(t, 10*time.Second, "the fleet status to count 2 and 1", func() bool { return maps.Equal(counts(), want) })

	if err := green.Close(); err != nil {
		t.Fatal(err)
	}
	want = map[string]int{blue1.PolicyVersion(): 2}
	if got := counts(); !maps.Equal(got, want) {
		t.Fatalf("after green closed: %v, want %v", got, want)
	}
}
