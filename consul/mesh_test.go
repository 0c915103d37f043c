package mesh

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/consultest"
)

func putKV(t *testing.T, c *api.Client, key, value string) {
	t.Helper()
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}

func consulMesh(t *testing.T, agent *consultest.Agent, service string, opts ...Option) *Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]Option{WithService(service), WithConsul(ConsulConfig{Client: agent.Client}), WithLogger(quietLogger())}, opts...)
	m, err := New(ctx, all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// consulServer is billing's instance: an HTTPS server behind its mesh,
// registered in Consul with meta version.
func consulServer(t *testing.T, agent *consultest.Agent, version string) (*Mesh, *atomic.Int64) {
	t.Helper()
	m := consulMesh(t, agent, "billing")
	var hits atomic.Int64
	srv := httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, version)
	})))
	srv.TLS = m.ServerTLSConfig()
	// Consul's TCP check opens and closes connections: not handshake errors worth a log.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Register(ctx, Instance{Address: srv.Listener.Addr().String(), Meta: map[string]string{"version": version}}); err != nil {
		t.Fatal(err)
	}
	return m, &hits
}

func split(w1, w2 int) string {
	return fmt.Sprintf(`{"subsets": {"v1": {"version": "v1"}, "v2": {"version": "v2"}},
		"routes": [{"name": "default", "split": [{"subset": "v1", "weight": %d}, {"subset": "v2", "weight": %d}]}]}`, w1, w2)
}

func TestConsulControlPlane(t *testing.T) {
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", split(100, 0))
	putKV(t, agent.Client, "inmesh/services/enrollment", "{}")
	consulServer(t, agent, "v1")
	consulServer(t, agent, "v2")
	client := consulMesh(t, agent, "enrollment")

	id, err := client.Identity()
	if err != nil || !strings.HasSuffix(id.ID.String(), "/ns/default/dc/dc1/svc/enrollment") {
		t.Fatalf("identity %v %v", id, err)
	}
	// mTLS between two meshes on Connect CA certificates, v1 only.
	for range 10 {
		if _, body, err := get(t, client, "http://billing/x"); err != nil || body != "v1" {
			t.Fatalf("%q %v", body, err)
		}
	}

	// A KV write changes routing within 1 s.
	start := time.Now()
	putKV(t, agent.Client, "inmesh/services/billing", split(0, 100))
	for {
		_, body, err := get(t, client, "http://billing/x")
		if err != nil {
			t.Fatal(err)
		}
		if body == "v2" {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the KV write did not change routing")
		}
	}
	t.Logf("KV write to the first request under the new policy: %v", time.Since(start))

	// An invalid KV write changes nothing.
	version := client.PolicyVersion()
	putKV(t, agent.Client, "inmesh/services/billing", `{"retry": {"attempts": 11}}`)
	eventually(t, 5*time.Second, "rejection", func() bool { return client.rejects.Load() > 0 })
	if client.PolicyVersion() != version {
		t.Fatal("an invalid key replaced the policy")
	}
	if _, body, err := get(t, client, "http://billing/x"); err != nil || body != "v2" {
		t.Fatalf("after an invalid write: %q %v", body, err)
	}

	// A deny intention reaches the open connections within 2 s.
	if _, _, err := agent.Client.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "billing",
		Sources: []*api.SourceIntention{{Name: "enrollment", Action: api.IntentionActionDeny}}}, nil); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		_, _, err := get(t, client, "http://billing/x")
		if err != nil {
			if ce := callError(t, err); ce.Layer != LayerAuthz {
				t.Fatalf("want authz, got %v", err)
			}
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("the deny intention did not apply within 2s")
		}
	}
	t.Logf("deny intention applied on open connections after %v", time.Since(start))
}

func TestConsulOutageAndCache(t *testing.T) {
	agent := consultest.Start(t)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	if err := agent.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "ledger-1", Name: "ledger", Address: host, Port: p}); err != nil {
		t.Fatal(err)
	}
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable", "retry": {"attempts": 2}}`)
	cache := t.TempDir()
	devca := WithIdentity(mustDevSource(t, "enrollment"))
	m := consulMesh(t, agent, "enrollment", WithCacheDir(cache), devca)
	if _, body, err := get(t, m, "http://ledger/x"); err != nil || body != "ok" {
		t.Fatalf("%q %v", body, err)
	}

	// Calls keep working while the agent is down for 15 s...
	agent.Stop()
	var wg sync.WaitGroup
	stop := time.Now().Add(15 * time.Second)
	var failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if _, _, err := get(t, m, "http://ledger/x"); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed while the agent was down", failed.Load())
	}

	// ...and the mesh recovers when it returns: a dev agent restarts empty,
	// so the test writes the policy again, then a change must apply.
	agent.Restart(t)
	if err := agent.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "ledger-1", Name: "ledger", Address: host, Port: p}); err != nil {
		t.Fatal(err)
	}
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable", "retry": {"attempts": 3}}`)
	eventually(t, 15*time.Second, "recovery after the agent returned", func() bool {
		svc := m.state.Load().policy.Service("ledger")
		return svc != nil && svc.Effective.Attempts == 3
	})
	if _, body, err := get(t, m, "http://ledger/x"); err != nil || body != "ok" {
		t.Fatalf("after recovery: %q %v", body, err)
	}

	// A restart with the agent down serves from the cache.
	agent.Pause()
	defer agent.Resume()

	m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m2, err := New(ctx, WithService("enrollment"), WithConsul(ConsulConfig{Client: agent.Client}), WithCacheDir(cache), devca, WithLogger(quietLogger()))
	if err != nil {
		t.Fatalf("restart from the cache: %v", err)
	}
	defer m2.Close()
	if !m2.servingFromCache() {
		t.Fatal("not serving from the cache")
	}
	if _, body, err := get(t, m2, "http://ledger/x"); err != nil || body != "ok" {
		t.Fatalf("from the cache: %q %v", body, err)
	}
}

func mustDevSource(t *testing.T, service string) identity.Source {
	t.Helper()
	ca, err := identity.NewDevCA("mesh.local")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.NewSource(service)
	if err != nil {
		t.Fatal(err)
	}
	return src
}
