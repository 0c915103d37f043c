package mesh

import (
	"strconv"
	"strings"

	"github.com/inmesh/inmesh/internal/core"
)

// Layer names the part of the mesh that failed a call.
type Layer = core.Layer

// The layers, in the order a request meets them.
const (
	LayerPolicy    = core.LayerPolicy    // no valid policy for the destination
	LayerRoute     = core.LayerRoute     // no route matched the request
	LayerDiscovery = core.LayerDiscovery // no endpoint to send to
	LayerFault     = core.LayerFault     // an abort injected by the policy's fault block
	LayerOverload  = core.LayerOverload  // this process's concurrency limit for the destination refused the call
	LayerBreaker   = core.LayerBreaker   // the destination's circuit is open
	LayerBudget    = core.LayerBudget    // a retry was needed but the retry budget is spent
	LayerRateLimit = core.LayerRateLimit // the destination's mesh refused the caller: over its rate limit
	LayerTimeout   = core.LayerTimeout   // the call's or an attempt's deadline passed
	LayerTLS       = core.LayerTLS       // handshake or peer identity failed
	LayerAuthz     = core.LayerAuthz     // the destination's mesh denied the caller
	LayerConnect   = core.LayerConnect   // dialing the endpoint failed
	LayerUpstream  = core.LayerUpstream  // the connection broke or the answer was malformed after sending
	LayerEgress    = core.LayerEgress    // a host that is no service of the policy, under egress: deny
)

// CallError is the error of every call the mesh itself fails. It says which
// layer failed, for which destination, route, subset and endpoint, after how
// many attempts and under which policy version. Reach it with errors.As, also
// through the *url.Error that http.Client wraps around it.
type CallError struct {
	Layer         Layer  // which part of the mesh failed the call
	Service       string // destination service
	Route         string // route name that matched ("" if none)
	Subset        string // subset chosen by the split
	Endpoint      string // last endpoint tried, host:port
	Attempts      int    // attempts made
	PolicyVersion string // version of the policy in force
	Err           error  // cause; Unwrap returns it
}

// Error renders every field that is known, for example:
//
//	mesh: timeout: service=billing route=charge subset=v1 endpoint=127.0.0.1:9001 attempts=3 policy=2026-11-26.1: context deadline exceeded
func (e *CallError) Error() string {
	var b strings.Builder
	b.Grow(128)
	b.WriteString("mesh: ")
	b.WriteString(string(e.Layer))
	b.WriteString(":")
	field := func(k, v string) {
		if v != "" {
			b.WriteString(" ")
			b.WriteString(k)
			b.WriteString("=")
			b.WriteString(v)
		}
	}
	field("service", e.Service)
	field("route", e.Route)
	field("subset", e.Subset)
	field("endpoint", e.Endpoint)
	if e.Attempts > 0 {
		field("attempts", strconv.Itoa(e.Attempts))
	}
	field("policy", e.PolicyVersion)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// fromCore is the Env.Err of the mesh's calls: the core's CallError as
// this package's, the same memory under the type that has the methods.
func fromCore(ce *core.CallError) error { return (*CallError)(ce) }

// Unwrap returns the cause.
func (e *CallError) Unwrap() error { return e.Err }

// Timeout reports whether the call failed on a deadline, so that
// url.Error.Timeout and net.Error users see mesh timeouts as timeouts.
func (e *CallError) Timeout() bool { return e.Layer == LayerTimeout }

// Temporary reports whether a later call may succeed without a change of
// policy or identity: true for discovery (endpoints come and go with the
// fleet), overload, breaker, budget, rate_limit, timeout, connect and
// upstream failures; false for policy, route and egress (the policy decides
// them), fault (the policy injected it), tls and authz (the identities do).
func (e *CallError) Temporary() bool {
	switch e.Layer {
	case LayerDiscovery, LayerOverload, LayerBreaker, LayerBudget, LayerRateLimit, LayerTimeout, LayerConnect, LayerUpstream:
		return true
	}
	return false
}
