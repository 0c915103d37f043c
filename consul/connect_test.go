package consul_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/inmesh/inmesh/consul"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/consultest"
	"github.com/inmesh/inmesh/internal/meshtest"
)

func connectSource(t *testing.T, c *api.Client, service string) *consul.IdentitySource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := consul.NewIdentitySource(ctx, c, service, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// rotateCA makes the agent's built-in CA generate a new root (a new key
// type forces one), which Consul cross-signs with the old one.
func rotateCA(t *testing.T, c *api.Client) {
	t.Helper()
	cfg, _, err := c.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	bits := 384
	if v, ok := cfg.Config["PrivateKeyBits"].(float64); ok && int(v) == 384 {
		bits = 256
	}
	cfg.Config["PrivateKeyType"] = "ec"
	cfg.Config["PrivateKeyBits"] = bits
	if _, err := c.Connect().CASetConfig(cfg, nil); err != nil {
		t.Fatal(err)
	}
}

func TestIdentitySource(t *testing.T) {
	agent := consultest.Start(t)
	billing := connectSource(t, agent.Client, "billing")
	enrollment := connectSource(t, agent.Client, "enrollment")

	id, err := billing.Current()
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := agent.Client.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/billing"
	if id.ID.String() != want || id.TrustDomain != roots.TrustDomain || len(id.Roots) == 0 {
		t.Fatalf("identity %s (trust domain %s), want %s", id.ID, id.TrustDomain, want)
	}
	if svc, ok := id.ID.Service(); !ok || svc != "billing" {
		t.Fatalf("Service() = %q %v", svc, ok)
	}
	// The SNI Consul gives Envoy for an upstream, here pay's.
	if sni, want := billing.ServerName("pay"), "pay.default.dc1.internal."+roots.TrustDomain; sni != want || consul.ServiceSNI("pay", "", "dc1", roots.TrustDomain) != want {
		t.Fatalf("ServerName(pay) = %q, want %q", sni, want)
	}
	if cfg := identity.ClientConfig(billing, "pay"); cfg.ServerName != "pay.default.dc1.internal."+roots.TrustDomain {
		t.Fatalf("client config toward pay: ServerName %q", cfg.ServerName)
	}

	// A handshake between the two Connect identities, before and after a
	// root rotation; the old client leaf still works against the new server
	// leaf while the old root is in the bundle.
	handshake := func() error {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", identity.ServerConfig(billing))
		if err != nil {
			return err
		}
		defer ln.Close()
		done := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			done <- c.(*tls.Conn).Handshake()
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), identity.ClientConfig(enrollment, "billing"))
		if err != nil {
			<-done
			return err
		}
		c.Close()
		return <-done
	}
	if err := handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}

	changed := billing.Changed()
	serial := id.Serial()
	rotateCA(t, agent.Client)
	select {
	case <-changed:
	case <-time.After(60 * time.Second):
		t.Fatal("the rotation did not reach the source")
	}
	deadline := time.Now().Add(60 * time.Second) // Consul jitters leaf re-issue after a rotation, up to 30s
	for {
		id, _ = billing.Current()
		other, _ := enrollment.Current()
		if id.Serial() != serial && len(id.Roots) >= 2 && len(other.Roots) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after rotation: serial %s roots %d", id.Serial(), len(id.Roots))
		}
		select {
		case <-billing.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := handshake(); err != nil {
		t.Fatalf("handshake after rotation: %v", err)
	}
}

// The identity holds one long poll, on the leaf: the roots are read with
// each leaf, never watched on their own.
func TestIdentitySourceHoldsOneLongPoll(t *testing.T) {
	agent := consultest.Start(t)
	counter := agent.Counting(t)
	s := connectSource(t, counter.Client, "billing")
	if id, err := s.Current(); err != nil || len(id.Roots) == 0 {
		t.Fatalf("identity %v, %v", id, err)
	}
	const leaf, roots = "/v1/agent/connect/ca/leaf/billing", "/v1/agent/connect/ca/roots"
	meshtest.Eventually(t, 10*time.Second, "the leaf's long poll", func() bool { return counter.InFlight()[leaf] == 1 })
	if got := counter.InFlight(); len(got) != 1 {
		t.Fatalf("long polls in flight %v, want only %s", got, leaf)
	}
	if n := counter.Requests()[roots]; n < 1 {
		t.Fatalf("%d reads of the roots", n)
	}
}
