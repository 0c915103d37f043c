package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// TestStatusConsul: against a real agent, three registered instances of
// billing, two on one policy version and one on another (two policy
// prefixes, one status prefix): status --consul shows 2 and 1.
func TestStatusConsul(t *testing.T) {
	agent := consultest.Start(t)
	for prefix, value := range map[string]string{"blue": "timeout: 1s\n", "green": "timeout: 2s\n"} {
		putKey(t, agent, prefix+"/services/billing", value)
	}
	versions := map[string]string{}
	for i, prefix := range []string{"blue", "blue", "green"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		m, err := mesh.New(ctx, mesh.WithService("billing"), mesh.WithLogger(meshtest.QuietLogger()),
			mesh.WithControlPlane(consul.New(consul.Config{Client: agent.Client, Prefix: prefix, StatusPrefix: "fleet"})))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		if err := m.Register(ctx, mesh.Instance{Address: ln.Addr().String()}); err != nil {
			cancel()
			t.Fatalf("instance %d: %v", i, err)
		}
		cancel()
		versions[prefix] = m.PolicyVersion()
	}
	args := []string{"status", "--consul", agent.HTTPAddr, "--status-prefix", "fleet"}
	var fleet []consul.ServiceStatus
	meshtest.Eventually(t, 10*time.Second, "three instances to report", func() bool {
		var out, errOut bytes.Buffer
		if code := run(append(args, "-o", "json"), &out, &errOut); code != 0 {
			t.Fatalf("status -o json: %d %s", code, errOut.String())
		}
		fleet = nil
		if err := json.Unmarshal(out.Bytes(), &fleet); err != nil {
			t.Fatal(err)
		}
		return len(fleet) == 1 && len(fleet[0].Versions[versions["blue"]]) == 2 && len(fleet[0].Versions[versions["green"]]) == 1
	})
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("status: %d %s", code, errOut.String())
	}
	text := out.String()
	for _, want := range []string{
		"billing", versions["blue"] + " ", versions["green"] + " ", "2  2 versions in the fleet", "1  ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}
	if i, j := strings.Index(text, versions["blue"]), strings.Index(text, versions["green"]); i > j {
		t.Errorf("the version most instances run is not first:\n%s", text)
	}
}

func putKey(t *testing.T, agent *consultest.Agent, key, value string) {
	t.Helper()
	if _, err := agent.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatal(err)
	}
}
