package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// knownPlane is a control plane whose endpoint source knows its endpoints
// before the mesh starts and never changes them.
type knownPlane struct {
	doc *policy.Document
	eps *knownEndpoints
}

func (p knownPlane) Policy(Workload) (policy.Source, error) {
	return policy.NewStaticSource(p.doc), nil
}
func (p knownPlane) Endpoints(Workload) (EndpointSource, error) { return p.eps, nil }
func (knownPlane) Identity(context.Context, Workload) (identity.Source, error) {
	return nil, nil
}
func (knownPlane) Authorizer(Workload) (*Authorization, error)        { return nil, nil }
func (knownPlane) Register(context.Context, Workload, Instance) error { return ErrNoCatalog }
func (knownPlane) Close() error                                       { return nil }

type knownEndpoints struct{ snap *discovery.Snapshot }

func (e *knownEndpoints) Watch(context.Context, string) {}
func (e *knownEndpoints) Current() *discovery.Snapshot  { return e.snap }
func (e *knownEndpoints) Changed() <-chan struct{}      { return nil }

// TestEndpointsKnownAtStartServe: endpoints an endpoint source already
// holds when New runs are in force from the first call, not only after the
// source's next change.
func TestEndpointsKnownAtStartServe(t *testing.T) {
	b := meshtest.NewBackend(t, "billing", nil)
	doc, err := policy.Parse([]byte("services:\n  billing: {tls: disable}\n"))
	if err != nil {
		t.Fatal(err)
	}
	eps := &knownEndpoints{snap: &discovery.Snapshot{Source: "test", Services: map[string][]discovery.Endpoint{
		"billing": {{Address: b.Addr()}},
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, WithService("tester"), WithControlPlane(knownPlane{doc: doc, eps: eps}), WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, body, err := get(t, m, "http://billing/x"); err != nil || body != "billing" {
		t.Fatalf("%q %v", body, err)
	}
	if b.Hits.Load() != 1 {
		t.Fatalf("billing served %d calls, want 1", b.Hits.Load())
	}
}
