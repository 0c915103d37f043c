package meshgrpc

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/inmesh/inmesh/mesh"
)

// TestGRPCPolicyVersionHeader: under mesh.WithPolicyVersionHeader the
// server names the policy version in the header metadata of every RPC it
// serves, a denied one included, and without it in none.
func TestGRPCPolicyVersionHeader(t *testing.T) {
	for _, on := range []bool{false, true} {
		var opts []mesh.Option
		if on {
			opts = append(opts, mesh.WithPolicyVersionHeader())
		}
		b := newGRPCBackend(t, "v1")
		pol := "version: pv-7\n" + billingPolicy("    authorization: {default: deny, rules: [{from: [enrollment]}]}\n")(b.Addr())
		billing := newTestMesh(t, pol, append([]mesh.Option{mesh.WithService("billing")}, opts...)...)
		b.serve(t, billing)
		want := map[bool]string{true: "pv-7"}[on]
		for _, caller := range []string{"enrollment", "progress"} { // allowed, denied
			c := dial(t, newTestMesh(t, pol, mesh.WithService(caller)), "billing")
			var hdr metadata.MD
			_, err := c.Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
			if denied := err != nil; denied != (caller == "progress") {
				t.Fatalf("%s: err %v", caller, err)
			}
			got := ""
			if v := hdr.Get(policyVersionKey); len(v) > 0 {
				got = v[0]
			}
			if got != want {
				t.Errorf("WithPolicyVersionHeader %v, caller %s: %s %q, want %q", on, caller, policyVersionKey, got, want)
			}
		}
	}
}
