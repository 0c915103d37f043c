package meshgrpc

import (
	"errors"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/mesh"
)

// ErrorDomain is the Domain of the errdetails.ErrorInfo that marks a gRPC
// status produced by the mesh rather than by an application. Its Reason is
// the Layer, and its Metadata holds the CallError's fields under the keys
// service, route, subset, endpoint, attempts and policy_version (absent when
// empty).
const ErrorDomain = "inmesh"

// Keys of the ErrorInfo metadata.
const (
	infoService       = "service"
	infoRoute         = "route"
	infoSubset        = "subset"
	infoEndpoint      = "endpoint"
	infoAttempts      = "attempts"
	infoPolicyVersion = "policy_version"
)

// Code returns the gRPC status code of a failure of layer l:
//
//	timeout                                      DeadlineExceeded
//	authz, egress                                PermissionDenied
//	route                                        FailedPrecondition
//	overload, rate_limit                         ResourceExhausted
//	breaker, budget, connect, discovery,
//	upstream, tls, policy                        Unavailable
//
// A route failure is FailedPrecondition: the policy in force has no route
// for this RPC, and sending it again without a policy change cannot help. A
// policy failure (the target names no service of the policy) is Unavailable,
// as an unresolvable name is in gRPC: the control plane may not have
// delivered the service yet. An egress failure is PermissionDenied: this
// workload's own policy forbids the destination. A TLS failure is
// Unavailable, as gRPC reports a failed handshake; the layer says more.
// Overload (shed by this process's limit) and rate_limit (refused by the
// destination's) are ResourceExhausted, as gRPC's own load shedding is. A
// fault abort carries the code its policy names, not Code's.
func Code(l mesh.Layer) codes.Code {
	switch l {
	case mesh.LayerTimeout:
		return codes.DeadlineExceeded
	case mesh.LayerAuthz, mesh.LayerEgress:
		return codes.PermissionDenied
	case mesh.LayerRoute:
		return codes.FailedPrecondition
	case mesh.LayerOverload, mesh.LayerRateLimit:
		return codes.ResourceExhausted
	}
	return codes.Unavailable
}

// codeOf returns the status code of ce: Code of its layer, except for a
// fault's abort, which carries the code its policy names.
func codeOf(ce *mesh.CallError) codes.Code {
	if ce.Layer == mesh.LayerFault {
		if fa, ok := ce.Err.(*core.FaultAbort); ok {
			return codes.Code(fa.GRPCCode)
		}
	}
	return Code(ce.Layer)
}

// statusError is the error of every RPC the mesh fails: the *CallError,
// which errors.As finds, with the same Error() text, carried over gRPC as
// the status its GRPCStatus returns.
type statusError struct{ ce *mesh.CallError }

func (e *statusError) Error() string { return e.ce.Error() }

// Unwrap returns the CallError.
func (e *statusError) Unwrap() error { return e.ce }

// GRPCStatus returns the status that carries the CallError over gRPC: the
// code of its layer (see Code; a fault's abort has its policy's code), its
// Error() as the message, and an
// errdetails.ErrorInfo of domain ErrorDomain whose reason is the layer and
// whose metadata holds the other fields. FromStatus reverses it.
func (e *statusError) GRPCStatus() *grpcstatus.Status { return statusOf(e.ce) }

// callFailed returns the error an RPC fails with for ce.
func callFailed(ce *mesh.CallError) error { return &statusError{ce: ce} }

// fromCore is the Env.Err of the adapter's calls: the core's CallError as
// a *mesh.CallError (the same memory), carried by a statusError.
func fromCore(ce *core.CallError) error { return &statusError{ce: (*mesh.CallError)(ce)} }

// statusOf returns the status of ce (see statusError.GRPCStatus).
func statusOf(e *mesh.CallError) *grpcstatus.Status {
	st := grpcstatus.New(codeOf(e), e.Error())
	md := make(map[string]string, 6)
	put := func(k, v string) {
		if v != "" {
			md[k] = v
		}
	}
	put(infoService, e.Service)
	put(infoRoute, e.Route)
	put(infoSubset, e.Subset)
	put(infoEndpoint, e.Endpoint)
	if e.Attempts > 0 {
		md[infoAttempts] = strconv.Itoa(e.Attempts)
	}
	put(infoPolicyVersion, e.PolicyVersion)
	if ds, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: string(e.Layer), Metadata: md}); err == nil {
		st = ds
	}
	return st
}

// FromStatus returns the *mesh.CallError that err carries: the one err
// wraps when the mesh of this process produced it, or the one rebuilt from
// a gRPC status marked by a mesh (an errdetails.ErrorInfo of domain
// ErrorDomain), for example the status a destination's mesh denied a call
// with. It returns nil for nil, for an application's status, for a marked
// status that the mesh of this process received from a peer whose identity
// it did not verify (a tls: disable destination), and for any other error.
// A rebuilt CallError's Err holds the cause as text; every field rebuilt
// from the status is peer text, sanitized: no control or format
// characters, at most 256 bytes each.
func FromStatus(err error) *mesh.CallError {
	if err == nil {
		return nil
	}
	if ce, ok := errors.AsType[*mesh.CallError](err); ok {
		return ce
	}
	if _, ok := errors.AsType[*unverifiedStatus](err); ok {
		return nil
	}
	st, ok := grpcstatus.FromError(err)
	if !ok || st.Code() == codes.OK {
		return nil
	}
	ei := meshInfo(st)
	if ei == nil {
		return nil
	}
	md := ei.GetMetadata()
	ce := &mesh.CallError{
		Layer:         mesh.Layer(ei.GetReason()),
		Service:       md[infoService],
		Route:         md[infoRoute],
		Subset:        md[infoSubset],
		Endpoint:      md[infoEndpoint],
		PolicyVersion: md[infoPolicyVersion],
	}
	ce.Attempts, _ = strconv.Atoi(md[infoAttempts])
	// The message is ce.Error() with the cause: strip the part the fields
	// rebuild to keep the cause alone.
	msg := st.Message()
	if rest, ok := strings.CutPrefix(msg, ce.Error()+": "); ok {
		msg = rest
	}
	ce.Layer = mesh.Layer(core.PeerText(string(ce.Layer)))
	ce.Service, ce.Route, ce.Subset = core.PeerText(ce.Service), core.PeerText(ce.Route), core.PeerText(ce.Subset)
	ce.Endpoint, ce.PolicyVersion = core.PeerText(ce.Endpoint), core.PeerText(ce.PolicyVersion)
	ce.Err = errors.New(core.PeerText(msg))
	return ce
}

// meshInfo returns the ErrorInfo of domain ErrorDomain among st's details,
// or nil.
func meshInfo(st *grpcstatus.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == ErrorDomain {
			return ei
		}
	}
	return nil
}
