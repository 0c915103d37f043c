// Package core is the protocol-free part of a call through the mesh: the
// compiled destinations and routes (Compile, Destination, Route, Pool), the
// route match (Matcher, read through Header), and the call itself (Call):
// route, split, the call's deadline and the per-try one, and the attempt
// executor (Run) with breaker admission, outlier and breaker reports, the
// span's attempt events, retry_on, the retry budget, backoff and a
// server's hint (Retry-After, gRPC pushback) under one rule, and the
// fields of the CallError. It also holds what both adapters share around
// the call: the name matching of a destination (ServiceOf), the
// classification of a transport's error (ClassifyErr), and the sanitizing
// of text a peer puts into a CallError (PeerText).
//
// A compilation is incremental: CompileActive compiles the destinations in
// use (those of the last compilation still in the policy, and the ones
// asked for), reusing each whose inputs are unchanged (reuse.go), and
// CompileMore adds one at its first call; Compile compiles every service.
//
// It imports neither net/http nor grpc-go and does not know the Mesh.
// Package mesh's HTTP round tripper and package meshgrpc's interceptors are
// its adapters: each gives it one Sender, which sends an Attempt and says
// how it ended (an Outcome); a gRPC stream, which keeps its own state
// machine, calls the steps of Run (Begin, Settle, MayRetry, Next, Backoff,
// Sleep) itself.
//
// # Where it sits in the request flow
//
// The flow is described once, in package mesh's documentation. Of it, core
// owns everything between the service lookup and the sending of an
// attempt, and everything after an attempt ended:
//
//	Init (route match) ─► Start (split, deadline, budget deposit) ─► Run:
//	  Begin (pick when the core picks, breaker, per-try deadline)
//	  ─► Sender.Send ─► Settle (breaker, outlier, span event)
//	  ─► Next (retry_on, budget) ─► Backoff (hint rule) ─► Sleep ─► Begin…
//	─► Finish (attempts counted, the call's context released)
//
// A concurrency limit or rate limit belongs in Start (taken) and Finish
// (given back), fault injection around the Sender in Run. Hedging is in
// Run (hedge.go): more Attempts in flight beside the first, drawn on the
// retry budget, the losers canceled and settled as canceled.
//
// # Concurrency
//
// Destinations, routes and pools are immutable once compiled and safe to
// share; the breakers, budgets and host health they point to are safe for
// concurrent use. A Registry belongs to the one goroutine that compiles. A
// Call belongs to one logical call, and its steps are taken one at a time.
// A hedged Run sends its attempts from goroutines of its own, several at
// once: the Sender must then be safe for concurrent Sends (an Attempt with
// Hedge set gets storage of its own), while Run alone touches the Call and
// waits for every Send before it returns.
// A Deadline (the call's context when its route has a timeout, and the
// context Handler gives a request with a propagated deadline) is safe for
// concurrent use, as every context is.
//
// # Cost
//
// A call allocates nothing of its own here: the Call, its first Attempt
// and its Deadline live in the adapter's call, which is allocated once. A
// Deadline becomes a context.WithDeadline, timer and all, only when
// someone waits on it; a closed breaker admits and hears back with one
// atomic word.
package core
