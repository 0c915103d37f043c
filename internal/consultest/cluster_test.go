package consultest

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster of five agents: not in -short")
	}
	t.Parallel()
	start := time.Now()
	c := StartCluster(t, 3, 2)
	t.Logf("cluster of 3 servers and 2 clients healthy after %v", time.Since(start))
	old := c.Leader()
	if old < 0 {
		t.Fatal("no leader")
	}
	killed := time.Now()
	c.Kill(old)
	var now int
	for now = c.Leader(); now < 0 || now == old; now = c.Leader() {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no new leader after killing s%d\n%s", old, c.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("leader s%d killed, s%d elected after %v", old, now, time.Since(killed))
	c.Start(old)
	if err := c.WaitHealthy(timeoutCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("%v\n%s", err, c.Logs())
	}
	// A paused server: the other two keep a leader.
	p := c.Leader()
	c.Partition(p)
	paused := time.Now()
	for now = c.Leader(); now < 0 || now == p; now = c.Leader() {
		if time.Since(paused) > 30*time.Second {
			t.Fatalf("no new leader after pausing s%d\n%s", p, c.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("leader s%d paused, s%d elected after %v", p, now, time.Since(paused))
	c.Resume(p)
	if err := c.WaitHealthy(timeoutCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("%v\n%s", err, c.Logs())
	}
	c.Restart(3)
	if err := c.WaitHealthy(timeoutCtx(t, 30*time.Second)); err != nil {
		t.Fatalf("%v\n%s", err, c.Logs())
	}
}

func TestStartACL(t *testing.T) {
	t.Parallel()
	a := StartACL(t)
	if _, err := a.Client.KV().Put(&api.KVPair{Key: "x", Value: []byte("1")}, nil); err != nil {
		t.Fatalf("management token: %v", err)
	}
	_, _, err := a.ClientWithToken(t, "").KV().Get("x", nil)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("anonymous read: got %v, want a 403", err)
	}
}

func TestStartTLS(t *testing.T) {
	t.Parallel()
	a := StartTLS(t)
	if _, err := a.Client.Agent().Self(); err != nil {
		t.Fatalf("https with the CA: %v", err)
	}
	cfg := a.Config()
	cfg.TLSConfig = api.TLSConfig{}
	c, _ := api.NewClient(cfg)
	if _, err := c.Agent().Self(); err == nil {
		t.Fatal("https without the CA worked")
	}
	cfg = a.Config()
	cfg.Scheme = "http"
	c, _ = api.NewClient(cfg)
	if _, err := c.Agent().Self(); err == nil {
		t.Fatal("plain http worked")
	}
}
