package consul

import (
	"context"
	"testing"
	"time"
)

// outsideFinder is a control plane's finder that Consul told lately it
// does not know api.example.com.
func outsideFinder() *configEntries {
	h := &entryHub{}
	h.misses.Store(&map[string]time.Time{"api.example.com": time.Now()})
	return &configEntries{hub: h}
}

// TestFindServiceOutsideAllocatesNothing: every call to an outside host
// asks findService; for a host Consul did not know lately, and for an
// address, it asks nothing and allocates nothing.
func TestFindServiceOutsideAllocatesNothing(t *testing.T) {
	c := outsideFinder()
	ctx := context.Background()
	for _, host := range []string{"api.example.com", "127.0.0.1", "[::1]", "Not_A_Service"} {
		if n := testing.AllocsPerRun(100, func() {
			if c.findService(ctx, host) {
				t.Fatalf("%s found", host)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per call", host, n)
		}
	}
}

func BenchmarkFindServiceOutside(b *testing.B) {
	c := outsideFinder()
	ctx := context.Background()
	for _, host := range []string{"api.example.com", "127.0.0.1"} {
		b.Run(host, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if c.findService(ctx, host) {
					b.Fatal("found")
				}
			}
		})
	}
}
