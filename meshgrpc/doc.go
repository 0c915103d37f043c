// Package meshgrpc is the gRPC adapter of package mesh: the dial and server
// options that put a grpc-go ClientConn and server under a *mesh.Mesh, and
// the translation of the mesh's errors to gRPC statuses and back.
//
//	conn, err := grpc.NewClient("mesh:///billing", meshgrpc.DialOptions(m)...)
//	s := grpc.NewServer(meshgrpc.ServerOptions(m)...)
//	ce := meshgrpc.FromStatus(err) // the *mesh.CallError of a failed RPC, nil for the app's own status
//
// It is a package of its own so that a program that only speaks HTTP,
// importing mesh alone, links no grpc-go.
//
// # Where it sits in the request flow
//
// The flow is described once, in package mesh's documentation; an RPC goes
// through the same steps as an HTTP call, from the same policy and the same
// live state (breakers, budgets, outlier detection), and the steps sit at
// grpc-go's plugin points:
//
//	resolver (mesh scheme, per ClientConn): every endpoint of billing, with
//	  its labels, reported again whenever the mesh publishes a new state
//	interceptor (unary, stream): route match on the full method and the
//	  outgoing metadata, split, total deadline, the attempt executor; each
//	  attempt: breaker, per-try deadline, then grpc-go
//	balancer (BalancerName) picker: the pick (the HTTP path's
//	  discovery.Picker) ─► that endpoint's ready SubConn; never blocks on the mesh
//	credentials: the mTLS dial; plaintext for tls: disable
//	interceptor again: classify, telemetry, retry?
//
// A stream is retried only until its first response message, and while the
// messages it sent, kept for the replay, total at most 256 KiB. A server's
// grpc-retry-pushback-ms trailer sets the wait before a retry, or forbids
// the retry. gRPC's own retries are off. On the server, ServerOptions adds
// mTLS, the authorization of the caller (mesh.Handler's rules: every RPC
// is a POST of its full method), the service's rate_limit block (a refusal
// is ResourceExhausted marked rate_limit, with a retry pushback), the
// server span and rpc.server.call.duration; the caller's deadline arrives with
// the RPC.
//
// The call itself (route, split, deadlines, attempts, breaker and outlier
// reports, the CallError) is the protocol-free core the HTTP round tripper
// runs too; this package only sends each attempt through grpc-go and says
// how it ended. It reaches the parts of the Mesh that are not public (its
// published state, the core's environment, its TLS configurations, the
// authorization of callers) through an internal seam of the module, so
// that package mesh shows nothing of gRPC in its API.
//
// # Registration
//
// Importing the package registers the mesh's load-balancing policy with
// grpc-go, under BalancerName: grpc-go finds a balancer by name in its
// global registry only. The name is ours and selects nothing for
// ClientConns that do not ask for it. The resolver is not registered: it is
// handed to each ClientConn of DialOptions (grpc.WithResolvers).
//
// # Concurrency
//
// The options, the ClientConns and servers they configure, and FromStatus
// are safe for concurrent use, as grpc-go's are. The picker takes no lock;
// the state it reads is the mesh's immutable snapshot.
package meshgrpc
