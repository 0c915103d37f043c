package consul_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/policy"
)

// TestConsulCARotationUnderLoad rotates the Connect CA root while four
// goroutines call billing through the mesh: no call may fail.
func TestConsulCARotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for Consul's leaf re-issue jitter (up to 30s)")
	}
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	putKV(t, agent.Client, "inmesh/services/enrollment", "{}")
	server, _ := consulServer(t, agent, "v1")
	client := consulMesh(t, agent, "enrollment")
	if _, _, err := get(t, client, "http://billing/x"); err != nil {
		t.Fatal(err)
	}
	before, _ := server.Identity()

	stop := make(chan struct{})
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if _, _, err := get(t, client, "http://billing/x"); err != nil {
					failed.Add(1)
					t.Errorf("call failed during the rotation: %v", err)
				}
			}
		})
	}
	cfg, _, err := agent.Client.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Config["PrivateKeyType"], cfg.Config["PrivateKeyBits"] = "ec", 384
	if _, err := agent.Client.Connect().CASetConfig(cfg, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, _ := server.Identity()
		c, _ := client.Identity()
		if s.Serial() != before.Serial() && len(s.Roots) >= 2 && len(c.Roots) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotation did not reach the meshes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // calls on the new leaves too
	close(stop)
	wg.Wait()
	t.Logf("%d calls during the root rotation, %d failed", calls.Load(), failed.Load())
}

// TestConsulPropagation measures how long a KV write takes to reach the
// state the next request uses, over 100 updates, with 1 and with 50 meshes
// watching; it logs p50 and p99 and fails only when an update never
// arrives.
func TestConsulPropagation(t *testing.T) {
	if testing.Short() {
		t.Skip("100 updates against a real agent")
	}
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", `{"timeout": "1s"}`)
	for _, n := range []int{1, 50} {
		t.Run(fmt.Sprint(n, " meshes"), func(t *testing.T) {
			meshes := make([]*mesh.Mesh, n)
			dev := mesh.WithIdentity(mustDevSource(t, "watcher"))
			for i := range meshes {
				meshes[i] = consulMesh(t, agent, "watcher", dev)
			}
			var lat []time.Duration
			for u := range 100 {
				want := fmt.Sprintf("%dms", 1000+u+1)
				start := time.Now()
				putKV(t, agent.Client, "inmesh/services/billing", `{"timeout": "`+want+`"}`)
				for _, m := range meshes {
					for {
						// The version (the content hash) is cheap to poll:
						// read the policy again only when it changes.
						version := m.PolicyVersion()
						if svc := adminConfig(t, m).Effective["billing"]; svc != nil && svc.Effective.Timeout == timeString(want) {
							break
						}
						for m.PolicyVersion() == version {
							if time.Since(start) > 10*time.Second {
								t.Fatalf("update %d never reached a mesh", u)
							}
							time.Sleep(100 * time.Microsecond)
						}
					}
					lat = append(lat, time.Since(start))
				}
			}
			slices.Sort(lat)
			p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
			t.Logf("KV write to new policy in force, %d meshes, %d samples: p50 %v p99 %v max %v",
				n, len(lat), p(0.50), p(0.99), lat[len(lat)-1])
			for _, m := range meshes {
				m.Close()
			}
		})
	}
}

func timeString(d string) string {
	v, _ := time.ParseDuration(d)
	return v.String()
}

// TestConsulRegisterAndDeregister checks that Register puts the instance in
// the catalog as Connect-native, with a check Consul runs (passing while it
// listens), and that Close takes it out.
func TestConsulRegisterAndDeregister(t *testing.T) {
	agent := consultest.Start(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	m, _ := consulServer(t, agent, "v1")
	entries, _, err := agent.Client.Health().Service("billing", "", true, nil)
	if err != nil || len(entries) != 1 || entries[0].Service.Meta["version"] != "v1" {
		t.Fatalf("catalog after Register: %v %v", entries, err)
	}
	if len(entries[0].Checks) < 2 { // the node's serfHealth and ours
		t.Fatalf("no health check registered: %+v", entries[0].Checks)
	}
	// Connect-native: on the connect health endpoint, where sidecars and
	// other meshes look, and so in the agent's own view.
	connect, _, err := agent.Client.Health().Connect("billing", "", true, nil)
	if err != nil || len(connect) != 1 || connect[0].Service.ID != entries[0].Service.ID {
		t.Fatalf("connect health after Register: %v %v", connect, err)
	}
	svc, _, err := agent.Client.Agent().Service(entries[0].Service.ID, nil)
	if err != nil || svc.Connect == nil || !svc.Connect.Native {
		t.Fatalf("agent service after Register: %+v %v", svc, err)
	}
	if svc.Port != connect[0].Service.Port || len(connect[0].Checks) < 2 {
		t.Fatalf("connect entry %+v, checks %+v", connect[0].Service, connect[0].Checks)
	}
	m.Close()
	entries, _, err = agent.Client.Health().Service("billing", "", false, nil)
	if err != nil || len(entries) != 0 {
		t.Fatalf("catalog after Close: %d entries, %v", len(entries), err)
	}
	if err := (&mesh.Mesh{}).Register(context.Background(), mesh.Instance{Address: "127.0.0.1:1"}); err == nil {
		t.Fatal("Register without Consul succeeded")
	}
}

// TestRegisterNeedsACatalog: a mesh whose control plane has no catalog (a
// policy file, a fixed policy) fails Register, saying why.
func TestRegisterNeedsACatalog(t *testing.T) {
	doc, err := policy.Parse([]byte("services: {billing: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := mesh.New(ctx, mesh.WithService("billing"), mesh.WithPolicy(doc), mesh.WithLogger(meshtest.QuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	err = m.Register(ctx, mesh.Instance{Address: "127.0.0.1:9001"})
	if !errors.Is(err, mesh.ErrNoCatalog) || !strings.Contains(err.Error(), "mesh: Register billing-127.0.0.1-9001: ") {
		t.Fatalf("Register on a fixed policy: %v", err)
	}
}

// TestNewReportsABadConfig: a Consul control plane without a client fails
// mesh.New at once, naming the field.
func TestNewReportsABadConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := mesh.New(ctx, mesh.WithService("billing"), mesh.WithControlPlane(consul.New(consul.Config{})), mesh.WithLogger(meshtest.QuietLogger()))
	if err == nil || !strings.Contains(err.Error(), "mesh: consul: Config.Client is nil") {
		t.Fatalf("New without a client: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("New waited for the context")
	}
}
