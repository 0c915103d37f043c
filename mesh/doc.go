// Package mesh is the data plane of inmesh inside one process: the Mesh
// that a service creates once with New, and the HTTP client, round tripper,
// HTTP middleware, diagnostics and admin handler that enforce the fleet's
// traffic policy. Package meshgrpc is its gRPC adapter.
//
// # Request flow
//
// This is the one description of a call's path through the mesh; the
// documentation of the other packages links here. A call whose URL host
// (or mesh:/// gRPC target) names a service of the policy goes through:
//
//	request ─► route match ─► split (subset) ─► total deadline ─► fault ─► attempt executor ─┐
//	  ┌───────────────────────────────────────────────────────────────────────────────────────┘
//	  └─► each attempt: concurrency slot ─► pick endpoint ─► breaker ─► per-try deadline
//	      ─► mTLS dial ─► send ─► classify ─► telemetry ─► retry? (back to the slot, or the answer)
//	      (and, on a route that hedges, more attempts beside a slow one)
//
//	at the destination: mTLS ─► authorization (deny list, rules; enforce or audit) ─► rate limit ─► deadline ─► the application
//
// Step by step:
//
//   - Route match: the destination's routes are tried in order (path
//     prefix, methods, headers; an RPC is a POST of its full method); the
//     first that matches wins. None: layer route.
//   - Split: a weighted draw among the route's subsets; the subset's
//     endpoints are the ones its labels select. None: layer discovery.
//   - Total deadline: the timeout of the route, over the caller's context,
//     retries included; it travels downstream with the request.
//   - Fault: the route's fault block, when it has one, delays the call or
//     fails it without sending it (layer fault), decided once per call.
//   - Attempt executor: runs the attempts of the call. It sits above the
//     pick, so each attempt picks again and a retry can land on another
//     endpoint. On a route with a hedge, an attempt that has not answered
//     after the hedge's delay gets company: another attempt to another
//     endpoint, paid for by the retry budget; the first answer wins, the
//     others are canceled and prove nothing.
//   - Concurrency slot: the destination's concurrency limit (fixed, or
//     adaptive: learned from latency and overload answers) admits the
//     attempt, queues it up to max_wait, or sheds it: layer overload,
//     never sent.
//   - Pick: the subset's load balancer (round_robin, random,
//     least_request, or consistent hashing: ring_hash, maglev) over the
//     endpoints outlier detection has not ejected (all of them when every
//     one is ejected). A hashing route hashes each call by its hash
//     policies (a header's first value, a cookie, a query parameter, or
//     source_ip, which for an in-process mesh is this process's own
//     address: all its calls go to one endpoint), so the same key reaches
//     the same endpoint; an ejected endpoint, and for a retry or hedge the
//     endpoints already tried, are passed over for the next one on the
//     ring. A call whose policies produce no value is picked at random.
//   - Breaker: the destination's (or the route's) circuit breaker, of
//     consecutive failures or of a failure rate over a window, admits the
//     attempt or fails it fast: layer breaker. An answer that says the
//     destination sheds load (429, ResourceExhausted, a 503 or Unavailable
//     with a Retry-After or pushback) counts for neither the breaker nor
//     outlier detection.
//   - Per-try deadline: retry.per_try_timeout, within the total deadline.
//   - mTLS dial: toward a tls: strict destination, the connection presents
//     this workload's identity and checks that the server is the service
//     meant; a failure is layer tls, a dial that fails layer connect.
//   - Send, classify: the attempt ends with an answer (an HTTP status, a
//     gRPC status) or without one (connect, reset, timeout, tls); the
//     outcome is reported to the breaker and to outlier detection, and its
//     slot given back (an adaptive limit learns from it). A denial or a
//     rate-limit refusal marked by the destination's mesh, from a verified
//     peer, is layer authz or rate_limit.
//   - Telemetry: one span per logical call with an event per attempt (and
//     per retry the budget refused), ending with the subset, the attempts,
//     the policy version and, on failure, the layer; the call's duration
//     recorded once at its end, retries included; and a mesh failure
//     logged as one "call failed" record with the CallError's fields, at
//     most one a second per destination and layer (the next says how many
//     were left out).
//   - Retry: when retry_on matches the outcome, attempts remain, the
//     method may be repeated and the retry budget pays for it, the next
//     attempt follows a backoff (or the server's Retry-After, or gRPC
//     pushback; a rate limit's Retry-After is waited whenever it ends
//     before the deadline). A retry the budget refuses is layer budget;
//     when retries are spent, the caller gets the last answer, or the last
//     attempt's CallError.
//
// A host that is no service of the policy passes through untouched, or fails
// at layer egress under egress: deny. Package resilience holds the breaker,
// outlier detection, backoff, budget, retry conditions, concurrency and
// rate limiters and the latency tracker of hedges; package
// discovery the endpoint snapshots and pickers; package telemetry the
// instruments and spans.
//
// # gRPC
//
// Package github.com/inmesh/inmesh/meshgrpc gives a gRPC ClientConn and
// server the same request flow, from the same policy, at grpc-go's plugin
// points; it is a package of its own so that a program that only speaks
// HTTP links no grpc-go.
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
// connect health endpoint (Connect-native instances and Envoy sidecars),
// the identity from the Connect CA, authorization from service-intentions,
// and Register in the catalog as Connect-native with a health check. A
// control plane that also implements StatusReporter hears, for every
// registered instance, the policy version it applied, so that an operator
// sees the fleet's versions (`inmesh status --consul`).
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
// retries are spent. Over gRPC (package meshgrpc), the CallError travels
// as a status that meshgrpc.FromStatus recovers, and a status of the
// destination reaches the caller unchanged.
//
// # Concurrency
//
// A Mesh and everything it returns are safe for concurrent use. Policy and
// endpoints are immutable snapshots swapped atomically; the request path
// takes no lock (a circuit breaker, when configured, takes its own only for
// a failure, in its half-open state and for its transitions). Long-lived followers of the state, such as
// meshgrpc's resolver, wait for the next snapshot on a channel it closes
// when replaced.
package mesh
