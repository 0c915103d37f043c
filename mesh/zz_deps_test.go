package mesh

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestLinksNoGRPC: a program that imports mesh alone (this test binary
// imports nothing else of gRPC's) links neither grpc-go nor the Consul
// client; the gRPC adapter is package meshgrpc, Consul package consul.
func TestLinksNoGRPC(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Skip("no build information in this binary")
	}
	if len(bi.Deps) == 0 {
		t.Skip("no module information in this binary")
	}
	for _, d := range bi.Deps {
		if d.Path == "google.golang.org/grpc" || strings.HasPrefix(d.Path, "github.com/hashicorp/consul/") {
			t.Errorf("mesh links module %s", d.Path)
		}
	}
}
