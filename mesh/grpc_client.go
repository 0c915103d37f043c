package mesh

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// rpcCall is one logical gRPC call through the mesh: the shared call
// (route, split, deadline, retry bookkeeping), the method, and the slot
// through which each attempt's pick comes back from the balancer.
type rpcCall struct {
	call
	method string
	slot   *pickSlot // the current attempt's
	start  time.Time
	caller context.Context // the caller's context, for telemetry

	unarySlot pickSlot // the slot of every attempt of a unary call
}

// newRPCCall starts the call of method toward the service cc's target
// names. It returns nil when the target is no mesh target (the call is
// sent untouched), or an error when the call must fail before it is sent:
// layer egress for a target of another scheme, or a mesh target naming no
// service, under egress: deny; layer policy for a mesh target naming a
// service the control plane holds no valid policy for, or none at all.
func (m *Mesh) newRPCCall(ctx context.Context, cc *grpc.ClientConn, method string) (*rpcCall, error) {
	service, ok := targetService(cc.Target())
	st := m.state.Load()
	if !ok {
		if st.egressDeny {
			return nil, &CallError{Layer: LayerEgress, PolicyVersion: st.policy.Version,
				Err: fmt.Errorf("target %q is no mesh target (%s:///<service>), and the policy's egress is deny", cc.Target(), Scheme)}
		}
		return nil, nil
	}
	d := st.services[service]
	if d == nil {
		return nil, noMeshService(st, service)
	}
	if m.ensureWatched(ctx, d.name) {
		// The first call to a destination starts watching its endpoints,
		// as on the HTTP path (the resolver may not be built yet).
		st = m.state.Load()
		if d = st.services[service]; d == nil {
			return nil, noMeshService(st, service)
		}
	}
	c := &rpcCall{call: call{m: m, st: st, d: d}, method: method, caller: ctx}
	c.start = m.clock.Now()
	c.now = c.start
	c.rt = d.lookupRPC(ctx, method)
	c.ctx, c.span = m.tracing.StartRPCClientCall(ctx, d.name, c.routeName(), method)
	return c, nil
}

// noMeshService is the error of a call to a mesh target naming service,
// which is no service of st: the one state.outside gives, or else layer
// policy (a mesh target never leaves the mesh).
func noMeshService(st *state, service string) *CallError {
	if ce := st.outside(service); ce != nil {
		return ce
	}
	return &CallError{Layer: LayerPolicy, Service: service, PolicyVersion: st.policy.Version,
		Err: fmt.Errorf("%q is no service of the policy in force", service)}
}

// prepare checks the route and the split and starts the call's deadline;
// a CallError says why the call cannot be sent.
func (c *rpcCall) prepare() *CallError {
	if c.rt == nil {
		return c.fail(LayerRoute, fmt.Errorf("no route of service %q matches RPC %s", c.d.name, c.method))
	}
	if ce := c.split(); ce != nil {
		return ce
	}
	c.begin()
	c.ctx = c.m.tracing.InjectOutgoing(c.ctx)
	return nil
}

// end records the call's telemetry: rpc.client.duration, the attempts and
// the span. err is what the caller gets.
func (c *rpcCall) end(err error) {
	code, errorType := codes.OK, ""
	if ce, ok := err.(*CallError); ok {
		code, errorType = ce.Layer.Code(), string(ce.Layer)
	} else if err != nil {
		code = grpcstatus.Code(err)
		errorType = code.String()
	}
	c.m.instr.RecordRPCClient(c.caller, c.m.clock.Now().Sub(c.start), telemetry.RPCCall{
		Service: c.d.name, Route: c.routeName(), Subset: c.subsetName(),
		FullMethod: c.method, Code: code, ErrorType: errorType,
	})
	c.countAttempts()
	telemetry.EndRPCCall(c.span, code, errorType, err)
}

// lookupRPC finds the route of d that matches an RPC of fullMethod whose
// outgoing metadata is in ctx, or nil.
func (d *destination) lookupRPC(ctx context.Context, fullMethod string) *route {
	for _, rt := range d.routes {
		if rt.match.matchRPC(ctx, fullMethod) {
			return rt
		}
	}
	return nil
}

// matchRPC reports whether an RPC satisfies every condition: path_prefix
// against the full method ("/billing.Billing/Charge"), methods as if every
// RPC were a POST (it is one, over HTTP/2), and headers against the
// outgoing metadata of ctx, by lower-case key.
func (m *matcher) matchRPC(ctx context.Context, fullMethod string) bool {
	if !m.matchPath(fullMethod, http.MethodPost) {
		return false
	}
	for i := range m.headers {
		if !slices.Contains(metadata.ValueFromOutgoingContext(ctx, m.headers[i].lower), m.headers[i].value) {
			return false
		}
	}
	return true
}

// unaryClient is the mesh's unary client interceptor: route, split,
// deadline, and the retry loop, each attempt admitted by the breaker and
// sent to the endpoint the balancer picks in the chosen subset.
func (m *Mesh) unaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c, err := m.newRPCCall(ctx, cc, method)
	if c == nil {
		if err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	err = c.unary(invoker, req, reply, cc, opts)
	c.end(err)
	return err
}

// unary runs the retry loop of a unary call, each attempt through invoker.
func (c *rpcCall) unary(invoker grpc.UnaryInvoker, req, reply any, cc *grpc.ClientConn, opts []grpc.CallOption) error {
	if ce := c.prepare(); ce != nil {
		c.release()
		return ce
	}
	defer c.release()
	c.slot = &c.unarySlot
	c.slot.done = c.slot.onDone
	var bo *resilience.Backoff
	var waited time.Duration
	for {
		c.attempts++
		ticket, ce := c.admit(waited)
		if ce != nil {
			return ce
		}
		actx, acancel := c.attemptContext()
		err := invoker(actx, c.method, req, reply, cc, opts...)
		out, err, final := c.settleAttempt(ticket, err, actx, waited)
		acancel()
		if final {
			return err
		}
		retry, res := c.verdict(out, err)
		if !retry {
			return res
		}
		if waited, err = c.waitRetry(&bo, err); err != nil {
			return err
		}
	}
}

// attemptContext prepares c.slot for the next attempt and returns the
// attempt's context: the call's, carrying the slot to the picker, bounded
// by the per-try timeout when there is one.
func (c *rpcCall) attemptContext() (context.Context, context.CancelFunc) {
	c.slot.reset(c.p, c.st.seq, c.host, c.now)
	ctx := withPickSlot(c.ctx, c.slot)
	if c.rt.eff.PerTryTimeout > 0 {
		return context.WithTimeout(ctx, c.rt.eff.PerTryTimeout)
	}
	return ctx, func() {}
}

// verdict decides whether the attempt that ended with out and err (the
// error the caller would get) is retried; when not, res is what the caller
// gets: err, or a CallError of layer budget when the budget refused the
// retry of an attempt that got no answer (an answer is returned as is).
//
// A server's pushback that says not to retry (see pushbackOf) returns err,
// whatever the policy says.
func (c *rpcCall) verdict(out resilience.Outcome, err error) (retry bool, res error) {
	if c.slot.pushback.Load() == stopPushback {
		return false, err
	}
	switch c.next(out, c.rt.eff.Attempts) {
	case verdictRetry:
		return true, nil
	case verdictBudget:
		if out.Err != resilience.ErrNone {
			return false, c.fail(LayerBudget, fmt.Errorf("retry budget exhausted; last attempt: %w", err))
		}
	}
	return false, err
}

// waitRetry waits before the next attempt and returns the time waited: the
// pushback the failed attempt's server gave when it gave one, else the
// route's backoff. It returns last when that is not to be waited (a
// pushback longer than the route's backoff max, or a wait that would
// outlive the call's deadline), and the end of the call's context when it
// comes during the wait.
func (c *rpcCall) waitRetry(bo **resilience.Backoff, last error) (time.Duration, error) {
	var wait time.Duration
	var ok bool
	if d := c.slot.pushback.Load(); d >= 0 {
		wait, ok = c.pushback(bo, time.Duration(d))
	} else {
		wait, ok = c.backoff(bo, 0)
	}
	if !ok {
		return 0, last
	}
	if err := c.sleep(wait); err != nil {
		return 0, err
	}
	return wait, nil
}

// settleAttempt classifies how an attempt ended (err, nil for OK), reports
// it to the breaker, outlier detection and the span, and returns the
// outcome for the retry decision, the error the caller would get, and
// whether that error is final (not retried whatever the policy says).
//
// The destination's answer, whatever its code, is returned unchanged. A
// failure of the mesh or the network becomes a CallError: the call's
// deadline (timeout), the per-try deadline (timeout, retryable as
// per-try-timeout), no reachable endpoint in the subset (connect or tls,
// from the connection error), a connection that broke before any answer
// (upstream, or connect when nothing was sent), and a denial by the
// destination's mesh (authz, final). The caller's cancellation is returned
// as gRPC gave it, final.
func (c *rpcCall) settleAttempt(ticket resilience.Ticket, err error, actx context.Context, waited time.Duration) (resilience.Outcome, error, bool) {
	c.host = c.slot.host.Load()
	out, layer, final := c.classifyRPC(err, actx)
	c.settle(ticket, out)
	if c.span.IsRecording() {
		outcome := string(layer)
		if layer == "" {
			outcome = grpcstatus.Code(err).String()
		}
		endpoint := ""
		if c.host != nil {
			endpoint = c.host.Address
		}
		telemetry.AttemptEvent(c.span, c.attempts, endpoint, outcome, waited)
	}
	switch {
	case err == nil:
		return out, nil, false
	case layer == LayerAuthz:
		return out, c.fail(LayerAuthz, errors.New(denialReason(err, c.m.cfg.service, c.d.name))), true
	case layer != "":
		return out, c.fail(layer, err), final
	}
	if !c.slot.secured.Load() {
		err = unverified(err)
	}
	return out, err, final
}

// classifyRPC maps the end of an attempt to its outcome and, for a failure
// of the mesh or the network, its layer; final is set for an end that must
// not be retried (the caller's cancellation, a denial).
func (c *rpcCall) classifyRPC(err error, actx context.Context) (resilience.Outcome, Layer, bool) {
	if err == nil {
		return resilience.Outcome{IsGRPC: true, GRPCCode: codes.OK}, "", false
	}
	if cerr := c.ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return resilience.Outcome{Err: resilience.ErrTimeout}, LayerTimeout, false
		}
		return resilience.Outcome{Err: resilience.ErrCanceled}, "", true // the caller canceled
	}
	code := grpcstatus.Code(err)
	if actx.Err() != nil || (code == codes.DeadlineExceeded && (expired(c.ctx) || expired(actx))) {
		// The per-try deadline, or the call's, whose timer may not have
		// fired yet when the server's status (the server's copy of the
		// deadline ran out) came back first.
		return resilience.Outcome{Err: resilience.ErrTimeout}, LayerTimeout, false
	}
	if f := c.slot.failure.Load(); f != nil {
		if f.layer != "" {
			return resilience.Outcome{Err: resilience.ErrConnect}, f.layer, false
		}
		if kind, layer := classifyErr(f.err); kind == resilience.ErrTLS {
			return resilience.Outcome{Err: kind}, layer, false
		}
		return resilience.Outcome{Err: resilience.ErrConnect}, LayerConnect, false
	}
	if c.host != nil && !c.slot.answered.Load() && code == codes.Unavailable {
		// gRPC's own Unavailable: the connection broke before the
		// destination said anything.
		if !c.slot.sent.Load() {
			return resilience.Outcome{Err: resilience.ErrConnect}, LayerConnect, false
		}
		return resilience.Outcome{Err: resilience.ErrReset}, LayerUpstream, false
	}
	if code == codes.PermissionDenied && c.slot.secured.Load() && c.deniedByMesh(err) {
		return resilience.Outcome{IsGRPC: true, GRPCCode: code}, LayerAuthz, true
	}
	return resilience.Outcome{IsGRPC: true, GRPCCode: code}, "", false
}

// deniedByMesh reports whether a PermissionDenied status is the denial of
// the destination's own mesh (marked by an ErrorInfo of layer authz naming
// the destination), not one its application returned or relayed. The
// caller checks first that the attempt went over mTLS: from a peer whose
// identity was not verified, the marker means nothing.
func (c *rpcCall) deniedByMesh(err error) bool {
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return false
	}
	ei := meshInfo(st)
	return ei != nil && ei.GetReason() == string(LayerAuthz) && ei.GetMetadata()[infoService] == c.d.name
}

// unverified returns err, a status from a peer whose identity was not
// verified (a tls: disable destination), so that a mesh marker in it is not
// believed: when it carries one, err comes back wrapped, with the same
// status and text, and FromStatus returns nil for it. Any other error is
// returned as is.
func unverified(err error) error {
	if _, ok := err.(*CallError); ok {
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
	if ce := FromStatus(err); ce != nil && ce.Err != nil {
		return ce.Err.Error()
	}
	return fmt.Sprintf("%s denied caller %q", service, caller)
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

// expired reports whether ctx's deadline has passed, whether or not its
// timer has fired yet.
func expired(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}
