package mesh

import (
	"runtime"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// BenchmarkApplyLazy applies policy updates to a mesh whose policy holds
// 500 services, of which it calls one (billing), each update changing
// the block of another (svc000): the work of a mesh per write of a fleet's
// policy. heap-B/mesh is the heap the mesh retains with its state in force
// (after a GC), its policy snapshot included.
func BenchmarkApplyLazy(b *testing.B) {
	const n = 500
	be := meshtest.NewBackend(b, "billing", meshtest.Status(200))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	m := newTestMesh(b, lazyDoc(be.Addr(), n, "1s"))
	if code, _, err := get(b, m, "http://billing/x"); err != nil || code != 200 {
		b.Fatalf("call: %d %v", code, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	retained := float64(int64(ms.HeapAlloc) - int64(before))
	base := m.state.Load().policy
	snaps := [2]*policy.Snapshot{updated(b, base, be.Addr(), n, "3s"), updated(b, base, be.Addr(), n, "1s")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.apply(snaps[i%2])
	}
	b.ReportMetric(retained, "heap-B/mesh")
}
