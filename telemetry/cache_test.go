package telemetry

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

func TestCowCache(t *testing.T) {
	var builds atomic.Int64
	build := func(k int) string {
		builds.Add(1)
		return fmt.Sprint("v", k)
	}
	c := cowCache[int, string]{max: 3}
	for _, k := range []int{1, 2, 1, 3, 2, 1} {
		if got, want := c.get(k, build), fmt.Sprint("v", k); got != want {
			t.Fatalf("get(%d) = %q, want %q", k, got, want)
		}
	}
	if builds.Load() != 3 || c.len() != 3 {
		t.Fatalf("builds %d, len %d; want 3 and 3", builds.Load(), c.len())
	}
	// Full: a new key is built per call and never kept.
	for range 3 {
		if got := c.get(4, build); got != "v4" {
			t.Fatalf("get(4) on a full cache = %q", got)
		}
	}
	if builds.Load() != 6 || c.len() != 3 {
		t.Fatalf("full cache: builds %d, len %d; want 6 and 3", builds.Load(), c.len())
	}
}

func TestCowCacheConcurrent(t *testing.T) {
	c := cowCache[int, int]{max: 64}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				k := (i * (g + 1)) % 100
				if got := c.get(k, func(k int) int { return k * 2 }); got != k*2 {
					t.Errorf("get(%d) = %d", k, got)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := c.len(); n != 64 {
		t.Errorf("len = %d, want the cap 64", n)
	}
}

// TestAttributeCacheBounded feeds more distinct calls than the cap: the
// caches stop growing at the cap and every call is still recorded.
func TestAttributeCacheBounded(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	in, err := New(mp)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const calls = maxCachedAttributeSets + 500
	for i := range calls {
		svc := fmt.Sprint("svc-", i)
		in.RecordHTTPClient(ctx, 0, HTTPCall{Service: svc, Method: "GET", StatusCode: 200})
	}
	if n := in.httpOpts.len(); n != maxCachedAttributeSets {
		t.Errorf("HTTP cache holds %d sets, want the cap %d", n, maxCachedAttributeSets)
	}
	// Hostile methods do not reach the cache at all: they become _OTHER.
	before := in.httpOpts.len()
	for i := range 100 {
		in.RecordHTTPClient(ctx, 0, HTTPCall{Service: "svc-0", Method: fmt.Sprint("X", i), StatusCode: 200})
	}
	if in.httpOpts.len() != before {
		t.Errorf("cache grew with unknown methods")
	}
}

func TestNormalizeMethod(t *testing.T) {
	for in, want := range map[string]string{
		"GET": "GET", "POST": "POST", "PATCH": "PATCH", "QUERY": "QUERY",
		"": "GET", "get": "_OTHER", "PURGE": "_OTHER", "X-HOSTILE": "_OTHER",
	} {
		if got := normalizeMethod(in); got != want {
			t.Errorf("normalizeMethod(%q) = %q, want %q", in, got, want)
		}
	}
}
