package meshgrpc

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// TestHashedUnaryClientAllocations pins the allocations of a unary call on
// a maglev route hashed by a metadata header, as TestUnaryClientAllocations
// does for round robin: its two, and one more, the copy of the header's
// values that grpc-go's metadata.ValueFromOutgoingContext returns.
func TestHashedUnaryClientAllocations(t *testing.T) {
	const want = 3
	m := newTestMesh(t, `
defaults: {tls: disable}
services:
  billing:
    endpoints: [{address: "127.0.0.1:9"}, {address: "127.0.0.1:10"}, {address: "127.0.0.1:11"}]
    load_balancer: {policy: maglev, hash: {header: x-user}}
`, telemetryOff()...)
	a := newAdapter(m, "DialOptions")
	cc, err := grpc.NewClient("mesh:///billing", DialOptions(m)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user", "alice")
	picked := map[string]int{}
	hashed := 0
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		if s, _ := ctx.Value(pickSlotKey{}).(*pickSlot); s != nil {
			if s.hashed {
				hashed++
			}
			h := s.pool.PickHash(s.hash, s.prev, s.now)
			s.host.Store(h)
			h.Begin()
			s.done(balancerDoneOK)
			picked[h.Address]++
		}
		return nil
	}
	call := func() {
		if err := a.unaryClient(ctx, checkMethod, nil, nil, cc, invoker); err != nil {
			t.Fatal(err)
		}
	}
	call()
	if got := testing.AllocsPerRun(200, call); got != want {
		t.Errorf("a hashed unary call allocates %v times, want %d (lower the pin if fewer)", got, want)
	}
	if len(picked) != 1 || hashed == 0 {
		t.Errorf("alice's calls went to %v (%d hashed), want one endpoint", picked, hashed)
	}
}
