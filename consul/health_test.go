package consul_test

import (
	"context"
	"maps"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/consultest"
)

// register adds a Connect-native instance of service at addr with a TCP
// check.
func register(t *testing.T, c *api.Client, service, id, addr string, tags []string, meta map[string]string) {
	t.Helper()
	consultest.RegisterNative(t, c, consultest.Instance{Service: service, ID: id, Addr: addr, Tags: tags, Meta: meta, Check: true})
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestEndpointSource(t *testing.T) {
	agent := consultest.Start(t)
	v1, v2 := listen(t), listen(t)
	register(t, agent.Client, "billing", "billing-1", v1.Addr().String(), nil, map[string]string{"version": "v1"})
	register(t, agent.Client, "billing", "billing-2", v2.Addr().String(), []string{"canary"}, map[string]string{"version": "v2"})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := consul.NewEndpointSource(ctx, agent.Client, []string{"billing"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	eps := src.Current().Endpoints("billing")
	if len(eps) != 2 {
		t.Fatalf("endpoints %+v", eps)
	}
	canary := discovery.Select(eps, map[string]string{consul.TagLabel("canary"): ""})
	if len(canary) != 1 || canary[0].Address != v2.Addr().String() || canary[0].Labels["version"] != "v2" {
		t.Fatalf("canary %+v", canary)
	}

	// An instance whose check fails leaves the snapshot.
	v2.Close()
	deadline := time.After(10 * time.Second)
	for {
		changed := src.Changed()
		if len(src.Current().Endpoints("billing")) == 1 {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the failing instance is still listed")
		}
	}
	if got := src.Current().Endpoints("billing"); got[0].Address != v1.Addr().String() {
		t.Fatalf("left %+v", got)
	}

	// Unwatching a service drops it.
	src.Unwatch("billing")
	if src.Current().Endpoints("billing") != nil {
		t.Fatal("an unwatched service is still listed")
	}
}

// TestEndpointSourceConnectKinds: the source lists a Connect-native
// instance at its own address, an instance behind a sidecar at the
// sidecar's, with the labels of the sidecar's registration, and no plain
// instance.
func TestEndpointSourceConnectKinds(t *testing.T) {
	agent := consultest.Start(t)
	native, own, proxy, plain := listen(t), listen(t), listen(t), listen(t)
	consultest.RegisterNative(t, agent.Client, consultest.Instance{Service: "billing", ID: "billing-native", Addr: native.Addr().String(),
		Meta: map[string]string{"version": "v1"}})
	consultest.RegisterSidecar(t, agent.Client, consultest.Instance{Service: "billing", ID: "billing-sidecar", Addr: own.Addr().String(),
		Tags: []string{"canary"}, Meta: map[string]string{"version": "v2"}}, proxy.Addr().String())
	consultest.RegisterPlain(t, agent.Client, consultest.Instance{Service: "billing", ID: "billing-plain", Addr: plain.Addr().String()})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := consul.NewEndpointSource(ctx, agent.Client, []string{"billing"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := map[string]map[string]string{
		native.Addr().String(): {"version": "v1"},
		proxy.Addr().String():  {"version": "v2", consul.TagLabel("canary"): "true"},
	}
	eps := src.Current().Endpoints("billing")
	if len(eps) != len(want) {
		t.Fatalf("endpoints %+v, want %v", eps, want)
	}
	for _, ep := range eps {
		if labels, ok := want[ep.Address]; !ok || !maps.Equal(labels, ep.Labels) {
			t.Errorf("endpoint %s labels %v; want %v", ep.Address, ep.Labels, want)
		}
	}
}
