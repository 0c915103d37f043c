// Package mesh is the data plane of inmesh inside one process: the Mesh
// that a service creates once with New, and the HTTP client, round tripper,
// HTTP middleware, gRPC dial and server options, diagnostics and admin
// handler that enforce the fleet's traffic policy.
//
// # Request flow
//
// A call whose URL host names a service of the policy goes through:
//
//	route match ─► split (subset) ─► total deadline ─► retry loop ─┐
//	  each attempt: pick endpoint (LB, ejected skipped) ─► breaker ─►
//	  per-try deadline ─► send ─► classify ─► telemetry
//
// Retry sits above pick, so each attempt picks again. A host that is no
// service of the policy passes through untouched.
//
// # gRPC
//
// grpc.NewClient("mesh:///billing", m.DialOptions()...) gives a gRPC
// ClientConn the same flow, from the same policy, split between grpc-go's
// plugin points:
//
//	resolver (mesh scheme, per ClientConn): every endpoint of billing, with
//	  its labels, reported again whenever the mesh publishes a new state
//	interceptor (unary, stream): route match on the full method and the
//	  outgoing metadata ─► split ─► total deadline ─► retry loop ─┐
//	    each attempt: breaker ─► per-try deadline ─► pick slot in the
//	    context ─► grpc-go
//	balancer ("inmesh") picker: the subset's load balancer (the HTTP path's
//	  discovery.Picker, ejected endpoints skipped) ─► that endpoint's ready
//	  SubConn; never blocks on the mesh
//	credentials: mTLS, the server must be billing; plaintext for tls: disable
//	interceptor again: classify (the destination's status, or a failure of
//	  the mesh or the network) ─► breaker, outlier, span event ─► retry?
//
// A stream is retried only until its first response message, and while the
// messages it sent, kept for the replay, total at most 256 KiB. A server's
// grpc-retry-pushback-ms trailer sets the wait before a retry, or forbids
// the retry. gRPC's own retries are off. On the server,
// grpc.NewServer(m.ServerOptions()...) adds mTLS, the authorization of the
// caller (Handler's rules: every RPC is a POST of its full method), the
// server span and rpc.server.duration; the caller's deadline arrives with
// the RPC.
//
// # Control planes
//
// A ControlPlane gives the mesh its policy, the endpoints of each
// destination (watched from its first call), this workload's identity, the
// authorization of its callers and a catalog to Register in; each part but
// the policy may be absent. WithPolicyFile (a YAML or JSON file, watched)
// and WithPolicy (a fixed document) are control planes of a policy alone:
// endpoints come from the policy, identity from WithIdentity or the shared
// dev CA, authorization from the policy's blocks, and Register fails with
// ErrNoCatalog. WithControlPlane takes any other, such as
// consul.New(consul.Config{Client: client}) of package
// github.com/inmesh/inmesh/consul: the policy from KV, endpoints from the
// health endpoint, the identity from the Connect CA, authorization from
// service-intentions, and Register in the catalog with a health check.
// The request path asks the control plane nothing but what it gave at New:
// a watch of a destination's endpoints at its first call, and, per request,
// the authorization of the caller when the control plane decides it.
// WithCacheDir keeps the last-known-good policy and endpoints on disk for a
// restart while the control plane is down.
//
// # Errors
//
// Every failure the mesh produces is a *CallError naming its Layer, the
// destination, route, subset, endpoint, attempts and policy version. An
// answer of the destination, 4xx or 5xx, is returned as a response once
// retries are spent. Over gRPC, the CallError is also a status (code per
// Layer.Code, an errdetails.ErrorInfo of domain ErrorDomain) that
// FromStatus recovers, and a status of the destination reaches the caller
// unchanged.
//
// # Concurrency
//
// A Mesh and everything it returns are safe for concurrent use. Policy and
// endpoints are immutable snapshots swapped atomically; the request path
// takes no lock of the mesh's own (the circuit breaker, when configured,
// takes gobreaker's). Long-lived followers of the state, such as the gRPC
// resolver, wait for the next snapshot on a channel it closes when replaced.
package mesh
