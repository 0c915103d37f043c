package meshgrpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// rpcCall is one logical gRPC call through the mesh: the core's call
// (route, split, deadlines, attempts), the method, and what a unary call
// sends each attempt with. It is the core's Sender for a unary call, and
// the core.Header its route match reads (the outgoing metadata of the
// caller's context).
type rpcCall struct {
	core.Call
	a      *adapter
	st     *meshlink.State
	method string
	start  time.Time
	caller context.Context // the caller's context, for telemetry and the route match

	// A unary call's: the slot through which each attempt's pick comes
	// back from the balancer, and the invocation.
	slot    pickSlot
	ctxs    [2]slotCtx // the first attempts' contexts; later ones are a context.WithValue
	invoker grpc.UnaryInvoker
	req     any
	reply   any
	cc      *grpc.ClientConn
	opts    []grpc.CallOption
	hedges  hedges // the pick slots of the hedges in flight
}

var (
	_ core.Sender = (*rpcCall)(nil)
	_ core.Header = (*rpcCall)(nil)
)

// newRPCCall starts the call of method toward the service cc's target
// names. It returns nil when the target is no mesh target (the call is
// sent untouched), or an error when the call must fail before it is sent:
// layer egress for a target of another scheme, or a mesh target naming no
// service, under egress: deny; layer policy for a mesh target naming a
// service the control plane holds no valid policy for, or none at all.
//
// stream is set for a streaming RPC; single says that the call cannot have
// two attempts in flight at once (a stream, a unary call whose reply
// cannot be copied): it is never hedged.
func (a *adapter) newRPCCall(ctx context.Context, cc *grpc.ClientConn, method string, stream, single bool) (*rpcCall, error) {
	service, ok := targetService(cc.Target())
	st := a.p.State()
	if !ok {
		if st.EgressDeny {
			return nil, a.failEarly(ctx, callFailed(&mesh.CallError{Layer: mesh.LayerEgress, PolicyVersion: st.PolicyVersion,
				Err: fmt.Errorf("target %q is no mesh target (%s:///<service>), and the policy's egress is deny", cc.Target(), Scheme)}))
		}
		return nil, nil
	}
	d := st.Services[service]
	if d == nil {
		// A service of the policy no call needed yet is compiled now.
		st, d = st.Destination(service)
	}
	if d == nil && a.p.FindService(ctx, service) {
		// A service the control plane knows beyond the policy.
		st = a.p.State()
		st, d = st.Destination(service)
	}
	if d == nil {
		return nil, a.failEarly(ctx, noMeshService(st, service))
	}
	if a.p.EnsureWatched(ctx, d.Name) {
		// The first call to a destination starts watching its endpoints,
		// as on the HTTP path (the resolver may not be built yet).
		st = a.p.State()
		if st, d = st.Destination(service); d == nil {
			return nil, a.failEarly(ctx, noMeshService(st, service))
		}
	}
	c := &rpcCall{a: a, st: st, method: method, caller: ctx}
	c.Init(&a.env, d, core.Request{Path: method, Method: http.MethodPost, Header: c, RPC: true,
		Replayable: true, Idempotent: true, Stream: stream, Single: single || stream}, false)
	c.PolicyVersion = st.PolicyVersion
	c.start = c.Now
	c.Ctx, c.Span = a.p.Tracing.StartRPCClientCall(ctx, d.Name, c.RouteName(), method)
	return c, nil
}

// Values reads a header condition of a route from the outgoing metadata of
// the caller's context, by lower-case key.
func (c *rpcCall) Values(key core.HeaderKey) []string {
	return metadata.ValueFromOutgoingContext(c.caller, key.Lower)
}

// failEarly logs err, the failure of a call before it is sent (layer
// egress or policy), as every mesh failure is logged, and returns it.
func (a *adapter) failEarly(ctx context.Context, err error) error {
	if se, ok := err.(*statusError); ok {
		a.env.LogFailure(ctx, (*core.CallError)(se.ce))
	}
	return err
}

// noMeshService is the error of a call to a mesh target naming service,
// which is no service of st: the one st.Outside gives, or else layer
// policy (a mesh target never leaves the mesh).
func noMeshService(st *meshlink.State, service string) error {
	if ce := st.Outside(service); ce != nil {
		return callFailed((*mesh.CallError)(ce))
	}
	return callFailed(&mesh.CallError{Layer: mesh.LayerPolicy, Service: service, PolicyVersion: st.PolicyVersion,
		Err: fmt.Errorf("%q is no service of the policy in force", service)})
}

// prepare checks the route and the split, starts the call's deadline and
// injects the route's fault (core.Call.Start); an error says why the call
// cannot be sent.
func (c *rpcCall) prepare() error {
	if err := c.Start(c.Ctx, c.Span); err != nil {
		if _, ok := err.(*statusError); !ok {
			// The caller canceled during a fault's delay: its status.
			err = grpcstatus.FromContextError(err).Err()
		}
		return err
	}
	if h := c.Route.Headers; h != nil {
		c.Ctx = withHeaderActions(c.Ctx, h)
	}
	c.Ctx = injectOutgoing(c.a.p.Tracing, c.Ctx)
	return nil
}

// end records the call's telemetry: rpc.client.duration and the span. err
// is what the caller gets.
func (c *rpcCall) end(err error) {
	code, errorType := codes.OK, ""
	if se, ok := err.(*statusError); ok {
		code, errorType = codeOf(se.ce), string(se.ce.Layer)
		c.a.env.LogFailure(c.Ctx, (*core.CallError)(se.ce)) // c.Ctx: the call's span, for a handler that reads it
	} else if err != nil {
		code = grpcstatus.Code(err)
		errorType = code.String()
	}
	c.a.p.Env.Instr.RecordRPCClient(c.caller, clock.Since(c.a.p.Env.Clock, c.start), telemetry.RPCCall{
		Service: c.Dest.Name, Route: c.RouteName(), Subset: c.SubsetName(),
		FullMethod: c.method, Code: resilience.GRPCCode(code), ErrorType: errorType,
	})
	telemetry.EndRPCClientCall(c.Span, resilience.GRPCCode(code), telemetry.CallEnd{ErrorType: errorType, Err: err,
		Subset: c.SubsetName(), Attempts: c.Attempts, PolicyVersion: c.PolicyVersion})
}

// unaryClient is the mesh's unary client interceptor: the core's call
// (route, split, deadline, attempts, each admitted by the breaker), each
// attempt sent through invoker to the endpoint the balancer picks in the
// chosen subset.
func (a *adapter) unaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c, err := a.newRPCCall(ctx, cc, method, false, !hedgeable(reply, opts))
	if c == nil {
		if err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c.invoker, c.req, c.reply, c.cc, c.opts = invoker, req, reply, cc, opts
	if err = c.prepare(); err == nil {
		c.slot.done = c.slot.onDone
		var o core.Outcome
		o, err = c.Run(c)
		if ans, ok := o.Answer.(*hedgeAnswer); ok {
			ans.apply(c)
		}
	}
	c.Finish()
	c.end(err)
	return err
}

// Send makes one attempt of a unary call: the pick slot readied for the
// balancer, the invocation, its classification. A hedge is sent with
// storage of its own (sendHedge).
func (c *rpcCall) Send(a *core.Attempt) core.Outcome {
	if a.Hedge {
		return c.sendHedge(a)
	}
	c.slot.reset(a.Pool, c.st.Seq, a.Prev, a.Now)
	c.slot.hash, c.slot.hashed = c.Hash()
	var ctx context.Context
	if a.N >= 1 && a.N <= len(c.ctxs) {
		// Written once, before its attempt: grpc-go may still read an
		// earlier attempt's context when this one starts.
		sc := &c.ctxs[a.N-1]
		sc.Context, sc.slot = a.Ctx, &c.slot
		ctx = sc
	} else {
		ctx = withPickSlot(a.Ctx, &c.slot)
	}
	err := c.invoker(ctx, c.method, c.req, c.reply, c.cc, c.opts...)
	return c.outcome(a, &c.slot, err)
}

// Discard does nothing: a unary call's answer is the caller's reply,
// written over by the next attempt, or a hedge's own, left to the garbage
// collector.
func (*rpcCall) Discard(any) {}

// outcome classifies how attempt a, whose pick came back in s, ended (err,
// nil for OK), with the server's pushback as its hint.
//
// The destination's answer, whatever its code, is returned unchanged. A
// failure of the mesh or the network is given a layer: the call's deadline
// (timeout), the per-try deadline (timeout, retryable as per-try-timeout),
// no reachable endpoint in the subset (connect or tls, from the connection
// error), a connection that broke before any answer (upstream, or connect
// when nothing was sent), a denial by the destination's mesh (authz,
// final) and a refusal by its rate limit (rate_limit, retried as retry_on
// says). The caller's cancellation is returned as gRPC gave it, final.
func (c *rpcCall) outcome(a *core.Attempt, s *pickSlot, err error) core.Outcome {
	o := core.Outcome{Host: s.host.Load()}
	o.Result, o.Layer, o.Final = c.classifyRPC(err, a, s, o.Host)
	switch {
	case err == nil:
	case o.Layer == mesh.LayerAuthz:
		o.Err = errors.New(denialReason(err, c.a.p.Service, c.Dest.Name))
	case o.Layer == mesh.LayerRateLimit:
		o.Err = errors.New(peerCause(err, fmt.Sprintf("%s refused caller %q: rate limited", c.Dest.Name, c.a.p.Service)))
	case o.Layer != "":
		o.Err = err
	case !s.secured.Load():
		o.Err = unverified(err)
	default:
		o.Err = err
	}
	switch p := s.pushback.Load(); {
	case p == stopPushback:
		o.Hint = core.Hint{Kind: core.HintStop}
	case p >= 0:
		o.Hint = core.Hint{Kind: core.HintExactly, Wait: time.Duration(p)}
	}
	return o
}

// classifyRPC maps the end of an attempt to its result and, for a failure
// of the mesh or the network, its layer; final is set for an end that must
// not be retried (the caller's cancellation, a denial).
func (c *rpcCall) classifyRPC(err error, a *core.Attempt, s *pickSlot, host *discovery.Host) (resilience.Outcome, mesh.Layer, bool) {
	if err == nil {
		return resilience.Outcome{IsGRPC: true, GRPCCode: resilience.CodeOK}, "", false
	}
	if kind, layer, ended := a.Ended(); ended {
		return resilience.Outcome{Err: kind}, layer, layer == "" // "": the caller canceled
	}
	code := grpcstatus.Code(err)
	if code == codes.DeadlineExceeded && a.Expired() {
		// The per-try deadline, or the call's, whose timer has not fired
		// yet: the server's status (the server's copy of the deadline ran
		// out) came back first.
		return resilience.Outcome{Err: resilience.ErrTimeout}, mesh.LayerTimeout, false
	}
	if f := s.failure.Load(); f != nil {
		if f.layer != "" {
			return resilience.Outcome{Err: resilience.ErrConnect}, f.layer, false
		}
		if kind, layer := core.ClassifyErr(f.err); kind == resilience.ErrTLS {
			return resilience.Outcome{Err: kind}, layer, false
		}
		return resilience.Outcome{Err: resilience.ErrConnect}, mesh.LayerConnect, false
	}
	if host != nil && !s.answered.Load() && code == codes.Unavailable {
		// gRPC's own Unavailable: the connection broke before the
		// destination said anything.
		if !s.sent.Load() {
			return resilience.Outcome{Err: resilience.ErrConnect}, mesh.LayerConnect, false
		}
		return resilience.Outcome{Err: resilience.ErrReset}, mesh.LayerUpstream, false
	}
	if code == codes.PermissionDenied && s.secured.Load() && c.markedBy(err, mesh.LayerAuthz) {
		return resilience.Outcome{IsGRPC: true, GRPCCode: resilience.GRPCCode(code)}, mesh.LayerAuthz, true
	}
	if code == codes.ResourceExhausted && s.secured.Load() && c.markedBy(err, mesh.LayerRateLimit) {
		// The destination's rate limit refused this caller: retried as
		// retry_on says (resource-exhausted), not before its pushback.
		return resilience.Outcome{IsGRPC: true, GRPCCode: resilience.GRPCCode(code)}, mesh.LayerRateLimit, false
	}
	return resilience.Outcome{IsGRPC: true, GRPCCode: resilience.GRPCCode(code)}, "", false
}

// markedBy reports whether a status is the answer of the destination's
// own mesh at layer (marked by an ErrorInfo of that layer naming the
// destination): its denial (authz), its rate limit's refusal
// (rate_limit), not one its application returned or relayed. The caller
// checks first that the attempt went over mTLS: from a peer whose identity
// was not verified, the marker means nothing.
func (c *rpcCall) markedBy(err error, layer mesh.Layer) bool {
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return false
	}
	ei := meshInfo(st)
	return ei != nil && ei.GetReason() == string(layer) && ei.GetMetadata()[infoService] == c.calledService()
}

// calledService is the service the call's pool calls: the destination's,
// or another's for a split entry that names one.
func (c *rpcCall) calledService() string {
	if c.Pool != nil && c.Pool.Service != "" {
		return c.Pool.Service
	}
	return c.Dest.Name
}

// unverified returns err, a status from a peer whose identity was not
// verified (a tls: disable destination), so that a mesh marker in it is not
// believed: when it carries one, err comes back wrapped, with the same
// status and text, and FromStatus returns nil for it. Any other error is
// returned as is.
func unverified(err error) error {
	if _, ok := err.(*statusError); ok {
		return err
	}
	st, ok := grpcstatus.FromError(err)
	if !ok || meshInfo(st) == nil {
		return err
	}
	return &unverifiedStatus{err: err}
}

// unverifiedStatus is a status marked as a mesh's that came from a peer
// whose identity was not verified: the application's own status, passed to
// the caller unchanged (code, message, details, Error text) except that
// FromStatus does not rebuild a CallError from it.
type unverifiedStatus struct{ err error }

func (e *unverifiedStatus) Error() string                  { return e.err.Error() }
func (e *unverifiedStatus) GRPCStatus() *grpcstatus.Status { return grpcstatus.Convert(e.err) }
func (e *unverifiedStatus) Unwrap() error                  { return e.err }

// denialReason is the cause the destination's mesh gave for a denial.
func denialReason(err error, caller, service string) string {
	return peerCause(err, fmt.Sprintf("%s denied caller %q", service, caller))
}

// peerCause is the cause the destination's mesh gave in its marked status
// err (sanitized, as FromStatus gives it), or fallback.
func peerCause(err error, fallback string) string {
	if ce := FromStatus(err); ce != nil && ce.Err != nil {
		return ce.Err.Error()
	}
	return fallback
}

// Values of pickSlot.pushback other than a delay in nanoseconds (>= 0).
const (
	noPushback   = -1 // the trailer had none: the route's backoff applies
	stopPushback = -2 // the server said not to retry
)

// pushbackHeader is the trailer by which a gRPC server tells its client when
// to retry (gRFC A6).
const pushbackHeader = "grpc-retry-pushback-ms"

// pushbackOf reads the retry pushback of a trailer: noPushback without one;
// the delay it asks for, in nanoseconds, for a single non-negative integer
// of milliseconds; stopPushback for a negative, malformed or repeated
// value, by which the server says not to retry.
func pushbackOf(tr metadata.MD) int64 {
	v := tr[pushbackHeader]
	switch {
	case len(v) == 0:
		return noPushback
	case len(v) > 1:
		return stopPushback
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ms < 0 {
		return stopPushback
	}
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64
	}
	return ms * int64(time.Millisecond)
}
