package consul_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
	"github.com/inmesh/inmesh/policy"
)

// TestConsulRejectedServiceStaysInTheMesh: a service whose Consul key was
// rejected before the mesh started (no last good block) is still a mesh
// service: its calls fail at layer policy with the reason, over HTTP and
// gRPC, and are never sent outside the mesh. The service is called
// "localhost" on purpose: outside the mesh its host resolves, and the call
// would reach the backend in plaintext. Once a valid key is written, calls
// go through.
func TestConsulRejectedServiceStaysInTheMesh(t *testing.T) {
	agent := consultest.Start(t)
	web := newCountingServer(t, "web")
	rpc := serveHealth(t)
	ln := rpc.ln
	register := func(id, name, addr string) {
		consultest.RegisterNative(t, agent.Client, consultest.Instance{Service: name, ID: id, Addr: addr})
	}
	register("localhost-1", "localhost", web.addr())
	register("ledger-1", "ledger", rpc.addr())
	putKV(t, agent.Client, "inmesh/services/localhost", `{"tls": "disable", "retry": {"attempts": 11}}`)
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable", "retry": {"attempts": 11}}`)
	m := consulMesh(t, agent, "enrollment", mesh.WithIdentity(mustDevSource(t, "enrollment")))
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	port := web.addr()[strings.LastIndexByte(web.addr(), ':')+1:]
	url := "http://localhost:" + port + "/x"
	_, _, err := get(t, m, url)
	if ce := meshtest.ErrorAs[*mesh.CallError](t, err); ce.Layer != mesh.LayerPolicy || ce.Service != "localhost" ||
		!strings.Contains(ce.Err.Error(), "services.localhost.retry.attempts: must be 1..10") {
		t.Fatalf("HTTP: CallError %+v", ce)
	}
	conn, err := grpc.NewClient("mesh:///ledger", meshgrpc.DialOptions(m)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	err = check()
	if ce := meshgrpc.FromStatus(err); ce == nil || ce.Layer != mesh.LayerPolicy || ce.Service != "ledger" ||
		!strings.Contains(ce.Err.Error(), "services.ledger.retry.attempts: must be 1..10") {
		t.Fatalf("gRPC: %v", err)
	}
	if web.hits.Load() != 0 || ln.Accepted.Load() != 0 {
		t.Fatalf("the backends saw %d requests and %d connections", web.hits.Load(), ln.Accepted.Load())
	}

	putKV(t, agent.Client, "inmesh/services/localhost", `{"tls": "disable"}`)
	putKV(t, agent.Client, "inmesh/services/ledger", `{"tls": "disable"}`)
	meshtest.Eventually(t, 10*time.Second, "the valid keys in force", func() bool {
		eff := adminConfig(t, m).Effective
		return eff["localhost"] != nil && eff["ledger"] != nil
	})
	if _, body, err := get(t, m, url); err != nil || body != "web" {
		t.Fatalf("HTTP after a valid key: %q %v", body, err)
	}
	if err := check(); err != nil {
		t.Fatalf("gRPC after a valid key: %v", err)
	}
	if web.hits.Load() != 1 || rpc.hits.Load() != 1 {
		t.Fatalf("backend hits %d and %d, want 1 each", web.hits.Load(), rpc.hits.Load())
	}
}

// TestConsulEgressDeny: egress: deny kept in Consul (the key inmesh/mesh,
// written as consul.Keys splits the document) fails a call to an outside
// host at layer egress, and the outside server gets no connection; a
// service of the policy is still called. Deleting the key allows egress
// again.
func TestConsulEgressDeny(t *testing.T) {
	agent := consultest.Start(t)
	outside := newCountingServer(t, "outside")
	billing := newCountingServer(t, "billing")
	doc, err := policy.Parse([]byte("egress: deny\nservices:\n  billing: {tls: disable, endpoints: [{address: " + billing.addr() + "}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := consul.Keys(doc, "")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range keys {
		putKV(t, agent.Client, k, string(v))
	}
	m := consulMesh(t, agent, "enrollment", mesh.WithIdentity(mustDevSource(t, "enrollment")))
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()

	_, _, err = get(t, m, outside.URL+"/x")
	if ce := meshtest.ErrorAs[*mesh.CallError](t, err); ce.Layer != mesh.LayerEgress {
		t.Fatalf("outside host under egress: deny: %+v", ce)
	}
	if outside.ln.Accepted.Load() != 0 || outside.hits.Load() != 0 {
		t.Fatalf("the outside server saw %d connections and %d requests", outside.ln.Accepted.Load(), outside.hits.Load())
	}
	if _, body, err := get(t, m, "http://billing/x"); err != nil || body != "billing" {
		t.Fatalf("billing under egress: deny: %q %v", body, err)
	}

	if _, err := agent.Client.KV().Delete("inmesh/mesh", nil); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, "egress allowed again", func() bool {
		_, body, err := get(t, m, outside.URL+"/x")
		return err == nil && body == "outside"
	})
}
