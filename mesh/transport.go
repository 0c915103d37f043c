package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Header names the mesh reads and writes on HTTP calls.
const (
	// HeaderTimeout carries the time left to the caller's deadline, in
	// milliseconds, so the destination's Handler can bound its own work.
	HeaderTimeout = "Inmesh-Timeout-Ms"
	// HeaderError marks an answer produced by the destination's mesh rather
	// than its application: "authz" on a denial (403), "timeout" when the
	// propagated deadline passed before the application answered (504). A
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

	// secured holds, per destination service, a clone of next that speaks
	// mTLS to that service: copy-on-write, read without lock.
	secured atomic.Pointer[map[string]*http.Transport]
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
// sent outside the mesh.
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
	name := serviceOf(req.URL.Host)
	d := st.services[name]
	if d == nil {
		return t.outside(st, name, req)
	}
	if t.m.ensureWatched(req.Context(), d.name) {
		// The first call to a destination starts watching its endpoints.
		st = t.m.state.Load()
		if d = st.services[name]; d == nil {
			return t.outside(st, name, req)
		}
	}
	c := httpCall{call: call{m: t.m, st: st, d: d}, t: t, req: req}
	return c.run()
}

// outside sends req, whose host names no service of st, to the pass
// transport, unless st fails it (see state.outside); then its body is
// closed, as a RoundTripper must.
func (t *transport) outside(st *state, name string, req *http.Request) (*http.Response, error) {
	if ce := st.outside(name); ce != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, ce
	}
	return t.pass.RoundTrip(req)
}

// secure returns the transport that speaks mTLS to service: a clone of next
// whose TLS configuration presents this workload's certificate and accepts
// only service's identity. One per service, so that a connection verified
// for one service is never reused for another.
func (t *transport) secure(service string) (http.RoundTripper, error) {
	if m := t.secured.Load(); m != nil {
		if tr := (*m)[service]; tr != nil {
			return tr, nil
		}
	}
	base, ok := t.next.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("mTLS toward %q needs an *http.Transport under the mesh (or nil), not %T; or set tls: disable", service, t.next)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.secured.Load()
	if old != nil {
		if tr := (*old)[service]; tr != nil {
			return tr, nil
		}
	}
	tr := base.Clone()
	tr.TLSClientConfig = t.m.clientTLS(service)
	next := make(map[string]*http.Transport, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[service] = tr
	t.secured.Store(&next)
	t.m.track(service, tr)
	return tr, nil
}

// serviceOf returns the service name a URL host (or the endpoint of a gRPC
// target) names, matched as DNS matches names: the port dropped (the
// endpoints' addresses decide where a call goes), then one trailing dot,
// and ASCII letters folded to lower case. "BILLING.:80" names billing. An
// IPv6 literal ("[::1]:80") comes back as "[::1]", which names no service.
// It allocates only for a host with an upper-case letter: the lookup of an
// already canonical host costs nothing.
func serviceOf(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			return host[:i+1]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return lowerASCII(host)
		}
	}
	return host
}

// lowerASCII folds the ASCII letters of s to lower case and leaves every
// other byte alone, as DNS compares names; strings.ToLower would also fold
// letters such as the Kelvin sign into "k", which DNS never matches.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
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

// httpCall is one logical HTTP call through the mesh: the shared call
// (route, split, deadline, retry bookkeeping) and the request it sends.
type httpCall struct {
	call
	t   *transport
	req *http.Request
}

func (c *httpCall) run() (*http.Response, error) {
	start := c.m.clock.Now()
	c.now = start
	callerCtx := c.req.Context()
	c.rt = c.d.lookup(c.req)
	routeName := c.routeName()
	c.ctx, c.span = c.m.tracing.StartClientCall(callerCtx, c.d.name, routeName, c.req.Method)

	resp, err := c.loop()

	call := telemetry.HTTPCall{Service: c.d.name, Route: routeName, Subset: c.subsetName(), Method: c.req.Method}
	if resp != nil {
		call.StatusCode = resp.StatusCode
		if resp.StatusCode >= 500 {
			call.ErrorType = strconv.Itoa(resp.StatusCode)
		}
	}
	// The loop returns its own errors unwrapped: a type assertion, unlike
	// errors.As, does not allocate.
	if ce, ok := err.(*CallError); ok {
		call.ErrorType = string(ce.Layer)
	} else if err != nil {
		call.ErrorType = "canceled"
	}
	c.m.instr.RecordHTTPClient(callerCtx, c.m.clock.Now().Sub(start), call)
	c.countAttempts()
	telemetry.EndCall(c.span, call.StatusCode, call.ErrorType, err)
	return resp, err
}

func (c *httpCall) loop() (*http.Response, error) {
	rt := c.rt
	if rt == nil {
		return nil, c.fail(LayerRoute, fmt.Errorf("no route of service %q matches %s %s", c.d.name, c.req.Method, c.req.URL.Path))
	}
	if ce := c.split(); ce != nil {
		return nil, ce
	}
	c.begin()
	maxAttempts := rt.eff.Attempts
	if maxAttempts > 1 && (!replayable(c.req) || (rt.idempotentOnly && !idempotent(c.req))) {
		maxAttempts = 1
	}

	var bo *resilience.Backoff
	var waited time.Duration
	for {
		c.attempts++
		resp, kind, err := c.attempt(waited)
		if err != nil && kind == resilience.ErrNone {
			// A failure of the mesh itself (breaker, authz, canceled):
			// final, not retried.
			c.release()
			return nil, err
		}
		out := resilience.Outcome{Err: kind}
		if resp != nil {
			out.HTTPStatus = resp.StatusCode
		}
		switch c.next(out, maxAttempts) {
		case verdictReturn:
			return c.finish(resp, err)
		case verdictBudget:
			if resp != nil {
				return c.finish(resp, nil)
			}
			c.release()
			return nil, c.fail(LayerBudget, fmt.Errorf("retry budget exhausted; last attempt: %w", err))
		}
		var hint time.Duration
		if resp != nil {
			if ra, ok := resilience.ParseRetryAfter(resp.Header.Get("Retry-After"), c.m.clock.Now()); ok {
				hint = ra
			}
		}
		wait, ok := c.backoff(&bo, hint)
		if !ok {
			return c.finish(resp, err)
		}
		if resp != nil {
			discard(resp.Body)
		}
		if err := c.sleep(wait); err != nil {
			c.release()
			return nil, err
		}
		waited = wait
	}
}

// finish returns the outcome of the last attempt to the caller. A response
// keeps the call's context alive until its body is closed.
func (c *httpCall) finish(resp *http.Response, err error) (*http.Response, error) {
	if err != nil {
		c.release()
		return nil, err
	}
	if c.cancel != nil {
		resp.Body = wrapBody(resp.Body, c.cancel)
		c.cancel = nil
	}
	return resp, nil
}

// attempt makes one try: pick, breaker, per-try deadline, send, classify.
// It returns the response of a completed exchange (kind ErrNone), or a
// transport failure with its kind and CallError, or (kind ErrNone, err) for
// a final failure that must not be retried.
func (c *httpCall) attempt(waited time.Duration) (*http.Response, resilience.ErrKind, error) {
	rt := c.rt
	if c.pick() == nil {
		return nil, resilience.ErrNone, c.fail(LayerDiscovery, noEndpoints(c.d.name, c.p.subset))
	}
	ticket, ce := c.admit(waited)
	if ce != nil {
		return nil, resilience.ErrNone, ce
	}

	next := c.t.next
	if rt.mtls {
		var err error
		if next, err = c.t.secure(c.d.name); err != nil {
			ticket.Release() // never sent: proves nothing
			return nil, resilience.ErrNone, c.fail(LayerTLS, err)
		}
	}
	actx := c.ctx
	var acancel context.CancelFunc
	if rt.eff.PerTryTimeout > 0 {
		actx, acancel = context.WithTimeout(c.ctx, rt.eff.PerTryTimeout)
	}
	out, err := c.outgoing(actx, rt.mtls)
	if err != nil {
		if acancel != nil {
			acancel()
		}
		ticket.Release() // never sent: proves nothing
		return nil, resilience.ErrNone, c.fail(LayerUpstream, err)
	}

	c.host.Begin()
	resp, err := next.RoundTrip(out)
	c.host.End()
	if err == nil && expired(actx) {
		// The answer came as the attempt's deadline passed: too late, its
		// body is bound to that deadline. It may even be the empty 200 of
		// a destination whose handler stopped when this side gave up. A
		// timeout, as if it had not come.
		discard(resp.Body)
		resp, err = nil, context.DeadlineExceeded
	}

	var kind resilience.ErrKind
	var layer, marked Layer
	o := resilience.Outcome{}
	if err != nil {
		kind, layer = c.classify(err, actx)
		o.Err = kind
	} else if marked = meshMarker(resp, rt.mtls); marked == LayerTimeout {
		// The destination's copy of the deadline passed before its
		// application answered: a timeout, not a 504 of the application.
		kind, layer = resilience.ErrTimeout, LayerTimeout
		o.Err = kind
	} else {
		o.HTTPStatus = resp.StatusCode
	}
	c.settle(ticket, o)
	if c.span.IsRecording() {
		outcome := string(layer)
		if err == nil {
			outcome = strconv.Itoa(resp.StatusCode)
		}
		if marked == LayerTimeout {
			outcome = string(LayerTimeout)
		}
		telemetry.AttemptEvent(c.span, c.attempts, c.host.Address, outcome, waited)
	}

	if err != nil {
		if acancel != nil {
			acancel()
		}
		if layer == "" {
			// The caller canceled: not a failure of the mesh, not retried.
			return nil, resilience.ErrNone, err
		}
		return nil, kind, c.fail(layer, err)
	}
	switch marked {
	case LayerAuthz:
		if acancel != nil {
			acancel()
		}
		return nil, resilience.ErrNone, c.fail(LayerAuthz, denial(resp.Body, c.m.cfg.service, c.d.name))
	case LayerTimeout:
		discard(resp.Body)
		if acancel != nil {
			acancel()
		}
		perTry := rt.eff.PerTryTimeout > 0 && !earlierDeadline(c.ctx, actx)
		ce := c.fail(LayerTimeout, c.remoteTimeout(perTry))
		if !perTry {
			// The call's own deadline: no time is left for a retry.
			return nil, resilience.ErrNone, ce
		}
		return nil, kind, ce
	}
	if acancel != nil {
		resp.Body = wrapBody(resp.Body, acancel)
	}
	return resp, resilience.ErrNone, nil
}

// outgoing builds the request of one attempt: a shallow copy of the
// caller's request aimed at the picked endpoint, with a fresh body for a
// retry and the deadline and trace context in its headers.
func (c *httpCall) outgoing(ctx context.Context, mtls bool) (*http.Request, error) {
	out := c.req.WithContext(ctx)
	u := *c.req.URL
	u.Scheme = "http"
	if mtls {
		u.Scheme = "https"
	}
	u.Host = c.host.Address
	out.URL = &u
	if out.Host == "" {
		out.Host = c.req.URL.Host
	}
	if c.attempts > 1 && c.req.Body != nil && c.req.Body != http.NoBody {
		body, err := c.req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("replaying the request body: %w", err)
		}
		out.Body = body
	}
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline || hasTraceContext(ctx) {
		out.Header = c.req.Header.Clone()
		if out.Header == nil {
			out.Header = make(http.Header, 2)
		}
		if hasDeadline {
			ms := c.now.Sub(dl) / -time.Millisecond
			if ms < 1 {
				ms = 1
			}
			out.Header[HeaderTimeout] = []string{strconv.FormatInt(int64(ms), 10)}
		}
		c.m.tracing.Inject(ctx, out.Header)
	}
	return out, nil
}

// hasTraceContext reports whether ctx carries anything to propagate: a
// span context or baggage. Without either, the headers need no copy.
func hasTraceContext(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0
}

// classify maps a transport error to its retry kind and layer. A layer of
// "" (kind ErrCanceled) means the caller canceled.
func (c *httpCall) classify(err error, actx context.Context) (resilience.ErrKind, Layer) {
	if cerr := c.ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return resilience.ErrTimeout, LayerTimeout
		}
		return resilience.ErrCanceled, ""
	}
	if actx.Err() != nil {
		return resilience.ErrTimeout, LayerTimeout
	}
	return classifyErr(err)
}

// meshMarker returns the layer of a response that the destination's mesh
// produced rather than its application: authz for a 403, timeout for a 504,
// marked so with the HeaderError header; "" for any other response. The
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
	case http.StatusGatewayTimeout:
		if resp.Header.Get(HeaderError) == string(LayerTimeout) {
			return LayerTimeout
		}
	}
	return ""
}

// remoteTimeout is the cause of a timeout the destination's mesh reported:
// the deadline propagated with the attempt passed there before its
// application wrote an answer. It says which deadline that was: the
// per_try_timeout when perTry, else the call's.
func (c *httpCall) remoteTimeout(perTry bool) error {
	which := "the caller's deadline"
	switch {
	case perTry:
		which = "per_try_timeout"
	case c.rt.eff.Timeout > 0 && !earlierDeadline(c.req.Context(), c.ctx):
		which = "the route's timeout"
	}
	return fmt.Errorf("%w: %s passed at the destination (its Handler's copy of the propagated deadline) before the application answered",
		context.DeadlineExceeded, which)
}

// earlierDeadline reports whether a has a deadline no later than b's.
func earlierDeadline(a, b context.Context) bool {
	da, ok := a.Deadline()
	if !ok {
		return false
	}
	db, ok := b.Deadline()
	return !ok || !da.After(db)
}

// denial reads the reason the destination's mesh gave for a denial from
// the 403 body (a line of text), and closes the body.
func denial(body io.ReadCloser, caller, service string) error {
	b, _ := io.ReadAll(io.LimitReader(body, 1<<10))
	_ = body.Close()
	reason := strings.TrimSpace(string(b))
	reason = strings.TrimSpace(peerText(strings.TrimPrefix(reason, "inmesh: authz: ")))
	if reason == "" {
		reason = fmt.Sprintf("%s denied caller %q", service, caller)
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
