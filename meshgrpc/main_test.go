package meshgrpc

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The helpers below are the HTTP side of the tests that run one body under
// both protocols (modes_test.go); the ones package mesh's tests share are
// in internal/meshtest.

// newTestMesh starts a mesh for service "tester" on the policy in yamlDoc.
func newTestMesh(t testing.TB, yamlDoc string, opts ...mesh.Option) *mesh.Mesh {
	t.Helper()
	doc, err := policy.Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := append([]mesh.Option{mesh.WithService("tester"), mesh.WithPolicy(doc), mesh.WithLogger(meshtest.QuietLogger())}, opts...)
	m, err := mesh.New(ctx, all...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// withClock is the option that sets a mesh's clock.
func withClock(c clock.Clock) mesh.Option { return meshlink.WithClock(c).(mesh.Option) }

// benchMesh is a mesh of benchPolicy with metrics through the OTel SDK.
func benchMesh(b *testing.B, addr1, addr2, timeout string) *mesh.Mesh {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return newTestMesh(b, meshtest.BenchPolicy(addr1, addr2, timeout), mesh.WithMeterProvider(mp))
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
