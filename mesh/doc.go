// Package mesh is the data plane of inmesh inside one process: the Mesh
// that a service creates once with New, and the HTTP client, round tripper,
// diagnostics and admin handler that enforce the fleet's traffic policy.
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
// # Errors
//
// Every failure the mesh produces is a *CallError naming its Layer, the
// destination, route, subset, endpoint, attempts and policy version. An
// answer of the destination, 4xx or 5xx, is returned as a response once
// retries are spent.
//
// # Concurrency
//
// A Mesh and everything it returns are safe for concurrent use. Policy and
// endpoints are immutable snapshots swapped atomically; the request path
// takes no lock of the mesh's own (the circuit breaker, when configured,
// takes gobreaker's).
package mesh
