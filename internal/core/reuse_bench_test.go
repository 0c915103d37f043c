package core

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

// manyServices is a policy document of n services, each with three
// endpoints, a breaker, retries and two routes; the timeout of service 0
// is timeout.
func manyServices(n int, timeout string) string {
	var b strings.Builder
	b.WriteString("version: v\nservices:\n")
	for i := range n {
		t := "2s"
		if i == 0 {
			t = timeout
		}
		fmt.Fprintf(&b, `  svc%03d:
    endpoints: [{address: 10.0.%d.1:80}, {address: 10.0.%d.2:80}, {address: 10.0.%d.3:80}]
    circuit_breaker: {consecutive_failures: 5, open_for: 30s}
    retry: {attempts: 3, retry_on: [503]}
    routes:
      - {name: api, match: {path_prefix: /api}, timeout: %s}
      - {name: rest}
`, i, i, i, i, t)
	}
	return b.String()
}

func mustSnapshot(tb testing.TB, doc string) *policy.Snapshot {
	tb.Helper()
	d, err := policy.Parse([]byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := policy.NewSnapshot(d, "test")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// withService returns a copy of snap at version, whose services are
// snap's (the same pointers) but name's, which is from's: the snapshot a
// write of one service block makes.
func withService(snap *policy.Snapshot, version, name string, from *policy.Snapshot) *policy.Snapshot {
	out := *snap
	out.Version = version
	out.Services = maps.Clone(snap.Services)
	out.Services[name] = from.Services[name]
	return &out
}

func benchEnv(tb testing.TB) *Env {
	in, err := telemetry.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = in.Close() })
	return &Env{Clock: clocktest.NewFake(epoch), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Instr: in,
		Err: func(ce *CallError) error { return testError{ce} }}
}

// BenchmarkCompileOneChanged compiles a policy of 200 services after a
// write that changed one of them, as every write to a control plane's
// policy does.
func BenchmarkCompileOneChanged(b *testing.B) {
	const n = 200
	base := mustSnapshot(b, manyServices(n, "2s"))
	other := mustSnapshot(b, manyServices(n, "3s"))
	snaps := [2]*policy.Snapshot{withService(base, "v1", "svc000", other), withService(base, "v2", "svc000", base)}
	// The endpoints of each write as a mesh builds them: new slices of
	// the same endpoints.
	eps := [2]*discovery.Snapshot{discovery.StaticOf(snaps[0]), discovery.StaticOf(snaps[1])}
	env := benchEnv(b)
	_, reg := Compile(env, NewRegistry(), snaps[1], eps[1])
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		_, reg = Compile(env, reg, snaps[i%2], eps[i%2])
	}
}
