package consul_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// TestConsulAgentTLS runs meshes on an agent whose API is HTTPS only:
// with the agent's CA in the api.Config they work; without it, or over
// plain HTTP, mesh.New fails at once with an error naming TLS.
func TestConsulAgentTLS(t *testing.T) {
	t.Parallel()
	agent := consultest.StartTLS(t)
	putKV(t, agent.Client, "inmesh/services/billing", "{}")
	putKV(t, agent.Client, "inmesh/services/web", "{}")
	billing := meshOn(t, agent.Client, "billing")
	serveRegistered(t, billing, "ok")
	web := meshOn(t, agent.Client, "web")
	meshtest.Eventually(t, 20*time.Second, "web reaches billing over an HTTPS agent", func() bool {
		code, body, err := get(t, web, "http://billing/x")
		return err == nil && code == http.StatusOK && body == "ok"
	})

	for _, tc := range []struct {
		name string
		cfg  func(*api.Config)
		want string
	}{
		{"no CA", func(c *api.Config) { c.TLSConfig = api.TLSConfig{} }, "consul: TLS to the agent: its certificate is not trusted"},
		{"plain HTTP", func(c *api.Config) { c.Scheme = "http"; c.TLSConfig = api.TLSConfig{} }, "consul: TLS to the agent: the agent serves HTTPS only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := agent.Config()
			tc.cfg(cfg)
			client, err := api.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			m, err := mesh.New(ctx, mesh.WithService("web"), mesh.WithControlPlane(consul.New(consul.Config{Client: client})), mesh.WithLogger(meshtest.QuietLogger()))
			if err == nil {
				m.Close()
				t.Fatal("mesh.New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatalf("New waited for its context to end: %v", err)
			}
		})
	}
}
