package consultest

import (
	"net"
	"strconv"
	"testing"

	"github.com/hashicorp/consul/api"
)

// Instance is a service instance a test registers with an agent.
type Instance struct {
	Service string
	ID      string // "" means Service + "-" + Addr
	Addr    string // host:port it serves on
	Tags    []string
	Meta    map[string]string
	// Check adds a TCP check against Addr every 200 ms; without it the
	// instance is passing from the start.
	Check bool
}

// registration is inst's agent registration, without Connect.
func (inst Instance) registration(t testing.TB) *api.AgentServiceRegistration {
	t.Helper()
	host, port := SplitAddr(t, inst.Addr)
	id := inst.ID
	if id == "" {
		id = inst.Service + "-" + inst.Addr
	}
	reg := &api.AgentServiceRegistration{ID: id, Name: inst.Service, Address: host, Port: port, Tags: inst.Tags, Meta: inst.Meta}
	if inst.Check {
		reg.Check = &api.AgentServiceCheck{TCP: inst.Addr, Interval: "200ms", Timeout: "100ms", Status: api.HealthPassing}
	}
	return reg
}

// RegisterNative registers inst as a Connect-native instance, as a mesh's
// Register does: the connect health endpoint lists it at its own address.
func RegisterNative(t testing.TB, c *api.Client, inst Instance) {
	t.Helper()
	reg := inst.registration(t)
	reg.Connect = &api.AgentServiceConnect{Native: true}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("consultest: registering %s: %v", reg.ID, err)
	}
}

// RegisterPlain registers inst with no Connect at all: the plain health
// endpoint lists it, the connect one does not.
func RegisterPlain(t testing.TB, c *api.Client, inst Instance) {
	t.Helper()
	reg := inst.registration(t)
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("consultest: registering %s: %v", reg.ID, err)
	}
}

// RegisterSidecar registers inst (a plain instance of inst.Service on
// inst.Addr, which only its sidecar calls) and, in front of it, a
// connect-proxy "<service>-sidecar-proxy" on proxyAddr, as an Envoy sidecar
// registers: the connect health endpoint of inst.Service lists the proxy,
// at proxyAddr, with inst's tags and meta (a sidecar_service's defaults).
func RegisterSidecar(t testing.TB, c *api.Client, inst Instance, proxyAddr string) {
	t.Helper()
	reg := inst.registration(t)
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("consultest: registering %s: %v", reg.ID, err)
	}
	host, port := SplitAddr(t, proxyAddr)
	proxy := &api.AgentServiceRegistration{
		Kind: api.ServiceKindConnectProxy,
		ID:   reg.ID + "-sidecar-proxy", Name: inst.Service + "-sidecar-proxy",
		Address: host, Port: port, Tags: inst.Tags, Meta: inst.Meta,
		Proxy: &api.AgentServiceConnectProxyConfig{
			DestinationServiceName: inst.Service,
			DestinationServiceID:   reg.ID,
			LocalServiceAddress:    reg.Address,
			LocalServicePort:       reg.Port,
		},
	}
	if inst.Check {
		proxy.Check = &api.AgentServiceCheck{TCP: proxyAddr, Interval: "200ms", Timeout: "100ms", Status: api.HealthPassing}
	}
	if err := c.Agent().ServiceRegister(proxy); err != nil {
		t.Fatalf("consultest: registering %s: %v", proxy.ID, err)
	}
}

// SplitAddr splits host:port, failing t on a bad address.
func SplitAddr(t testing.TB, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("consultest: address %q: %v", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("consultest: address %q: bad port", addr)
	}
	return host, port
}
