package consul_test

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/consultest"
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
