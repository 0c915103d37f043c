package mesh

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/inmesh/inmesh/policy"
)

// BenchmarkApplyOneChanged applies policy updates to a mesh of 200
// destinations, each of which changes one service block: the work of a
// mesh per write to its control plane's policy, past the decoding.
func BenchmarkApplyOneChanged(b *testing.B) {
	doc := func(timeout string) string {
		var s strings.Builder
		s.WriteString("version: v\ndefaults: {tls: disable}\nservices:\n")
		for i := range 200 {
			t := "2s"
			if i == 0 {
				t = timeout
			}
			fmt.Fprintf(&s, "  svc%03d:\n    endpoints: [{address: 10.0.%d.1:80}, {address: 10.0.%d.2:80}]\n"+
				"    circuit_breaker: {consecutive_failures: 5, open_for: 30s}\n    retry: {attempts: 3, retry_on: [503]}\n"+
				"    routes: [{name: api, match: {path_prefix: /api}, timeout: %s}, {name: rest}]\n", i, i, i, t)
		}
		return s.String()
	}
	m := newTestMesh(b, doc("2s"))
	d, err := policy.Parse([]byte(doc("3s")))
	if err != nil {
		b.Fatal(err)
	}
	other, err := policy.NewSnapshot(d, "test")
	if err != nil {
		b.Fatal(err)
	}
	base := m.state.Load().policy
	snaps := [2]*policy.Snapshot{}
	for i, from := range []*policy.Snapshot{other, base} {
		s := *base
		s.Version = fmt.Sprintf("v%d", i)
		s.Services = maps.Clone(base.Services)
		s.Services["svc000"] = from.Services["svc000"]
		snaps[i] = &s
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m.apply(snaps[i%2])
	}
}
