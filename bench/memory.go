package main

import (
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/inmesh/inmesh/policy"
)

// Memory: the heap a mesh holds per destination of its policy, with many
// destinations configured, telemetry off. Two shapes of destination: one
// endpoint with the chain's settings (from defaults), and the whole chain
// of the HTTP rows (two endpoints, two subsets, a header route and a
// split, and the settings).

func memorySections(e *env) ([]*section, error) {
	n := e.cfg.destinations
	s := &section{title: fmt.Sprintf("Memory: %d destinations configured", n), columns: []column{
		value("KiB/destination", "kib_per_dest", "%.1f"),
		value("KiB in all", "kib", "%.0f"),
	}}
	shapes := []struct {
		name    string
		service func(i int) string
	}{
		{"inmesh, one endpoint each", func(i int) string {
			return fmt.Sprintf("  svc-%04d: {endpoints: [{address: 127.0.0.1:%d}]}\n", i, 20000+i)
		}},
		{"inmesh, the full chain each", func(i int) string {
			return fmt.Sprintf(`  svc-%04d:
    endpoints: [{address: 127.0.0.1:%d, labels: {version: v1}}, {address: 127.0.0.1:%d, labels: {version: v2}}]
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - {name: canary, match: {headers: {x-canary: "true"}}, split: [{subset: v2, weight: 100}]}
      - {name: default, split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]}
`, i, 20000+i, 30000+i)
		}},
	}
	for _, sh := range shapes {
		var b strings.Builder
		fmt.Fprintf(&b, "trust_domain: %s\ndefaults:\n    tls: disable\n%sservices:\n", trustDomain, chainSettings.yaml())
		for i := range n {
			b.WriteString(sh.service(i))
		}
		doc, err := policy.Parse([]byte(b.String()))
		if err != nil {
			return nil, fmt.Errorf("memory policy: %w", err)
		}
		s.add(sh.name, func(time.Duration) (metrics, error) { return heapPerDestination(e, doc, n) })
	}
	return []*section{s}, nil
}

// heapPerDestination starts a mesh on doc (parsed before, and kept by the
// caller, so that only what the mesh holds counts) and returns the live
// heap it adds, in all and per destination.
func heapPerDestination(e *env, doc *policy.Document, n int) (metrics, error) {
	id := e.ca.Source("enrollment")
	before := liveHeap()
	m, err := startMesh("enrollment", doc, telemetryOff(), id)
	if err != nil {
		return nil, err
	}
	after := liveHeap()
	_ = m.Close()
	kib := float64(int64(after)-int64(before)) / 1024
	return metrics{"kib": kib, "kib_per_dest": kib / float64(n)}, nil
}

// liveHeap returns the bytes of live heap objects after a full collection
// (two, so that finalizers queued by the first have run).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
