package mesh

import (
	"runtime"
	"sync"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// lazyRetained is the heap a mesh of BenchmarkApplyLazy retains, measured
// once: the benchmark's later runs share the process with the meshes of
// the earlier ones, which their cleanups close and free meanwhile.
var lazyRetained struct {
	once sync.Once
	b    float64
}

// BenchmarkApplyLazy applies policy updates to a mesh whose policy holds
// 500 services, of which it calls one (billing), each update changing
// the block of another (svc000): the work of a mesh per write of a fleet's
// policy. heap-B/mesh is the heap a mesh retains with its state in force
// (after a GC), its policy snapshot included.
func BenchmarkApplyLazy(b *testing.B) {
	const n = 500
	be := meshtest.NewBackend(b, "billing", meshtest.Status(200))
	newMesh := func() *Mesh {
		m := newTestMesh(b, lazyDoc(be.Addr(), n, "1s"))
		if code, _, err := get(b, m, "http://billing/x"); err != nil || code != 200 {
			b.Fatalf("call: %d %v", code, err)
		}
		return m
	}
	lazyRetained.once.Do(func() {
		const meshes = 3
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		all := make([]*Mesh, meshes)
		for i := range all {
			all[i] = newMesh()
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		lazyRetained.b = float64(int64(ms.HeapAlloc)-int64(before)) / meshes
		runtime.KeepAlive(all)
	})
	m := newMesh()
	base := m.state.Load().policy
	snaps := [2]*policy.Snapshot{updated(b, base, be.Addr(), n, "3s"), updated(b, base, be.Addr(), n, "1s")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.apply(snaps[i%2])
	}
	b.ReportMetric(lazyRetained.b, "heap-B/mesh")
}
