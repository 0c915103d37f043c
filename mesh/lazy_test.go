package mesh

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/policy"
)

// lazyDoc is a policy of this workload (tester), billing at addr and n
// other services, with svc000's timeout t.
func lazyDoc(addr string, n int, t string) string {
	var s strings.Builder
	s.WriteString("version: v-" + t + "\ndefaults: {tls: disable}\nservices:\n  tester: {}\n")
	s.WriteString("  billing:\n    endpoints: [{address: " + addr + "}]\n    circuit_breaker: {consecutive_failures: 5}\n")
	for i := range n {
		timeout := "2s"
		if i == 0 {
			timeout = t
		}
		fmt.Fprintf(&s, "  svc%03d:\n    endpoints: [{address: 127.0.0.1:1}]\n    retry: {attempts: 3}\n"+
			"    routes: [{name: api, match: {path_prefix: /api}, timeout: %s}, {name: rest}]\n", i, timeout)
	}
	return s.String()
}

// updated is pol with svc000's block (and the version) of the policy
// lazyDoc(addr, n, t) makes, as a write of that one block makes it: the
// other services keep their resolved pointers.
func updated(t testing.TB, pol *policy.Snapshot, addr string, n int, timeout string) *policy.Snapshot {
	t.Helper()
	d, err := policy.Parse([]byte(lazyDoc(addr, n, timeout)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := policy.NewSnapshot(d, "test")
	if err != nil {
		t.Fatal(err)
	}
	s := *pol
	s.Version = other.Version
	s.Services = maps.Clone(pol.Services)
	s.Services["svc000"] = other.Services["svc000"]
	return &s
}

func compiledNames(m *Mesh) []string { return slices.Sorted(maps.Keys(m.state.Load().services)) }

// TestStateCompilesOwnAndCalled: of a policy of many services, a state
// compiles this workload's own and those called: a first call compiles
// its destination, which the states after it keep, across a policy update
// of another service (which compiles nothing) and an endpoint recompile.
func TestStateCompilesOwnAndCalled(t *testing.T) {
	b := meshtest.NewBackend(t, "billing", meshtest.Status(200))
	m := newTestMesh(t, lazyDoc(b.Addr(), 30, "1s"))
	if got := compiledNames(m); !slices.Equal(got, []string{"tester"}) {
		t.Fatalf("compiled %v at start, want [tester]", got)
	}
	if code, _, err := get(t, m, "http://billing/x"); err != nil || code != 200 {
		t.Fatalf("first call: %d %v", code, err)
	}
	st1 := m.state.Load()
	if got := compiledNames(m); !slices.Equal(got, []string{"billing", "tester"}) {
		t.Fatalf("compiled %v after billing's first call, want [billing tester]", got)
	}
	if code, _, err := get(t, m, "http://billing/x"); err != nil || code != 200 || m.state.Load() != st1 {
		t.Fatalf("second call: %d %v, or a new state", code, err)
	}

	// An update of a service not called compiles nothing.
	m.apply(updated(t, st1.policy, b.Addr(), 30, "3s"))
	st2 := m.state.Load()
	if st2 == st1 || st2.policy.Version != "v-3s" {
		t.Fatal("the update was not applied")
	}
	if !maps.Equal(st2.services, st1.services) {
		t.Fatalf("the update of svc000 compiled %v, want the destinations of before", slices.Sorted(maps.Keys(st2.services)))
	}
	// An endpoint recompile keeps them too.
	m.reapply()
	if st3 := m.state.Load(); st3 == st2 || !maps.Equal(st3.services, st1.services) {
		t.Fatal("the recompile did not keep billing's destination")
	}
	// A first call of svc000, after its update, compiles it as updated.
	if _, d := m.destination(m.state.Load(), "svc000"); d == nil || d.Routes[0].Eff.Timeout.String() != "3s" {
		t.Fatalf("svc000 compiled as %+v", d)
	}
	if got := compiledNames(m); !slices.Equal(got, []string{"billing", "svc000", "tester"}) {
		t.Fatalf("compiled %v", got)
	}
}

// TestConcurrentFirstCallsCompileOnce: first calls that race compile the
// destination once (one new state), and a policy update racing first
// calls of other services ends in a state that holds every one called.
func TestConcurrentFirstCallsCompileOnce(t *testing.T) {
	b := meshtest.NewBackend(t, "billing", meshtest.Status(200))
	m := newTestMesh(t, lazyDoc(b.Addr(), 30, "1s"))
	seq := m.state.Load().seq
	var wg sync.WaitGroup
	start := make(chan struct{})
	codes := make([]int, 8)
	errs := make([]error, 8)
	for i := range codes {
		wg.Go(func() {
			<-start
			codes[i], _, errs[i] = get(t, m, "http://billing/x")
		})
	}
	close(start)
	wg.Wait()
	for i := range codes {
		if errs[i] != nil || codes[i] != 200 {
			t.Fatalf("call %d: %d %v", i, codes[i], errs[i])
		}
	}
	if st := m.state.Load(); st.seq != seq+1 {
		t.Fatalf("%d states published for billing's first calls, want 1", st.seq-seq)
	}

	// Updates of svc000 race the first calls of svc001..svc008.
	pol := m.state.Load().policy
	start = make(chan struct{})
	wg.Go(func() {
		<-start
		for i := range 20 {
			m.apply(updated(t, pol, b.Addr(), 30, fmt.Sprint(i+2, "s")))
		}
	})
	for i := 1; i <= 8; i++ {
		wg.Go(func() {
			<-start
			st, d := m.destination(m.state.Load(), fmt.Sprintf("svc%03d", i))
			if d == nil || st.services[d.Name] != d {
				t.Errorf("svc%03d: no destination, or not in the state returned", i)
			}
		})
	}
	close(start)
	wg.Wait()
	want := []string{"billing", "tester"}
	for i := 1; i <= 8; i++ {
		want = append(want, fmt.Sprintf("svc%03d", i))
	}
	slices.Sort(want)
	if got := compiledNames(m); !slices.Equal(got, want) {
		t.Fatalf("compiled %v, want %v", got, want)
	}
}

// TestExplainCompilesTheDestination: Explain of a service no call needed
// yet explains it fully, as its first call would find it.
func TestExplainCompilesTheDestination(t *testing.T) {
	m := newTestMesh(t, lazyDoc("127.0.0.1:1", 3, "1s"))
	ex, err := m.Explain(mustRequest(t, "http://svc001/api/x"))
	if err != nil || ex.Route != "api" || ex.Attempts != 3 || len(ex.Endpoints) != 1 {
		t.Fatalf("explanation %+v, %v", ex, err)
	}
	if got := compiledNames(m); !slices.Equal(got, []string{"svc001", "tester"}) {
		t.Fatalf("compiled %v", got)
	}
}

// TestAdminViewsListEveryService: the admin views list the services no
// call needed yet too, without compiling them into the state.
func TestAdminViewsListEveryService(t *testing.T) {
	m := newTestMesh(t, lazyDoc("127.0.0.1:1", 3, "1s"))
	var got []string
	for _, se := range m.endpointsView() {
		got = append(got, se.Service)
	}
	if want := []string{"billing", "svc000", "svc001", "svc002", "tester"}; !slices.Equal(got, want) {
		t.Fatalf("/endpoints lists %v, want %v", got, want)
	}
	if bs := m.breakersView(); len(bs) != 1 || bs[0].Service != "billing" || bs[0].State != "closed" {
		t.Fatalf("/breakers %+v", bs)
	}
	if got := compiledNames(m); !slices.Equal(got, []string{"tester"}) {
		t.Fatalf("compiled %v", got)
	}
}
