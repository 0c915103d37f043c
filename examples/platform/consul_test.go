package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// TestDemoOnConsul plays the story on a real Consul agent (-consul): the
// fleet registered as Connect-native instances, the policy in KV,
// billing's subsets and canary from config entries, and the canary shift
// made by editing the service-splitter. It checks the split before and
// after the edit, the intruder denied by intentions over HTTP and gRPC,
// and that the demo leaves the agent as it found it.
func TestDemoOnConsul(t *testing.T) {
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	agent := consultest.Start(t)
	var logs, started meshtest.LockedBuffer
	res, err := simulate(context.Background(), options{policy: embeddedPolicy, phase: time.Second, workers: 4,
		logs: &logs, out: &started, consul: agent.HTTPAddr})
	var out bytes.Buffer
	if res != nil {
		tell(&out, res)
	}
	t.Logf("mesh logs:\n%s", logs.String())
	t.Logf("\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.phases) != 5 {
		t.Fatalf("%d phases, want 5", len(res.phases))
	}
	steady, canary := res.phases[0], res.phases[1]
	if canary.name != "canary shift to 50%" || !res.policyEdited {
		t.Fatalf("phase 2 is %q (edited: %v), want the canary shift by the splitter", canary.name, res.policyEdited)
	}
	for _, c := range []struct {
		p      *phase
		lo, hi float64
	}{
		{steady, 0.03, 0.20},
		{canary, 0.35, 0.65},
	} {
		v := c.p.stats.versions
		if n := v["v1"] + v["v2"]; n < 100 {
			t.Errorf("%s: only %d billing answers", c.p.name, n)
		} else if share := float64(v["v2"]) / float64(n); share < c.lo || share > c.hi {
			t.Errorf("%s: v2 answered %.3f of billing calls, want %.2f..%.2f", c.p.name, share, c.lo, c.hi)
		}
	}
	if !strings.HasPrefix(canary.config.Source, "consul:") {
		t.Errorf("policy source %q, want Consul", canary.config.Source)
	}
	var ce *mesh.CallError
	if !errors.As(res.denied.err, &ce) || ce.Layer != mesh.LayerAuthz {
		t.Errorf("progress -> billing: %v, want a CallError of layer authz (intentions)", res.denied.err)
	}
	if grpcstatus.Code(res.rpcDenied) != codes.PermissionDenied {
		t.Errorf("progress -> grades: %v, want PermissionDenied (intentions)", res.rpcDenied)
	}
	if g := res.stats.calls["grades"]; g < 50 || res.stats.ok["grades"] != g {
		t.Errorf("grades over Connect: %d of %d gRPC calls SERVING", res.stats.ok["grades"], g)
	}
	if !strings.HasPrefix(res.identity, "spiffe://") || !strings.HasSuffix(res.identity, "/svc/enrollment") {
		t.Errorf("enrollment's identity %q, want the Connect CA's", res.identity)
	}

	// What the demo wrote, it deleted.
	for _, kind := range []string{api.ServiceSplitter, api.ServiceRouter, api.ServiceResolver, api.ServiceIntentions, api.ServiceDefaults} {
		entries, _, err := agent.Client.ConfigEntries().List(kind, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("%d %s entries left on the agent", len(entries), kind)
		}
	}
	if keys, _, err := agent.Client.KV().Keys(consulPrefix, "", nil); err != nil || len(keys) != 0 {
		t.Errorf("KV keys left under %s: %v (%v)", consulPrefix, keys, err)
	}
}
