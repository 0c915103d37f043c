package consul_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// BenchmarkChainPropagation measures, against a real agent, the time from
// a service-splitter write to the state the next call of a watching mesh
// uses, over 100 writes with 50 watching meshes (one sample per mesh and
// write), and reports p50 and p99 in milliseconds. Run it once:
//
//	go test ./consul -run '^$' -bench ChainPropagation -benchtime=1x
//
// The watchers use a dev identity and the backends are plain HTTP servers
// registered as Connect-native, behind tls: disable, so that 50 meshes
// need no 50 Connect leaves; the writes alternate 100/0 and 0/100, and a
// call of each mesh after each write checks the subset it reaches.
func BenchmarkChainPropagation(b *testing.B) {
	const meshes, writes = 50, 100
	agent := consultest.Start(b)
	httpService(b, agent.Client, "billing", "http")
	setEntry(b, agent.Client, versionSubsets("billing"))
	setEntry(b, agent.Client, splitter("billing", 100, 0))
	putKV(b, agent.Client, "inmesh/services/billing", `{"tls": "disable"}`)
	for _, v := range []string{"v1", "v2"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, v) }))
		b.Cleanup(srv.Close)
		registerNative(b, agent, "billing", v, srv.Listener.Addr().String(), false)
	}
	ms := make([]*mesh.Mesh, meshes)
	for i := range ms {
		ms[i] = benchMesh(b, agent, "watcher")
		if body := call(b, ms[i]); body != "v1" {
			b.Fatalf("first call: %q", body)
		}
	}
	for b.Loop() {
		var lat []time.Duration
		for w := range writes {
			want, w1, w2 := "v2", float32(0), float32(100)
			if w%2 == 1 {
				want, w1, w2 = "v1", 100, 0
			}
			start := time.Now()
			setEntry(b, agent.Client, splitter("billing", w1, w2))
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, m := range ms {
				wg.Go(func() {
					for !splitsTo(m, want) {
						if time.Since(start) > 10*time.Second {
							b.Errorf("write %d never reached a mesh", w)
							return
						}
						time.Sleep(100 * time.Microsecond)
					}
					d := time.Since(start)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				})
			}
			wg.Wait()
			for _, m := range ms {
				if body := call(b, m); body != want {
					b.Fatalf("write %d: a call reached %q, want %s", w, body, want)
				}
			}
		}
		slices.Sort(lat)
		p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
		b.ReportMetric(float64(p(0.50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	}
}

// splitsTo reports whether m's next call to billing goes to subset want
// only.
func splitsTo(m *mesh.Mesh, want string) bool {
	ex, err := m.Explain(httptest.NewRequest(http.MethodGet, "http://billing/x", nil))
	if err != nil {
		return false
	}
	found := false
	for _, s := range ex.Split {
		switch {
		case s.Weight == 0:
		case s.Subset != want:
			return false
		default:
			found = true
		}
	}
	return found
}

func call(b testing.TB, m *mesh.Mesh) string {
	b.Helper()
	resp, err := m.HTTPClient().Get("http://billing/x")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// benchMesh is a mesh of service on agent with a dev identity.
func benchMesh(b testing.TB, agent *consultest.Agent, service string) *mesh.Mesh {
	b.Helper()
	ca, err := identity.NewDevCA("mesh.local")
	if err != nil {
		b.Fatal(err)
	}
	src, err := ca.NewSource(service)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := mesh.New(ctx, mesh.WithService(service), mesh.WithIdentity(src),
		mesh.WithControlPlane(consul.New(consul.Config{Client: agent.Client})), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}
