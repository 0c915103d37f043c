// Package inmesh is an in-process ("proxyless") service mesh for Go.
//
// A service imports package mesh and gets an http.RoundTripper, an HTTP
// client, an HTTP middleware, gRPC dial and server options and diagnostics
// that apply the fleet's internal traffic policy inside the process: route
// matching, weighted and header-based splitting, timeouts, retries with
// backoff and a retry budget, circuit breaking and outlier ejection, mTLS
// with SPIFFE service identity and authorization, with OpenTelemetry metrics
// and traces. The policy is pulled from a control plane (a watched file, or
// Consul through package consul: KV for policy, the catalog for endpoints,
// the Connect CA for certificates, intentions for authorization) and
// changes at run time; a document that does not validate never replaces a
// good one.
//
// # Request flow
//
// The path of a call through the mesh is described once, step by step, in
// the package documentation of [github.com/inmesh/inmesh/mesh]. Policy and
// endpoints are immutable snapshots swapped atomically; the request path
// reads them without locks.
//
// Every failure the mesh produces is a *mesh.CallError naming the layer that
// failed (a mesh.Layer), the destination, route, subset, endpoint, attempts
// and the policy version in force.
//
// # Quick start
//
//	m, err := mesh.New(ctx,
//		mesh.WithService("enrollment"),
//		mesh.WithPolicyFile("mesh.yaml"),
//	)
//	if err != nil {
//		return err
//	}
//	defer m.Close()
//
//	resp, err := m.HTTPClient().Get("http://billing/charge")
//	var ce *mesh.CallError
//	if errors.As(err, &ce) {
//		log.Printf("layer %s, policy %s, endpoint %s", ce.Layer, ce.PolicyVersion, ce.Endpoint)
//	}
//
//	// gRPC, same policy (package meshgrpc: HTTP-only users never link grpc-go)
//	conn, err := grpc.NewClient("mesh:///billing", meshgrpc.DialOptions(m)...)
//	s := grpc.NewServer(meshgrpc.ServerOptions(m)...)
//
//	mux.Handle("/debug/inmesh/", http.StripPrefix("/debug/inmesh", m.AdminHandler()))
//
// # Packages
//
//   - mesh: the Mesh, its options, the HTTP round tripper and middleware, Explain, the admin handler, CallError
//   - meshgrpc: the gRPC adapter: dial and server options (resolver, balancer, interceptors, credentials), FromStatus
//   - policy: the policy document, parsing, validation, snapshots, sources
//   - resilience: retry conditions, backoff, retry budget, circuit breaker, outlier detection
//   - discovery: endpoint snapshots and load-balancing pickers
//   - telemetry: every OpenTelemetry instrument and attribute
//   - cmd/inmesh: the CLI (validate, explain)
//   - examples/platform: the demo
package inmesh
