package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Header names the mesh reads and writes on HTTP calls.
const (
	// HeaderTimeout carries the time left to the caller's deadline, in
	// milliseconds, so the destination's Handler can bound its own work.
	HeaderTimeout = "Inmesh-Timeout-Ms"
	// HeaderError marks an answer produced by the destination's mesh rather
	// than its application: "authz" on a denial (403), "rate_limit" when
	// its rate limit refused the caller (429, with Retry-After), "timeout"
	// when the propagated deadline passed before the application answered
	// (504). A
	// caller's mesh believes it only over mTLS from a peer that proved the
	// destination's identity.
	HeaderError = "Inmesh-Error"
)

// transport is the http.RoundTripper of the mesh.
type transport struct {
	m    *Mesh
	next http.RoundTripper // mesh traffic
	pass http.RoundTripper // hosts that are not services of the policy
	// ownNext is set when next is the mesh's own transport and pass is
	// http.DefaultTransport (RoundTripper(nil)); else pass is next.
	ownNext bool

	// secured holds, per destination service (and connect timeout), a
	// clone of next that speaks mTLS to that service, or plaintext with
	// the connect timeout: copy-on-write, read without lock.
	secured atomic.Pointer[map[transportKey]*http.Transport]
	mu      sync.Mutex // serializes additions to secured
}

var _ http.RoundTripper = (*transport)(nil)

// RoundTripper wraps next with the mesh: a request whose URL host names a
// service of the policy is routed, split, timed, retried, guarded by the
// breaker and sent to an endpoint the mesh picks; any other request goes to
// next untouched, unless the policy says egress: deny, where it fails with
// a CallError of layer egress and is never dialed. A service the control
// plane knows but holds no valid policy for (its Consul key was rejected
// and no earlier version is in force) fails with layer policy: it is never
// sent outside the mesh. A route whose policy has a fault block delays or
// aborts a share of its calls before their first attempt; an abort fails
// with a CallError of layer fault, the request never sent.
//
// The URL host is matched as DNS matches names: case-insensitively, with
// or without one trailing dot ("http://Billing./charge" calls billing). A
// port in the URL is ignored: the endpoints' addresses decide where the
// call goes, so "http://billing:8080/" and "http://billing/" are the same
// call. An IP literal never names a service.
//
// A nil next means the mesh's own transport (the settings of
// http.DefaultTransport, more idle connections per endpoint) for mesh
// traffic and http.DefaultTransport for the rest.
//
// The returned RoundTripper is safe for concurrent use and does not modify
// the request it is given.
func (m *Mesh) RoundTripper(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		return &transport{m: m, next: m.transport, pass: http.DefaultTransport, ownNext: true}
	}
	return &transport{m: m, next: next, pass: next}
}

// closeIdler is what http.Client.CloseIdleConnections looks for in its
// transport.
type closeIdler interface{ CloseIdleConnections() }

// CloseIdleConnections closes the idle connections of every transport
// under t: next and pass when they have the method (as
// http.Client.CloseIdleConnections does), and the per-destination mTLS
// clones of next, so that HTTPClient().CloseIdleConnections() reaches every
// connection the client keeps. Connections in use are not interrupted.
func (t *transport) CloseIdleConnections() {
	if ci, ok := t.next.(closeIdler); ok {
		ci.CloseIdleConnections()
	}
	if t.ownNext {
		if ci, ok := t.pass.(closeIdler); ok {
			ci.CloseIdleConnections()
		}
	}
	if sec := t.secured.Load(); sec != nil {
		for _, tr := range *sec {
			tr.CloseIdleConnections()
		}
	}
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		return nil, errors.New("mesh: request has no URL")
	}
	st := t.m.state.Load()
	name := core.ServiceOf(req.URL.Host)
	st, d := t.m.destination(st, name)
	if d == nil {
		// A service the control plane knows beyond the policy?
		if !t.m.findService(req.Context(), name) {
			return t.outside(st, name, req)
		}
		if st, d = t.m.destination(t.m.state.Load(), name); d == nil {
			return t.outside(st, name, req)
		}
	}
	// The first call to a destination starts watching its endpoints, and
	// then those of the services its splits call, as the state that the
	// first answer brought names them (with Consul, the destination's
	// discovery chain comes with it).
	if t.m.ensureWatched(req.Context(), d.Name) {
		if st, d = t.m.destination(t.m.state.Load(), name); d == nil {
			return t.outside(st, name, req)
		}
	}
	if t.m.ensureNeeds(req.Context(), d) {
		if st, d = t.m.destination(t.m.state.Load(), name); d == nil {
			return t.outside(st, name, req)
		}
	}
	// Built in place on the heap: a composite literal copied into a new
	// call would clear its kilobyte under the garbage collector's write
	// barrier.
	c := new(httpCall)
	c.t, c.req = t, req
	return c.run(st.policy.Version, d)
}

// outside sends req, whose host names no service of st, to the pass
// transport, unless st fails it (see state.outside); then its body is
// closed, as a RoundTripper must.
func (t *transport) outside(st *state, name string, req *http.Request) (*http.Response, error) {
	if ce := st.outside(name); ce != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		t.m.env.LogFailure(req.Context(), (*core.CallError)(ce))
		return nil, ce
	}
	return t.pass.RoundTrip(req)
}

// transportKey names a transport of transport.secured.
type transportKey struct {
	service string
	mtls    bool
	connect time.Duration // connect_timeout, 0 for none
}

// secure returns the transport toward service: with mtls, a clone of next
// whose TLS configuration presents this workload's certificate and accepts
// only service's identity, one per service, so that a connection verified
// for one service is never reused for another; with a connect timeout, a
// clone whose dial and TLS handshake it bounds. Plaintext without a
// connect timeout is next itself, as is plaintext over a next that is no
// *http.Transport.
func (t *transport) secure(service string, mtls bool, connect time.Duration) (http.RoundTripper, error) {
	k := transportKey{service: service, mtls: mtls, connect: connect}
	if m := t.secured.Load(); m != nil {
		if tr := (*m)[k]; tr != nil {
			return tr, nil
		}
	}
	base, ok := t.next.(*http.Transport)
	if !ok {
		if !mtls {
			return t.next, nil
		}
		return nil, fmt.Errorf("mTLS toward %q needs an *http.Transport under the mesh (or nil), not %T; or set tls: disable", service, t.next)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.secured.Load()
	if old != nil {
		if tr := (*old)[k]; tr != nil {
			return tr, nil
		}
	}
	tr := base.Clone()
	if mtls {
		tr.TLSClientConfig = t.m.clientTLS(service)
	}
	if connect > 0 {
		boundConnect(tr, connect)
	}
	next := make(map[transportKey]*http.Transport, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[k] = tr
	t.secured.Store(&next)
	t.m.track(service, tr)
	return tr, nil
}

// boundConnect bounds the dial and the TLS handshake of tr's new
// connections by connect: a dial that outlasts it fails with a
// core.ConnectTimeoutError, a handshake with net/http's TLS handshake
// timeout; both are connect failures (layer connect).
func boundConnect(tr *http.Transport, connect time.Duration) {
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, connect)
		defer cancel()
		conn, err := dial(dctx, network, addr)
		if err != nil && ctx.Err() == nil && dctx.Err() != nil {
			return nil, &core.ConnectTimeoutError{Addr: addr, Timeout: connect, Err: err}
		}
		return conn, err
	}
	tr.TLSHandshakeTimeout = connect
}

// outside decides a call to name, which is no service of the policy in
// force: nil sends it untouched, outside the mesh; otherwise it fails with
// the CallError returned: layer policy for a service the control plane
// knows but holds no valid policy for (never sent outside the mesh), layer
// egress under egress: deny.
func (st *state) outside(name string) *CallError {
	if reason, ok := st.policy.Rejected[name]; ok {
		return &CallError{Layer: LayerPolicy, Service: name, PolicyVersion: st.policy.Version,
			Err: fmt.Errorf("service %q has no valid policy: %s", name, reason)}
	}
	if st.egressDeny {
		return &CallError{Layer: LayerEgress, Service: name, PolicyVersion: st.policy.Version,
			Err: fmt.Errorf("%q is no service of the policy, and its egress is deny", name)}
	}
	return nil
}

// httpCall is one logical HTTP call through the mesh: the core's call
// (route, split, deadlines, attempts) and the request it sends. It is the
// core's Sender: each attempt is the request aimed at the endpoint the core
// picked.
type httpCall struct {
	core.Call
	t   *transport
	req *http.Request

	// Storage for the parts of the call that outlive a stack frame, held
	// here since the call is on the heap anyway (it is the core's Sender):
	// the first attempt's request, the current attempt's URL and timeout
	// header value, the body that ends the call's context, and the first
	// attempt's trace context values.
	out     http.Request
	url     url.URL
	timeout [1]string
	body    endingBody[callEnd]
	// trace holds the first attempt's W3C trace context values.
	trace telemetry.HeaderSlots

	// What the route's actions make of the request, once per call
	// (applyActions): the header every attempt starts from (the caller's
	// own when the route changes none), and the rewritten path.
	header        http.Header
	path, rawPath string
	rewrite       bool
}

var _ core.Sender = (*httpCall)(nil)

// httpRequest is what the core reads of req.
func httpRequest(req *http.Request) core.Request {
	return core.Request{Path: req.URL.Path, Method: req.Method, Header: core.HTTPHeader(req.Header),
		RawQuery: req.URL.RawQuery, Replayable: replayable(req), Idempotent: idempotent(req)}
}

// run calls d, a destination of the state of policy version.
func (c *httpCall) run(version string, d *core.Destination) (*http.Response, error) {
	m := c.t.m
	callerCtx := c.req.Context()
	c.Init(&m.env, d, httpRequest(c.req), true)
	c.PolicyVersion = version
	c.applyActions()
	start := c.Now
	routeName := c.RouteName()
	ctx, span := m.tracing.StartClientCall(callerCtx, d.Name, routeName, c.req.Method)

	var resp *http.Response
	err := c.Start(ctx, span)
	if err == nil {
		var o core.Outcome
		if o, err = c.Run(c); err == nil {
			// A response keeps the call's context alive until its body is
			// closed.
			resp = o.Answer.(*http.Response)
			if c.KeepContext() {
				c.body.e = callEnd{&c.Call}
				resp.Body = wrapBody(resp.Body, &c.body)
			}
		}
	} else if c.req.Body != nil {
		// Failed before any attempt (no route, no endpoint, a fault's
		// abort): the body no transport will close, as a RoundTripper
		// must.
		_ = c.req.Body.Close()
	}
	c.Finish()

	call := telemetry.HTTPCall{Service: d.Name, Route: routeName, Subset: c.SubsetName(), Method: c.req.Method}
	if resp != nil {
		call.StatusCode = resp.StatusCode
		if resp.StatusCode >= 500 {
			call.ErrorType = strconv.Itoa(resp.StatusCode)
		}
	}
	// The core returns its own errors unwrapped: a type assertion, unlike
	// errors.As, does not allocate.
	if ce, ok := err.(*CallError); ok {
		call.ErrorType = string(ce.Layer)
		m.env.LogFailure(ctx, (*core.CallError)(ce)) // ctx: the call's span, for a handler that reads it
	} else if err != nil {
		call.ErrorType = "canceled"
	}
	if m.instr.HTTPClientEnabled(callerCtx) {
		m.instr.RecordHTTPClient(callerCtx, clock.Since(m.clock, start), call)
	}
	telemetry.EndClientCall(span, telemetry.CallEnd{StatusCode: call.StatusCode, ErrorType: call.ErrorType, Err: err,
		Subset: call.Subset, Attempts: c.Attempts, PolicyVersion: c.PolicyVersion})
	return resp, err
}

// Send makes one attempt: the request aimed at a.Host, sent, classified.
// An exchange that completed is an answer (Outcome.Answer, the response),
// unless the destination's mesh marked it as its own denial or timeout.
func (c *httpCall) Send(a *core.Attempt) core.Outcome {
	p := a.Pool
	next := c.t.next
	if p.MTLS || p.ConnectTimeout > 0 {
		var err error
		if next, err = c.t.secure(p.Service, p.MTLS, p.ConnectTimeout); err != nil {
			return core.Outcome{Layer: LayerTLS, Err: err, Final: true, NotSent: true}
		}
	}
	out, err := c.outgoing(a, p.MTLS)
	if err != nil {
		return core.Outcome{Layer: LayerUpstream, Err: err, Final: true, NotSent: true}
	}

	a.Host.Begin()
	resp, err := next.RoundTrip(out)
	a.Host.End()
	if err == nil && a.Expired() {
		// The answer came as the attempt's deadline passed: too late, its
		// body is bound to that deadline. It may even be the empty 200 of
		// a destination whose handler stopped when this side gave up. A
		// timeout, as if it had not come.
		discard(resp.Body)
		resp, err = nil, context.DeadlineExceeded
	}
	if err != nil {
		kind, layer := classify(err, a)
		// layer "": the caller canceled, not a failure of the mesh, final.
		return core.Outcome{Result: resilience.Outcome{Err: kind}, Layer: layer, Err: err, Final: layer == ""}
	}
	switch meshMarker(resp, p.MTLS) {
	case LayerAuthz:
		return core.Outcome{Result: resilience.Outcome{HTTPStatus: resp.StatusCode}, Layer: LayerAuthz,
			Err: denial(resp.Body, c.t.m.cfg.service, p.Service), Final: true}
	case LayerRateLimit:
		// The destination's rate limit refused this caller: retried as
		// retry_on says (429), not before its Retry-After (see
		// core.Call.Backoff).
		o := core.Outcome{Result: resilience.Outcome{HTTPStatus: resp.StatusCode}, Layer: LayerRateLimit}
		if ra, ok := resilience.ParseRetryAfter(resp.Header.Get("Retry-After"), c.t.m.clock.Now()); ok {
			o.Hint = core.Hint{Kind: core.HintAtLeast, Wait: ra}
		}
		o.Err = peerCause(resp.Body, "mesh: rate_limit: ", fmt.Sprintf("%s refused caller %q: rate limited", p.Service, c.t.m.cfg.service))
		return o
	case LayerTimeout:
		// The destination's copy of the deadline passed before its
		// application answered: a timeout, not a 504 of the application;
		// retried only when it was the per-try deadline (the call's own
		// leaves no time for a retry).
		discard(resp.Body)
		perTry := a.PerTry()
		return core.Outcome{Result: resilience.Outcome{Err: resilience.ErrTimeout}, Layer: LayerTimeout,
			Err: remoteTimeout(a.Deadline()), Final: !perTry}
	}
	o := core.Outcome{Result: resilience.Outcome{HTTPStatus: resp.StatusCode}, Answer: resp}
	// The hint is read for a retry, and for any 503: with one, the answer
	// is the destination shedding load (Outcome.Overloaded), not a failure.
	if resp.StatusCode == http.StatusServiceUnavailable || a.MayRetry(o.Result) {
		if ra, ok := resilience.ParseRetryAfter(resp.Header.Get("Retry-After"), c.t.m.clock.Now()); ok {
			o.Hint = core.Hint{Kind: core.HintAtLeast, Wait: ra}
		}
	}
	if cancel := a.TakeCancel(); cancel != nil {
		resp.Body = wrapBody(resp.Body, &endingBody[cancelEnd]{e: cancelEnd(cancel)})
	}
	return o
}

// Discard drains and closes the body of a response a retry supersedes.
func (c *httpCall) Discard(answer any) {
	if resp, ok := answer.(*http.Response); ok {
		discard(resp.Body)
	}
}

// outgoing builds the request of one attempt: a shallow copy of the
// caller's request aimed at the picked endpoint, with a fresh body for a
// retry or a hedge and the deadline and trace context in its headers. A
// hedge, in flight beside another attempt, gets a URL and a timeout value
// of its own rather than the call's storage.
func (c *httpCall) outgoing(a *core.Attempt, mtls bool) (*http.Request, error) {
	ctx := a.Ctx
	var out *http.Request
	if a.N == 1 {
		// The first attempt's request is held in the call: WithContext,
		// inlined, builds it on the stack, and only its copy lives on.
		// A retry's gets its own, since the transport may still read the
		// one before.
		c.out = *c.req.WithContext(ctx)
		out = &c.out
	} else {
		out = c.req.WithContext(ctx)
	}
	u := &c.url
	if a.Hedge {
		u = new(url.URL)
	}
	*u = *c.req.URL
	if c.rewrite {
		u.Path, u.RawPath = c.path, c.rawPath
	}
	u.Scheme = "http"
	if mtls {
		u.Scheme = "https"
	}
	u.Host = a.Host.Address
	out.URL = u
	if out.Host == "" {
		out.Host = c.req.URL.Host
	}
	if a.N > 1 && c.req.Body != nil && c.req.Body != http.NoBody {
		body, err := c.req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("replaying the request body: %w", err)
		}
		out.Body = body
	}
	out.Header = c.header
	dl, hasDeadline := ctx.Deadline()
	traced := hasTraceContext(ctx)
	if hasDeadline || traced {
		out.Header = copyHeader(c.header)
		if hasDeadline {
			ms := a.Now.Sub(dl) / -time.Millisecond
			if ms < 1 {
				ms = 1
			}
			tv := c.timeout[:]
			if a.Hedge {
				tv = make([]string, 1)
			}
			tv[0] = c.Route.TimeoutMs.Format(int64(ms))
			out.Header[HeaderTimeout] = tv
		}
		if traced {
			if a.N == 1 && !a.Hedge {
				c.t.m.tracing.InjectSlots(ctx, out.Header, &c.trace)
			} else {
				c.t.m.tracing.Inject(ctx, out.Header)
			}
		}
	}
	return out, nil
}

// applyActions applies the actions of the call's route to what its
// attempts send: request_headers to a copy of the caller's header, and
// prefix_rewrite to the path (outgoing copies the URL for each attempt
// anyway). The caller's request is never modified, and a route without
// actions costs nothing.
func (c *httpCall) applyActions() {
	c.header = c.req.Header
	rt := c.Route
	if rt == nil {
		return
	}
	if rt.Headers != nil {
		h := copyHeader(c.req.Header)
		rt.Headers.Apply(h, core.CanonicalKey)
		c.header = h
	}
	if rt.Rewrite != nil && c.req.URL.Opaque == "" {
		c.path, c.rawPath, c.rewrite = rewritePath(c.req.URL, rt.Rewrite)
	}
}

// rewritePath returns the path and raw path of u with rw applied, kept
// consistent: when u's raw path is the valid spelling of its path, the
// part of it that spells the prefix is replaced by the replacement's
// escaped form, and the rest is kept as the caller spelled it. ok is false
// when u's path does not start with the prefix.
func rewritePath(u *url.URL, rw *core.Rewrite) (path, rawPath string, ok bool) {
	if path, ok = rw.Path(u.Path); !ok {
		return u.Path, u.RawPath, false
	}
	raw := u.RawPath
	if raw == "" || u.EscapedPath() != raw {
		// No spelling of its own, or one net/http would not send: the
		// path's default encoding is sent.
		return path, "", true
	}
	i := 0
	for range len(rw.Prefix) {
		if i >= len(raw) {
			return path, "", true
		}
		if raw[i] == '%' {
			i += 3
		} else {
			i++
		}
	}
	if i > len(raw) {
		return path, "", true
	}
	return path, rw.ToRaw + raw[i:], true
}

// headerRoom is the room a copied header keeps for what the mesh adds: the
// timeout, W3C traceparent and tracestate, and baggage.
const headerRoom = 4

// copyHeader copies h for an attempt, with room for the headers the mesh
// adds, in one map. The values are shared with h, capped so that an append
// to the copy's never writes into h's: no one modifies a request's header
// values in place (a RoundTripper must not modify its request), and the
// mesh only sets whole values.
func copyHeader(h http.Header) http.Header {
	out := make(http.Header, len(h)+headerRoom)
	for k, v := range h {
		out[k] = v[:len(v):len(v)]
	}
	return out
}

// hasTraceContext reports whether ctx carries anything to propagate: a
// span context or baggage. Without either, the headers need no copy.
func hasTraceContext(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0
}

// classify maps the transport error of attempt a to its retry kind and
// layer. A layer of "" (kind ErrCanceled) means the caller canceled.
func classify(err error, a *core.Attempt) (resilience.ErrKind, Layer) {
	if kind, layer, ended := a.Ended(); ended {
		return kind, layer
	}
	return core.ClassifyErr(err)
}

// meshMarker returns the layer of a response that the destination's mesh
// produced rather than its application: authz for a 403, rate_limit for a
// 429, timeout for a 504, marked so with the HeaderError header; "" for
// any other response. The
// marker is believed only from a verified mesh peer: the attempt went over
// mTLS (secured, the route's tls is strict) and the server proved the
// destination's identity in the handshake. From a tls: disable destination
// anyone can write the header, and the response is the application's.
func meshMarker(resp *http.Response, secured bool) Layer {
	if !secured || resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return ""
	}
	switch resp.StatusCode {
	case http.StatusForbidden:
		if resp.Header.Get(HeaderError) == string(LayerAuthz) {
			return LayerAuthz
		}
	case http.StatusTooManyRequests:
		if resp.Header.Get(HeaderError) == string(LayerRateLimit) {
			return LayerRateLimit
		}
	case http.StatusGatewayTimeout:
		if resp.Header.Get(HeaderError) == string(LayerTimeout) {
			return LayerTimeout
		}
	}
	return ""
}

// remoteTimeout is the cause of a timeout the destination's mesh reported:
// the deadline propagated with the attempt passed there before its
// application wrote an answer. which names that deadline
// (core.Attempt.Deadline).
func remoteTimeout(which string) error {
	return &core.DeadlineError{Which: which, Remote: true, Err: context.DeadlineExceeded}
}

// denial reads the reason the destination's mesh gave for a denial from
// the 403 body (a line of text), and closes the body.
func denial(body io.ReadCloser, caller, service string) error {
	return peerCause(body, "mesh: authz: ", fmt.Sprintf("%s denied caller %q", service, caller))
}

// peerCause reads the cause the destination's mesh gave for its answer
// from its body (a line of text that starts with prefix), sanitized, or
// fallback when it gave none, and closes the body.
func peerCause(body io.ReadCloser, prefix, fallback string) error {
	b, _ := io.ReadAll(io.LimitReader(body, 1<<10))
	_ = body.Close()
	reason := strings.TrimSpace(string(b))
	reason = strings.TrimSpace(core.PeerText(strings.TrimPrefix(reason, prefix)))
	if reason == "" {
		reason = fallback
	}
	return errors.New(reason)
}

// replayable reports whether the request body can be sent again.
func replayable(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || r.GetBody != nil
}

// idempotent reports whether a request may be sent more than once, as
// net/http decides it: by method, or by an Idempotency-Key header.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	if _, ok := r.Header["Idempotency-Key"]; ok {
		return true
	}
	_, ok := r.Header["X-Idempotency-Key"]
	return ok
}

// discard drains a little of a body we will not return, so its connection
// can be reused, and closes it.
func discard(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, drainLimit)
	_ = body.Close()
}
