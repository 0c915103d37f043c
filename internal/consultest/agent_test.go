package consultest

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestAgentLifecycle(t *testing.T) {
	a := Start(t)
	kv := a.Client.KV()
	if _, err := kv.Put(&api.KVPair{Key: "inmesh/defaults", Value: []byte("timeout: 1s")}, nil); err != nil {
		t.Fatal(err)
	}
	p, _, err := kv.Get("inmesh/defaults", nil)
	if err != nil || p == nil || string(p.Value) != "timeout: 1s" {
		t.Fatalf("kv get: %v %v", p, err)
	}
	roots, _, err := a.Client.Agent().ConnectCARoots(nil)
	if err != nil || len(roots.Roots) == 0 || roots.TrustDomain == "" {
		t.Fatalf("ca roots: %+v %v", roots, err)
	}

	// A paused agent answers nothing; a resumed one kept its data.
	a.Pause()
	cfg := api.DefaultConfig()
	cfg.Address = a.HTTPAddr
	cfg.HttpClient = nil
	cfg.WaitTime = 0
	c, _ := api.NewClient(cfg)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.KV().Get("inmesh/defaults", (&api.QueryOptions{}).WithContext(timeoutCtx(t, 300*time.Millisecond)))
		done <- err
	}()
	if err := <-done; err == nil {
		t.Fatal("a paused agent answered")
	}
	a.Resume()
	p, _, err = kv.Get("inmesh/defaults", nil)
	if err != nil || p == nil {
		t.Fatalf("after resume: %v %v", p, err)
	}

	a.Restart(t)
	if p, _, err = kv.Get("inmesh/defaults", nil); err != nil || p != nil {
		t.Fatalf("a restarted dev agent starts empty: %v %v", p, err)
	}
}
