package mesh

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoGRPC: a program that imports mesh alone links neither grpc-go
// nor the Consul client; the gRPC adapter is package meshgrpc, Consul is
// package consul.
func TestLinksNoGRPC(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies with")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "google.golang.org/grpc") || strings.HasPrefix(pkg, "github.com/hashicorp/consul/") {
			t.Errorf("mesh depends on %s", pkg)
		}
		for _, sdk := range []string{"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters/", "github.com/prometheus/"} {
			if strings.HasPrefix(pkg, sdk) {
				t.Errorf("mesh depends on %s", pkg)
			}
		}
	}
}
