package main

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// gRPC unary: the stock health service's Check, sequential, bare grpc-go
// (client and server) against inmesh on both sides (DialOptions and
// ServerOptions), in plaintext and over mTLS.

func grpcSections(e *env) ([]*section, error) {
	s := &section{title: "gRPC unary, sequential", columns: httpColumns, dur: e.cfg.slice, warm: e.cfg.warm}

	plain, err := e.bareGRPC(insecure.NewCredentials(), insecure.NewCredentials())
	if err != nil {
		return nil, err
	}
	barePlain := s.add("bare grpc-go, plaintext", perCallCheck(plain))
	srvTLS, err := e.bareTLS("billing")
	if err != nil {
		return nil, err
	}
	cliTLS, err := e.bareTLS("enrollment")
	if err != nil {
		return nil, err
	}
	mtls, err := e.bareGRPC(credentials.NewTLS(srvTLS.server()), credentials.NewTLS(cliTLS.client("billing")))
	if err != nil {
		return nil, err
	}

	rows := []struct {
		name, tls string
		tel       func() telemetry
	}{
		{"inmesh, plaintext, telemetry off", "disable", telemetryOff},
		{"inmesh, plaintext, OTel SDK", "disable", e.otelSDK},
		{"bare grpc-go, mutual TLS 1.3", "", nil},
		{"inmesh, mTLS, telemetry off", "strict", telemetryOff},
		{"inmesh, mTLS, OTel SDK", "strict", e.otelSDK},
	}
	ref := barePlain
	for _, v := range rows {
		if v.tel == nil {
			ref = s.add(v.name, perCallCheck(mtls))
			continue
		}
		c, err := e.meshGRPC(v.tls, v.tel)
		if err != nil {
			return nil, err
		}
		s.add(v.name, perCallCheck(c)).ref = ref
	}
	return []*section{s}, nil
}

// perCallCheck measures Check calls on c.
func perCallCheck(c healthpb.HealthClient) func(d time.Duration) (metrics, error) {
	op := func() func() error {
		req := &healthpb.HealthCheckRequest{}
		return func() error {
			_, err := c.Check(context.Background(), req)
			return err
		}
	}
	return func(d time.Duration) (metrics, error) { return perCall(d, 1, op, nil) }
}

// bareGRPC starts a plain gRPC server with the health service and returns
// a plain client of it.
func (e *env) bareGRPC(srv, cli credentials.TransportCredentials) (healthpb.HealthClient, error) {
	ln, err := e.listen()
	if err != nil {
		return nil, err
	}
	e.serveGRPC(ln, grpc.Creds(srv))
	return e.grpcClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(cli))
}

// meshGRPC starts a gRPC server with the health service behind billing's
// mesh and returns a client of it through enrollment's mesh, both
// reporting to their own tel(), toward billing with tls: tlsMode.
func (e *env) meshGRPC(tlsMode string, tel func() telemetry) (healthpb.HealthClient, error) {
	ln, err := e.listen()
	if err != nil {
		return nil, err
	}
	// One server, the bare client's, in both subsets of the split.
	doc := chainPolicy(tlsMode, chainSettings, ln.Addr().String(), "")
	srv, err := e.newMesh("billing", doc, tel())
	if err != nil {
		return nil, err
	}
	e.serveGRPC(ln, meshServerOptions(srv)...)
	cli, err := e.newMesh("enrollment", doc, tel())
	if err != nil {
		return nil, err
	}
	return e.grpcClient("mesh:///billing", meshDialOptions(cli)...)
}

// serveGRPC serves the stock health service on ln until the end.
func (e *env) serveGRPC(ln net.Listener, opts ...grpc.ServerOption) {
	s := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	e.add(func() {
		s.Stop()
		<-done
	})
}

// grpcClient returns a health client on a new ClientConn, closed at the
// end.
func (e *env) grpcClient(target string, opts ...grpc.DialOption) (healthpb.HealthClient, error) {
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	e.add(func() { _ = conn.Close() })
	return healthpb.NewHealthClient(conn), nil
}
