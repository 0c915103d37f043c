package consul_test

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// TestConsulMeshLongPolls: the long polls a mesh holds on its agent, idle
// and after calling a destination, as the README counts them: the KV
// prefix, the Connect leaf and its intentions; then its own
// service-defaults entry, and the connect health and the discovery chain
// of each destination. No watch of the catalog or of config entry lists.
func TestConsulMeshLongPolls(t *testing.T) {
	agent := consultest.Start(t)
	nativeBackend(t, agent, "ledger", "v1", false, nil)
	counter := agent.Counting(t)
	m := meshOn(t, counter.Client, "web")
	want := []string{"/v1/agent/connect/ca/leaf/web", "/v1/config/service-intentions/web", "/v1/kv/inmesh/"}
	polls := func() []string { return slices.Sorted(maps.Keys(counter.InFlight())) }
	meshtest.Eventually(t, 10*time.Second, "the idle mesh's long polls", func() bool { return slices.Equal(polls(), want) })

	if code, body, err := get(t, m, "http://ledger/x"); err != nil || code != 200 || body != "v1" {
		t.Fatalf("ledger: %d %q %v", code, body, err)
	}
	want = slices.Sorted(slices.Values(append(want, "/v1/config/service-defaults/web", "/v1/discovery-chain/ledger", "/v1/health/connect/ledger")))
	meshtest.Eventually(t, 10*time.Second, "the long polls after a call", func() bool { return slices.Equal(polls(), want) })
}

// TestConsulFindsServicesAtTheFirstCall: a service Consul learns of after
// the mesh started, which no policy names, is a mesh service at its first
// call, over HTTP and in Explain; a host Consul does not know goes out,
// and asking about it again within a while costs no request.
func TestConsulFindsServicesAtTheFirstCall(t *testing.T) {
	agent := consultest.Start(t)
	counter := agent.Counting(t)
	m := meshOn(t, counter.Client, "web", mesh.WithIdentity(mustDevSource(t, "web")))
	outside := newCountingServer(t, "outside")
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	nativeBackend(t, agent, "ledger", "v1", false, nil) // after the mesh started
	ex, err := m.Explain(httptest.NewRequest(http.MethodGet, "http://ledger/x", nil))
	if err == nil && ex.Passthrough {
		t.Fatalf("ledger explained as an outside host: %+v", ex)
	}
	if eff := adminConfig(t, m).Effective; eff["ledger"] == nil {
		t.Fatalf("ledger is not in the policy in force after Explain")
	}

	// An outside host: asked once, then remembered.
	port := outside.addr()[strings.LastIndexByte(outside.addr(), ':')+1:]
	for range 3 {
		if _, body, err := get(t, m, "http://localhost:"+port+"/x"); err != nil || body != "outside" {
			t.Fatalf("outside host: %q %v", body, err)
		}
	}
	if n := counter.Requests()["/v1/catalog/connect/localhost"]; n != 1 {
		t.Fatalf("%d catalog questions about the outside host, want 1", n)
	}
	// An IP address is never asked about.
	for path := range counter.Requests() {
		if strings.Contains(path, "127.0.0.1") {
			t.Fatalf("asked Consul about an address: %s", path)
		}
	}
}

// TestEndpointSourceStopWatching: a destination the mesh stopped watching
// holds no long poll and keeps its endpoints; the next Watch starts again.
func TestEndpointSourceStopWatching(t *testing.T) {
	agent := consultest.Start(t)
	registerNative(t, agent, "ledger", "v1", "127.0.0.1:9", false)
	counter := agent.Counting(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := consul.NewEndpointSource(ctx, counter.Client, []string{"ledger"}, meshtest.QuietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const poll = "/v1/health/connect/ledger"
	meshtest.Eventually(t, 10*time.Second, "the health long poll", func() bool { return counter.InFlight()[poll] == 1 })

	s.StopWatching("ledger")
	meshtest.Eventually(t, 10*time.Second, "no health long poll", func() bool { return counter.InFlight()[poll] == 0 })
	if eps := s.Current().Endpoints("ledger"); len(eps) != 1 || eps[0].Address != "127.0.0.1:9" {
		t.Fatalf("endpoints after stopping: %v", eps)
	}
	s.Watch(ctx, "ledger")
	meshtest.Eventually(t, 10*time.Second, "the health long poll again", func() bool { return counter.InFlight()[poll] == 1 })
	if n := counter.Requests()[poll]; n < 3 {
		t.Fatalf("%d health requests, want the first, its long poll and the one after the restart", n)
	}
}

// TestConsulIdleDestination: a destination a mesh has not called for a
// while holds neither its health nor its chain long poll (and a mesh with
// no destination left, none on its service-defaults), still serves its
// last endpoints, and the next call watches it again.
func TestConsulIdleDestination(t *testing.T) {
	agent := consultest.Start(t)
	nativeBackend(t, agent, "ledger", "v1", false, nil)
	counter := agent.Counting(t)
	fc := clocktest.NewFake(time.Now())
	m := meshOn(t, counter.Client, "web", meshlink.WithClock(fc).(mesh.Option))
	if code, body, err := get(t, m, "http://ledger/x"); err != nil || code != 200 || body != "v1" {
		t.Fatalf("ledger: %d %q %v", code, body, err)
	}
	const health, chain = "/v1/health/connect/ledger", "/v1/discovery-chain/ledger"
	watching := func() bool { in := counter.InFlight(); return in[health] == 1 && in[chain] == 1 }
	meshtest.Eventually(t, 10*time.Second, "ledger's long polls", watching)
	for range 3 { // two sweeps without a call, after the one that saw it
		fc.BlockUntilTimers(1)
		fc.Advance(time.Minute)
	}
	meshtest.Eventually(t, 10*time.Second, "no long poll of ledger, nor of web's service-defaults", func() bool {
		in := counter.InFlight()
		return in[health] == 0 && in[chain] == 0 && in["/v1/config/service-defaults/web"] == 0
	})
	if code, body, err := get(t, m, "http://ledger/x"); err != nil || code != 200 || body != "v1" {
		t.Fatalf("ledger after an idle spell: %d %q %v", code, body, err)
	}
	meshtest.Eventually(t, 10*time.Second, "ledger's long polls again", watching)
}
