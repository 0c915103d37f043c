package consul_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

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
	meshtest.Eventually(t, 5*time.Second, "rejection", func() bool { return adminConfig(t, client).UpdatesRejected > 0 })
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
			if ce := meshtest.ErrorAs[*mesh.CallError](t, err); ce.Layer != mesh.LayerAuthz {
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
	ledger := consultest.Instance{Service: "ledger", ID: "ledger-1", Addr: srv.Listener.Addr().String()}
	consultest.RegisterNative(t, agent.Client, ledger)
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable", "retry": {"attempts": 2}}`)
	cache := t.TempDir()
	devca := mesh.WithIdentity(mustDevSource(t, "enrollment"))
	m := consulMesh(t, agent, "enrollment", mesh.WithCacheDir(cache), devca)
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
	consultest.RegisterNative(t, agent.Client, ledger)
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable", "retry": {"attempts": 3}}`)
	meshtest.Eventually(t, 15*time.Second, "recovery after the agent returned", func() bool {
		ex, err := m.Explain(httptest.NewRequest(http.MethodGet, "http://ledger/x", nil))
		return err == nil && ex.Service == "ledger" && ex.Attempts == 3
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
	m2, err := mesh.New(ctx, mesh.WithService("enrollment"), mesh.WithControlPlane(consul.New(consul.Config{Client: agent.Client})),
		mesh.WithCacheDir(cache), devca, mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatalf("restart from the cache: %v\nagent log:\n%s", err, agent.Log())
	}
	defer m2.Close()
	if src := adminConfig(t, m2).Source; !strings.HasPrefix(src, "cache:") {
		t.Fatalf("not serving from the cache: source %q", src)
	}
	if _, body, err := get(t, m2, "http://ledger/x"); err != nil || body != "ok" {
		t.Fatalf("from the cache: %q %v", body, err)
	}
}
