package meshlink

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/telemetry"
)

// Plane is what an adapter needs of one Mesh beyond its public API.
type Plane struct {
	// Service is this workload's service name (WithService).
	Service string
	// Env is the environment of the mesh's calls: clock, logger,
	// instruments. Its Err turns the core's CallError into a *mesh.CallError;
	// an adapter whose errors must be of another type (a gRPC status) copies
	// Env and sets its own Err.
	Env core.Env
	// Tracing starts the spans of calls and served requests.
	Tracing *telemetry.Tracing
	// State returns the state in force. Never nil once New returned.
	State func() *State
	// Watch calls fn with the state in force, then with every state
	// published after it, on the calling goroutine, until ctx ends or the
	// mesh is closed. fn may miss intermediate states, never the last one.
	Watch func(ctx context.Context, fn func(*State))
	// EnsureWatched starts watching the endpoints of service, with a
	// control plane that gives endpoints, waits (within ctx) for the first
	// answer, and reports whether it started a watch: the caller then
	// reloads the state. Without such a control plane it is a nil check.
	EnsureWatched func(ctx context.Context, service string) bool
	// FindService asks the control plane whether service, which names no
	// service of the state in force, is a service of the mesh it knows
	// beyond the policy, and reports whether the state in force now holds
	// it (see mesh.ServiceFinder).
	FindService func(ctx context.Context, service string) bool
	// ClientTLS returns the TLS configuration of connections toward
	// service: this workload's certificate, and service's identity
	// required of the server.
	ClientTLS func(service string) *tls.Config
	// ServerTLS returns the TLS configuration of this workload's servers
	// (Mesh.ServerTLSConfig).
	ServerTLS func() *tls.Config
	// Authorize decides whether caller (a service, "" without a verified
	// certificate; callerErr when the certificate names none) may call
	// method on path of this service, as the HTTP Handler decides it: the
	// control plane's authorization, or the policy's rules. It counts the
	// decision in inmesh.authz.decisions (in ctx) and reports whether the
	// call goes through, with the reason when it does not: under the
	// policy's mode audit a denial is logged and the call goes through. It
	// denies on every error.
	Authorize func(ctx context.Context, caller string, callerErr error, method, path string, header Header) (bool, string)
	// RateLimit decides, after its authorization, whether caller (as for
	// Authorize) may make one more call of this service under its
	// rate_limit block, as the HTTP Handler decides it, counting and
	// logging the decision. A refusal (limited) gives the wait until the
	// caller's bucket has a token (0 when it never will) and the limit
	// it is over, as text.
	RateLimit func(ctx context.Context, caller string) (wait time.Duration, limit string, limited bool)
	// PolicyVersionHeader is set under mesh.WithPolicyVersionHeader: the
	// servers name the version of the policy in force in every answer.
	PolicyVersionHeader bool
}

// Header reads the header values of the request being authorized: Get(Src,
// name) returns every value of the header name. Get must be a function of
// the adapter's package, not a closure, so that a Header costs no
// allocation; package mesh hands it to the control plane as a
// mesh.RequestHeader.
type Header struct {
	Src any
	Get func(src any, name string) []string
}

// State is an adapter's view of one published mesh state: immutable, and
// replaced whole by the next publication.
type State struct {
	// Services are the destinations compiled from the policy and the
	// endpoints, by service name.
	Services map[string]*core.Destination
	// Endpoints are the endpoints of every service, with their labels.
	Endpoints *discovery.Snapshot
	// PolicyVersion is the version of the policy in force.
	PolicyVersion string
	// Seq numbers the states of a mesh in the order they were published,
	// from 1.
	Seq uint64
	// SelfPlaintext is set when this workload's own service says tls:
	// disable: its callers dial it in plaintext, so its servers accept
	// plaintext connections besides mTLS.
	SelfPlaintext bool
	// EgressDeny is set when the policy says egress: deny.
	EgressDeny bool
	// Outside decides a call to name, which is no service of the state,
	// as the HTTP round tripper decides it: nil sends it untouched; else
	// the error to fail it with (layer policy for a service the control
	// plane knows but holds no valid policy for, layer egress under
	// egress: deny).
	Outside func(name string) *core.CallError
	// Destination returns the destination of service name when Services
	// lacks it: a service of the policy that no call needed yet is
	// compiled then, into a new state published with it, which it returns
	// (the state in force). The destination is nil, with the state in
	// force, when the policy has no such service. Services is read first:
	// a destination compiled already costs no call.
	Destination func(name string) (*State, *core.Destination)
}

// Of returns the Plane of m, which must be a non-nil *mesh.Mesh. Package
// mesh sets it at its initialization, before any code that can hold a
// *mesh.Mesh runs; nothing else may set it.
var Of func(m any) *Plane

// WithClock returns the mesh.Option (as an any: this package cannot name
// the type) that sets the clock of a Mesh, for the tests of the adapter
// packages, which must inject a fake clock as package mesh's own tests do.
// Package mesh sets it with Of.
var WithClock func(c clock.Clock) any

// WithRand returns the mesh.Option (as an any) that sets the random source
// of a Mesh's fault block (core.Env.Rand: uniform draws in [0, 1), safe for
// concurrent use), for tests that count injected faults on seeded draws.
// Package mesh sets it with Of.
var WithRand func(r func() float64) any

// CallerOf returns the service of the verified client certificate of a
// connection, "" for a connection without one (plaintext, or nil cs), or an
// error when the certificate is no mesh identity of a service. The HTTP
// Handler and the gRPC server interceptors share it.
func CallerOf(cs *tls.ConnectionState) (string, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return "", nil
	}
	id, err := identity.PeerIDFromState(cs)
	if err != nil {
		return "", err
	}
	svc, ok := id.Service()
	if !ok {
		return "", fmt.Errorf("peer %s names no service", id)
	}
	return svc, nil
}

// CallerIDOf returns the SPIFFE ID of the verified peer certificate of cs
// for a server span, "" when span records nothing or cs has no valid one:
// the ID is parsed, and its text made, only for a recording span.
func CallerIDOf(span trace.Span, cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 || !span.IsRecording() {
		return ""
	}
	id, err := identity.PeerIDFromState(cs)
	if err != nil {
		return ""
	}
	return id.String()
}
