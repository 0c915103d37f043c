package meshgrpc

import (
	"google.golang.org/grpc"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/mesh"
)

// DialOptions returns the options that put a gRPC ClientConn under m:
//
//	conn, err := grpc.NewClient("mesh:///billing", meshgrpc.DialOptions(m)...)
//
// The target names a service of the policy ("mesh:///billing"), matched as
// the RoundTripper matches a URL host: case-insensitively, with or without
// one trailing dot, any port ignored ("mesh:///Billing.:443" is billing; the
// endpoints' addresses decide where RPCs go). With the options, each RPC of
// the ClientConn gets what an HTTP call through the RoundTripper gets, from
// the same policy:
//
//   - the resolver of the mesh scheme (given with grpc.WithResolvers, not
//     registered globally) reports every endpoint of the service, with its
//     labels (AddressLabels), and follows policy and endpoint changes;
//   - unary and stream interceptors match the route on the full method
//     (path_prefix "/billing.Billing/Charge", methods as if every RPC were
//     a POST, headers against the outgoing metadata, by lower-case key),
//     choose the subset by the split, bound the call by the shorter of the
//     caller's deadline and the policy's timeout (gRPC propagates it to the
//     server), and retry the codes and failures of retry_on with backoff
//     within the retry budget: a unary call as a whole, a stream until its
//     first response message and while the messages it sent total at most
//     256 KiB; a server's grpc-retry-pushback-ms trailer replaces the
//     backoff, and stops the retries when it is negative, malformed or
//     longer than the backoff max; each attempt is admitted by the circuit
//     breaker, reported to outlier detection, counted, and recorded as an
//     event of the call's one client span; the call records
//     rpc.client.call.duration;
//   - the mesh's balancer (BalancerName, selected by a default service
//     config) sends each attempt to the endpoint the route's load balancer
//     picks in the chosen subset, ejected endpoints skipped;
//   - transport credentials: mTLS with this workload's identity toward a
//     tls: strict destination, whose server must prove it is that service;
//     plaintext toward tls: disable. Certificates are read at each
//     handshake: a rotation reconnects nothing;
//   - gRPC's own retries are off (grpc.WithDisableRetry), so that attempts
//     are not multiplied.
//
// A failure of the mesh is returned as an error that wraps a
// *mesh.CallError (errors.As finds it; its Error() is the CallError's) and
// is also a gRPC status (its GRPCStatus method): the code of its layer
// (Code), the CallError's Error() as the message, and an
// errdetails.ErrorInfo of domain ErrorDomain. FromStatus recovers the
// CallError, also on the other side of a process boundary. A status the
// destination returned reaches the caller unchanged.
//
// Interceptors the application adds after these options run inside the
// mesh's, once per attempt; added before them (grpc.WithChainUnaryInterceptor
// first in the list), once per call. An option given after these that
// replaces the default service config, the transport credentials or the
// resolvers takes that part away from the mesh. A target of another scheme
// dialed with these options is sent untouched by the interceptors, round
// robin by the balancer, with mTLS toward the service its authority names.
//
// Only mesh targets are mesh traffic. Under egress: deny, every RPC of a
// ClientConn whose target is of another scheme, or a mesh target that
// names no service of the policy, fails with a CallError of layer egress
// (PermissionDenied) before the ClientConn dials anything. A mesh target
// naming a service the control plane holds no valid policy for fails with
// layer policy, whatever egress says.
//
// Each call returns a new slice.
func DialOptions(m *mesh.Mesh) []grpc.DialOption {
	a := newAdapter(m, "DialOptions")
	return []grpc.DialOption{
		grpc.WithResolvers(resolverBuilder{a: a}),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDisableRetry(),
		grpc.WithTransportCredentials(newClientCreds(a)),
		grpc.WithChainUnaryInterceptor(a.unaryClient),
		grpc.WithChainStreamInterceptor(a.streamClient),
	}
}

// ServerOptions returns the options that put a gRPC server under m:
//
//	s := grpc.NewServer(meshgrpc.ServerOptions(m)...)
//
// They give the server what m.Handler gives an HTTP server:
//
//   - transport credentials: mTLS with this workload's identity (rotated
//     without restart), every client certificate verified as a SPIFFE ID
//     of the trust domain, as m.ServerTLSConfig does; plaintext connections
//     are accepted too while this workload's own service says tls: disable
//     in the policy in force (its callers then dial it in plaintext);
//   - unary and stream interceptors that authorize the caller (the
//     service of its verified certificate, "" over plaintext) against this
//     service's authorization (its deny list, then its rules), every RPC
//     being a POST of its full method ("/billing.Billing/Charge"): a
//     denied call never reaches the handler and fails with
//     PermissionDenied, marked (an ErrorInfo of domain ErrorDomain, reason
//     authz) so that the caller's mesh reports a CallError of layer authz;
//     under the authorization's mode audit it reaches the handler, and the
//     denial is only logged; each decision is counted in
//     inmesh.authz.decisions, by mode and deciding rule;
//   - the server span, child of the caller's propagated trace context, and
//     rpc.server.call.duration.
//
// The caller's deadline reaches the handler's context natively
// (grpc-timeout). Each call returns a new slice.
func ServerOptions(m *mesh.Mesh) []grpc.ServerOption {
	a := newAdapter(m, "ServerOptions")
	return []grpc.ServerOption{
		grpc.Creds(newServerCreds(a)),
		grpc.ChainUnaryInterceptor(a.unaryServer),
		grpc.ChainStreamInterceptor(a.streamServer),
	}
}

// adapter is the gRPC adapter of one Mesh: its Plane, and the environment
// of the core's calls whose errors are gRPC statuses.
type adapter struct {
	p   *meshlink.Plane
	env core.Env // p.Env, its Err returning a *statusError
}

// newAdapter returns the adapter of m; fn names the caller for the panic
// on a nil m.
func newAdapter(m *mesh.Mesh, fn string) *adapter {
	if m == nil {
		panic("meshgrpc: " + fn + " of a nil *mesh.Mesh")
	}
	p := meshlink.Of(m)
	a := &adapter{p: p, env: p.Env}
	a.env.Err = fromCore
	return a
}
