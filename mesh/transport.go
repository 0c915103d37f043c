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
	// than its application, for example "authz" on a denial.
	HeaderError = "Inmesh-Error"
)

// transport is the http.RoundTripper of the mesh.
type transport struct {
	m    *Mesh
	next http.RoundTripper // mesh traffic
	pass http.RoundTripper // hosts that are not services of the policy

	// secured holds, per destination service, a clone of next that speaks
	// mTLS to that service: copy-on-write, read without lock.
	secured atomic.Pointer[map[string]*http.Transport]
	mu      sync.Mutex // serializes additions to secured
}

var _ http.RoundTripper = (*transport)(nil)

// RoundTripper wraps next with the mesh: a request whose URL host names a
// service of the policy is routed, split, timed, retried, guarded by the
// breaker and sent to an endpoint the mesh picks; any other request goes to
// next untouched. A nil next means the mesh's own transport (the settings of
// http.DefaultTransport, more idle connections per endpoint) for mesh traffic
// and http.DefaultTransport for the rest.
//
// The returned RoundTripper is safe for concurrent use and does not modify
// the request it is given.
func (m *Mesh) RoundTripper(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		return &transport{m: m, next: m.transport, pass: http.DefaultTransport}
	}
	return &transport{m: m, next: next, pass: next}
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		return nil, errors.New("mesh: request has no URL")
	}
	st := t.m.state.Load()
	d := st.services[serviceOf(req.URL.Host)]
	if d == nil {
		return t.pass.RoundTrip(req)
	}
	if t.m.consul != nil && t.m.ensureWatched(req.Context(), d.name) {
		// The first call to a destination starts watching its endpoints.
		st = t.m.state.Load()
		if d = st.services[d.name]; d == nil {
			return t.pass.RoundTrip(req)
		}
	}
	c := httpCall{call: call{m: t.m, st: st, d: d}, t: t, req: req}
	return c.run()
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
	t.m.track(tr)
	return tr, nil
}

// serviceOf returns the host part of a URL host, without port.
func serviceOf(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i]
	}
	return host
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

	var kind resilience.ErrKind
	var layer Layer
	o := resilience.Outcome{}
	if err != nil {
		kind, layer = c.classify(err, actx)
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
	if resp.StatusCode == http.StatusForbidden && resp.Header.Get(HeaderError) == string(LayerAuthz) {
		if acancel != nil {
			acancel()
		}
		return nil, resilience.ErrNone, c.fail(LayerAuthz, denial(resp.Body, c.m.cfg.service, c.d.name))
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

// denial reads the reason the destination's mesh gave for a denial from
// the 403 body (a line of text), and closes the body.
func denial(body io.ReadCloser, caller, service string) error {
	b, _ := io.ReadAll(io.LimitReader(body, 1<<10))
	_ = body.Close()
	reason := strings.TrimSpace(string(b))
	reason = strings.TrimPrefix(reason, "inmesh: authz: ")
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
