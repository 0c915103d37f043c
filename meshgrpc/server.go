package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// unaryServer is the mesh's unary server interceptor: server span, caller
// identity, authorization, rate limit, rpc.server.duration. A denied or
// rate-limited call never reaches the handler.
func (a *adapter) unaryServer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	sc, denial := a.serveRPC(ctx, info.FullMethod)
	if denial != nil {
		return nil, denial
	}
	resp, err := handler(sc.ctx, req)
	sc.end(err)
	return resp, err
}

// streamServer is the stream counterpart of unaryServer.
func (a *adapter) streamServer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	sc, denial := a.serveRPC(ss.Context(), info.FullMethod)
	if denial != nil {
		return denial
	}
	err := handler(srv, &serverStream{ServerStream: ss, ctx: sc.ctx})
	sc.end(err)
	return err
}

// serverStream gives the handler the context with the server span.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// serverCall is one RPC served behind the interceptors.
type serverCall struct {
	a      *adapter
	ctx    context.Context
	span   trace.Span
	start  time.Time
	caller string
	id     string // the caller's SPIFFE ID, for the span; "" when it records nothing
	method string
	// md is the carrier the propagator reads the caller's trace context
	// from: in the serverCall, which the heap holds anyway, it is handed
	// over as an interface without an allocation of its own.
	md incomingMetadata
}

// serveRPC starts serving an RPC of fullMethod: the server span (child of
// the caller's propagated trace context), the caller from its verified
// certificate, and the authorization of this service's rules, the same
// compiled rules as Handler's (every RPC is a POST of its full method; its
// metadata are the headers Consul intentions see). Every decision is
// counted; a denial is recorded, logged and returned as the CallError of
// layer authz, which gRPC sends as PermissionDenied marked for the caller's
// mesh, unless the authorization is in mode audit: then it is logged and
// the RPC goes through. An authorized call is then held to this service's
// rate_limit block, as Handler holds it: a refusal is returned as the
// CallError of layer rate_limit (see refuse). The deadline the caller set travels natively with the RPC
// (grpc-timeout) and bounds ctx already.
func (a *adapter) serveRPC(ctx context.Context, fullMethod string) (*serverCall, error) {
	p := a.p
	self := p.Service
	sc := &serverCall{a: a, start: p.Env.Clock.Now(), method: fullMethod, md: incomingMetadata{ctx}}
	if p.PolicyVersionHeader {
		// Header metadata go out with the first response message, or
		// with the status of a denial or refusal.
		_ = grpc.SetHeader(ctx, metadata.Pairs(policyVersionKey, p.State().PolicyVersion))
	}
	sc.ctx, sc.span = p.Tracing.StartRPCServerCall(ctx, &sc.md, self, fullMethod)
	caller, callerErr := callerOfPeer(ctx)
	sc.caller = caller
	sc.id = callerIDOfPeer(sc.span, ctx)
	header := meshlink.Header{Src: ctx, Get: incomingValues}
	allow, reason := p.Authorize(sc.ctx, caller, callerErr, http.MethodPost, fullMethod, header)
	if allow {
		if wait, limit, limited := p.RateLimit(sc.ctx, caller); limited {
			return nil, sc.refuse(ctx, wait, limit)
		}
		return sc, nil
	}
	denial := callFailed(&mesh.CallError{Layer: mesh.LayerAuthz, Service: self, PolicyVersion: p.State().PolicyVersion,
		Err: fmt.Errorf("%s denied caller %q: %s", self, caller, reason)})
	p.Env.Instr.RecordRPCServer(sc.ctx, clock.Since(p.Env.Clock, sc.start), telemetry.RPCServerCall{
		Service: self, Caller: caller, FullMethod: fullMethod, Code: resilience.CodePermissionDenied, ErrorType: string(mesh.LayerAuthz)})
	telemetry.EndRPCServerCallAs(sc.span, resilience.CodePermissionDenied, caller, sc.id, string(mesh.LayerAuthz))
	p.Env.Log.Debug("caller denied", "caller", caller, "rpc", fullMethod, "reason", reason)
	return nil, denial
}

// policyVersionKey is the header metadata that names the policy version
// under mesh.WithPolicyVersionHeader, the HTTP header
// mesh.HeaderPolicyVersion in gRPC's lower case.
const policyVersionKey = "inmesh-policy-version"

// refuse fails an RPC that this service's rate limit refused: the
// CallError of layer rate_limit, which gRPC sends as ResourceExhausted
// marked for the caller's mesh, with the wait as the retry pushback
// (grpc-retry-pushback-ms, in milliseconds rounded up) unless the caller's
// bucket never fills. ctx is the RPC's own, whose trailer gRPC sends.
func (sc *serverCall) refuse(ctx context.Context, wait time.Duration, limit string) error {
	p := sc.a.p
	self := p.Service
	cause := fmt.Sprintf("%s refused caller %q: %s", self, sc.caller, limit)
	if wait > 0 {
		ms := (wait + time.Millisecond - 1) / time.Millisecond
		_ = grpc.SetTrailer(ctx, metadata.Pairs(pushbackHeader, strconv.FormatInt(int64(ms), 10)))
		cause += fmt.Sprintf("; retry after %dms", ms)
	}
	refusal := callFailed(&mesh.CallError{Layer: mesh.LayerRateLimit, Service: self, PolicyVersion: p.State().PolicyVersion,
		Err: errors.New(cause)})
	code := resilience.GRPCCode(Code(mesh.LayerRateLimit))
	p.Env.Instr.RecordRPCServer(sc.ctx, clock.Since(p.Env.Clock, sc.start), telemetry.RPCServerCall{
		Service: self, Caller: sc.caller, FullMethod: sc.method, Code: code, ErrorType: string(mesh.LayerRateLimit)})
	telemetry.EndRPCServerCallAs(sc.span, code, sc.caller, sc.id, string(mesh.LayerRateLimit))
	return refusal
}

// end records rpc.server.duration and ends the span; err is the handler's.
func (sc *serverCall) end(err error) {
	code := resilience.GRPCCode(grpcstatus.Code(err))
	errorType := ""
	if telemetry.IsRPCServerError(code) {
		errorType = code.String()
	}
	p := sc.a.p
	p.Env.Instr.RecordRPCServer(sc.ctx, clock.Since(p.Env.Clock, sc.start), telemetry.RPCServerCall{
		Service: p.Service, Caller: sc.caller, FullMethod: sc.method, Code: code, ErrorType: errorType})
	telemetry.EndRPCServerCallAs(sc.span, code, sc.caller, sc.id, errorType)
}

// callerIDOfPeer returns the SPIFFE ID of the verified client certificate
// of the RPC's connection for its server span (meshlink.CallerIDOf).
func callerIDOfPeer(span trace.Span, ctx context.Context) string {
	if !span.IsRecording() {
		return ""
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ""
	}
	return meshlink.CallerIDOf(span, &info.State)
}

// callerOfPeer returns the service of the verified client certificate of
// the RPC's connection, "" for a plaintext connection.
func callerOfPeer(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", nil
	}
	return meshlink.CallerOf(&info.State)
}
