package meshgrpc_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
	"github.com/inmesh/inmesh/policy"
)

// ExampleDialOptions calls a gRPC service through the mesh, over mTLS
// between the workload identities of the process's dev CA, and shows a
// denial by the destination's mesh coming back as a CallError.
func ExampleDialOptions() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	doc, err := policy.Parse([]byte(`
services:
  grades:
    endpoints: [{address: ` + ln.Addr().String() + `}]
    timeout: 2s
    retry: {attempts: 3, retry_on: [unavailable]}
    authorization:
      default: deny
      rules: [{from: [enrollment], paths: [/grpc.health.v1.Health/]}]
  enrollment: {}
  progress: {}
`))
	if err != nil {
		log.Fatal(err)
	}
	start := func(service string) *mesh.Mesh {
		m, err := mesh.New(context.Background(), mesh.WithService(service), mesh.WithPolicy(doc),
			mesh.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			log.Fatal(err)
		}
		return m
	}

	// The server: grades, behind its mesh.
	grades := start("grades")
	defer grades.Close()
	srv := grpc.NewServer(meshgrpc.ServerOptions(grades)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	// A client: the target names the service; the mesh picks the endpoint.
	for _, caller := range []string{"enrollment", "progress"} {
		m := start(caller)
		conn, err := grpc.NewClient("mesh:///grades", meshgrpc.DialOptions(m)...)
		if err != nil {
			log.Fatal(err)
		}
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if ce := meshgrpc.FromStatus(err); ce != nil {
			fmt.Printf("%s: %s, layer %s\n", caller, grpcstatus.Code(err), ce.Layer)
		} else {
			fmt.Printf("%s: %s %v\n", caller, resp.GetStatus(), err)
		}
		_ = conn.Close()
		_ = m.Close()
	}
	// Output:
	// enrollment: SERVING <nil>
	// progress: PermissionDenied, layer authz
}
