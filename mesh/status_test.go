package mesh

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

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
	doc, err := policy.Parse([]byte("version: fleet-1\nservices: {billing: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	plane := &statusPlane{localPlane: localPlane{doc: doc}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("billing"), WithControlPlane(plane), WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
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
	doc, err := policy.Parse([]byte("services: {billing: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	plane := &statusPlane{localPlane: localPlane{doc: doc}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("billing"), WithControlPlane(plane), WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
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
