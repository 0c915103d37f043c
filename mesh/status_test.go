package mesh

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// statusPlane is a policy alone, with a catalog that accepts every
// instance and keeps the reports of what they applied.
type statusPlane struct {
	localPlane
	mu      sync.Mutex
	reports []PolicyStatus
	closed  bool
}

func (p *statusPlane) Register(context.Context, Workload, Instance) error { return nil }

func (p *statusPlane) ReportStatus(_ context.Context, st PolicyStatus) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		panic("a report after the control plane closed")
	}
	p.reports = append(p.reports, st)
	return nil
}

func (p *statusPlane) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

func (p *statusPlane) last() (PolicyStatus, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reports) == 0 {
		return PolicyStatus{}, 0
	}
	return p.reports[len(p.reports)-1], len(p.reports)
}

// TestStatusReports: a registered instance reports the version it
// applied to a control plane that keeps a fleet's status, nothing before
// it registered, and nothing after Close began.
func TestStatusReports(t *testing.T) {
	ctx, m, plane := newStatusMesh(t, "version: fleet-1\nservices: {billing: {}}\n")
	if _, n := plane.last(); n != 0 {
		t.Fatalf("%d reports before Register", n)
	}
	if err := m.Register(ctx, Instance{ID: "billing-1", Address: "127.0.0.1:9001"}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, "a report of the instance", func() bool { _, n := plane.last(); return n > 0 })
	st, _ := plane.last()
	if st.Service != "billing" || st.Instance != "billing-1" || st.Version != "fleet-1" || st.Cached || st.Hash == "" {
		t.Errorf("report %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStatusReportsStartAtRegister: a mesh that registers no instance
// keeps no goroutine for its reports (a fleet of callers on one host pays
// for each); the first Register starts it.
func TestStatusReportsStartAtRegister(t *testing.T) {
	ctx, m, plane := newStatusMesh(t, "services: {billing: {}}\n")
	defer m.Close()
	reporters := func() int {
		buf := make([]byte, 1<<20)
		return strings.Count(string(buf[:runtime.Stack(buf, true)]), "mesh.(*Mesh).runStatusReportsLocked.func1")
	}
	if n := reporters(); n != 0 {
		t.Fatalf("%d report goroutines before Register", n)
	}
	if err := m.Register(ctx, Instance{ID: "billing-1", Address: "127.0.0.1:9001"}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, "a report of the instance", func() bool { _, n := plane.last(); return n > 0 })
	if n := reporters(); n != 1 {
		t.Fatalf("%d report goroutines after Register", n)
	}
}

// TestStatusReportsSpread: the report of a registration goes at once;
// that of a policy applied waits for a random moment within statusSpread
// (on the mesh's clock), and the policies applied meanwhile make one
// report, of the latest.
func TestStatusReportsSpread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(version string) {
		if err := os.WriteFile(path, []byte("version: "+version+"\nservices: {billing: {}}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("v1")
	plane := &statusPlane{localPlane: localPlane{file: path}}
	fc := clocktest.NewFake(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("billing"), WithControlPlane(plane), WithLogger(meshtest.QuietLogger()),
		meshlink.WithClock(fc).(Option), meshlink.WithRand(func() float64 { return 0.5 }).(Option))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Register(ctx, Instance{ID: "billing-1", Address: "127.0.0.1:9001"}); err != nil {
		t.Fatal(err)
	}
	// At once, with the clock still.
	meshtest.Eventually(t, 5*time.Second, "the report of the registration", func() bool { _, n := plane.last(); return n == 1 })

	for _, v := range []string{"v2", "v3"} {
		write(v)
		meshtest.Eventually(t, 5*time.Second, "policy "+v+" applied", func() bool { return m.PolicyVersion() == v })
	}
	fc.BlockUntilTimers(1) // the report is due in statusSpread/2
	if st, n := plane.last(); n != 1 {
		t.Fatalf("%d reports before the spread delay passed (last %+v), want 1", n, st)
	}
	fc.Advance(statusSpread/2 - time.Millisecond)
	if _, n := plane.last(); n != 1 {
		t.Fatalf("%d reports before the drawn delay passed, want 1", n)
	}
	fc.Advance(time.Millisecond)
	meshtest.Eventually(t, 5*time.Second, "the report of the policies applied", func() bool { _, n := plane.last(); return n == 2 })
	if st, _ := plane.last(); st.Version != "v3" {
		t.Errorf("report of version %q, want the latest, v3", st.Version)
	}
	if n := fc.PendingTimers(); n != 0 {
		t.Errorf("%d timers pending after the report", n)
	}
}

// newStatusMesh is a mesh of billing on the policy yaml, whose control
// plane keeps the reports; the caller closes it.
func newStatusMesh(t *testing.T, yaml string) (context.Context, *Mesh, *statusPlane) {
	t.Helper()
	doc, err := policy.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	plane := &statusPlane{localPlane: localPlane{doc: doc}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	m, err := New(ctx, WithService("billing"), WithControlPlane(plane), WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return ctx, m, plane
}
