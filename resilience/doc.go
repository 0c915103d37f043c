// Package resilience holds the policies that protect a call to another
// service: retry conditions, the retry budget, backoff, the circuit breaker,
// outlier detection and concurrency limits; and the rate limits a
// service's own mesh puts on its callers.
//
// The package is transport-agnostic. It knows nothing of HTTP clients or gRPC
// connections: the mesh's HTTP and gRPC layers classify how each attempt ended
// as an [Outcome] and ask these policies what to do next. Time is injected
// (a clock.Clock, or the caller's now) wherever it can be, so the policies are
// tested without sleeping.
//
// # Where each piece sits in the request flow
//
// The mesh uses the pieces of this package along the request flow that the
// package documentation of [github.com/inmesh/inmesh/mesh] describes:
//
//   - The attempt executor deposits into the destination's [Budget] once per logical
//     call and withdraws one token before each retry; when TryWithdraw fails the
//     last failure is returned instead of retrying.
//   - Between attempts it waits [Backoff.Next] (exponential, full jitter), or
//     the server's Retry-After ([ParseRetryAfter]), with [Sleep], which ends
//     early with the call's context.
//   - The endpoint picker skips hosts whose [HostHealth.Available] is false:
//     outlier detection ([Outlier]) ejects a host for a time after repeated
//     failures, per endpoint of one destination.
//   - The destination's [Limiter] gives each attempt a slot ([Limiter.Acquire],
//     queueing up to its MaxWait) or refuses it with an error wrapping
//     [ErrOverload]; the attempt's [Permit] gives the slot back, with what
//     an adaptive limit learns ([IsDrop] tells a drop).
//   - The destination's [Breaker] admits or rejects each attempt
//     ([Breaker.Allow]) before it is sent; a rejection wraps [ErrBreakerOpen].
//   - After the attempt, the classified [Outcome] is reported: [IsFailure]
//     decides what counts against the breaker and outlier detection, and
//     [RetryOn.Match] whether the attempt executor tries again.
//   - On the server side, before the application, the service's own
//     [RateLimiter] takes a token for the verified caller ([RateLimiter.Allow]);
//     a refused call learns the wait until a token is there (its
//     Retry-After).
//
// # Concurrency
//
// [Budget], [Breaker], [Outlier], [HostHealth] and [Limiter] are shared by
// every call to a destination and are safe for concurrent use; a Limiter
// with a free slot admits, and takes a report, without a lock or an
// allocation. The per-request paths
// (Budget.Deposit and TryWithdraw, HostHealth.Available and Report,
// RetryOn.Match, IsFailure, a closed Breaker's Allow and reports, and
// RateLimiter.Allow for a known caller) take no lock and do not allocate. [RetryOn] is an
// immutable comparable value. A [Backoff] belongs to one logical call and is
// not safe for concurrent use. A nil *Budget, *Breaker, *Limiter or *HostHealth means
// the policy is off: every retry and attempt is allowed, every host available.
package resilience
