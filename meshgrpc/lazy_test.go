package meshgrpc

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/meshlink"
)

// TestFirstCallCompilesTheDestination: a client mesh whose policy holds
// many services compiles billing at its first call, which goes through,
// and none of the services it does not call; the calls after it find
// billing compiled.
func TestFirstCallCompilesTheDestination(t *testing.T) {
	var others strings.Builder
	for i := range 20 {
		fmt.Fprintf(&others, "  svc%02d: {}\n", i)
	}
	run(t, func(t *testing.T, md mode) {
		f := startFleet(t, md, others.String(), nil, alwaysAnswer(ok))
		p := meshlink.Of(f.client)
		for i := range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r := f.call(ctx)
			cancel()
			if r.err != nil {
				t.Fatalf("call %d: %v", i, r.err)
			}
		}
		st := p.State()
		got := slices.Sorted(maps.Keys(st.Services))
		want := []string{"billing"}
		if md == modeGRPC {
			want = []string{"billing", "enrollment"} // the caller's own service is in its policy
		}
		if !slices.Equal(got, want) {
			t.Fatalf("compiled %v, want %v", got, want)
		}
		if _, d := st.Destination("billing"); d != st.Services["billing"] {
			t.Fatal("Destination compiled billing again")
		}
	}, modeHTTP1, modeGRPC)
}
