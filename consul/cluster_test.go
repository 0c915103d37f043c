package consul_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// serveOn starts service's mesh on client's agent with an HTTPS server
// behind its Handler, registered with the mesh, stopped when the test
// ends.
func serveOn(t *testing.T, client *api.Client, service, body string) *mesh.Mesh {
	t.Helper()
	m := meshOn(t, client, service)
	serveRegistered(t, m, body)
	return m
}

// serveRegistered serves body with an HTTPS server behind m's Handler,
// registered with m, stopped when the test ends.
func serveRegistered(t *testing.T, m *mesh.Mesh, body string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, body)
	})))
	srv.TLS = m.ServerTLSConfig()
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the TCP check's bare connections
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Register(ctx, mesh.Instance{Address: srv.Listener.Addr().String()}); err != nil {
		t.Fatal(err)
	}
}

// putRetry writes key through whichever running server takes the write:
// during an election a write fails until there is a leader again.
func putRetry(t *testing.T, c *consultest.Cluster, key, value string) {
	t.Helper()
	meshtest.Eventually(t, 30*time.Second, "a write of "+key+" through a server", func() bool {
		for _, s := range c.Servers() {
			if !s.Running() {
				continue
			}
			if _, err := s.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err == nil {
				return true
			}
		}
		return false
	})
}

// traffic calls url through m in a loop until stopped, counting.
type traffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string // the first failures
	stop       chan struct{}
	done       chan struct{}
}

func startTraffic(t *testing.T, m *mesh.Mesh, url, want string) *traffic {
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		for {
			select {
			case <-tr.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			code, body, err := get(t, m, url)
			if err == nil && code == http.StatusOK && body == want {
				tr.ok.Add(1)
				continue
			}
			tr.failed.Add(1)
			tr.mu.Lock()
			if len(tr.errs) < 5 {
				tr.errs = append(tr.errs, fmt.Sprintf("%d %q %v", code, body, err))
			}
			tr.mu.Unlock()
		}
	}()
	t.Cleanup(tr.end)
	return tr
}

func (tr *traffic) end() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	<-tr.done
}

func billingTimeout(d string) string {
	return fmt.Sprintf(`{"timeout": %q}`, d)
}

// TestConsulClusterDisturbance runs a mesh serving billing on one client
// agent and a mesh calling it on another, of a cluster of three servers,
// while the leader is killed, the caller's agent restarts and a server is
// partitioned: no call fails, both meshes keep their policy, and a write
// made during the disturbance applies once it is over.
func TestConsulClusterDisturbance(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster of five agents: not in -short")
	}
	t.Parallel()
	begin := time.Now()
	c := consultest.StartCluster(t, 3, 2)
	t.Logf("3 servers and 2 client agents ready in %v", time.Since(begin))
	putRetry(t, c, "inmesh/services/billing", billingTimeout("3s"))
	putRetry(t, c, "inmesh/services/web", "{}")
	agentA, agentB := c.Clients()[0], c.Clients()[1]
	billing := serveOn(t, agentA.Client, "billing", "ok")
	web := meshOn(t, agentB.Client, "web")
	meshtest.Eventually(t, 20*time.Second, "web reaches billing", func() bool {
		_, body, err := get(t, web, "http://billing/x")
		return err == nil && body == "ok"
	})
	applied := func(m *mesh.Mesh, timeout string) bool {
		e := adminConfig(t, m).Effective["billing"]
		return e != nil && e.Effective.Timeout == timeout
	}
	if !applied(web, "3s") || !applied(billing, "3s") {
		t.Fatalf("the first policy is not in force: %+v", adminConfig(t, web))
	}
	tr := startTraffic(t, web, "http://billing/x", "ok")
	keep := func(stage string) {
		t.Helper()
		for name, m := range map[string]*mesh.Mesh{"web": web, "billing": billing} {
			if m.PolicyVersion() == "" || adminConfig(t, m).Effective["billing"] == nil {
				t.Fatalf("%s: %s lost its policy", stage, name)
			}
		}
	}

	// 1. Kill the leader: another server is elected.
	old := c.Leader()
	killed := time.Now()
	c.Kill(old)
	meshtest.Eventually(t, 30*time.Second, "a new leader", func() bool {
		l := c.Leader()
		return l >= 0 && l != old
	})
	t.Logf("leader s%d killed: s%d elected in %v", old, c.Leader(), time.Since(killed))
	keep("leader killed")
	putRetry(t, c, "inmesh/services/billing", billingTimeout("7s"))
	c.Start(old)

	// 2. Restart the caller's agent: its watches fail, then resume.
	c.Restart(c.Index(agentB))
	keep("agent restarted")

	// 3. Partition the leader from the others (SIGSTOP), write, resume.
	p := c.Leader()
	c.Partition(p)
	partitioned := time.Now()
	meshtest.Eventually(t, 30*time.Second, "a leader beside the partitioned one", func() bool {
		l := c.Leader()
		return l >= 0 && l != p
	})
	t.Logf("leader s%d partitioned: s%d elected in %v", p, c.Leader(), time.Since(partitioned))
	putRetry(t, c, "inmesh/services/billing", billingTimeout("8s"))
	keep("server partitioned")
	c.Resume(p)
	resumed := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, "the write made during the disturbance applied", func() bool {
		return applied(web, "8s") && applied(billing, "8s")
	})
	t.Logf("the write made during the partition applied by both meshes %v after the resume", time.Since(resumed))
	tr.end()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t.Logf("calls: %d ok, %d failed; whole test %v", tr.ok.Load(), tr.failed.Load(), time.Since(begin))
	if tr.failed.Load() != 0 || tr.ok.Load() == 0 {
		t.Fatalf("%d calls failed, %d succeeded; first failures: %v", tr.failed.Load(), tr.ok.Load(), tr.errs)
	}
}
