package mesh

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/identity"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/internal/meshlink"
	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/telemetry"
)

// selfAuthz is how this workload authorizes its callers, compiled from its
// own service's authorization block.
type selfAuthz struct {
	az *identity.Authorizer // nil: no authorization block, every caller is served
	// missing is set when the policy has no entry for this service: no rules
	// are loaded, so every caller is denied.
	missing bool
}

func compileSelfAuthz(svc *policy.ResolvedService) selfAuthz {
	switch {
	case svc == nil:
		return selfAuthz{missing: true}
	case !svc.HasAuthorization:
		return selfAuthz{}
	default:
		return selfAuthz{az: identity.NewAuthorizer(svc.Authorization)}
	}
}

// Handler wraps h with the server side of the mesh: it identifies the caller
// from its verified client certificate (serve with ServerTLSConfig),
// authorizes it against this service's authorization rules, bounds the
// request by the deadline the caller's mesh propagated, and records the
// server span and http.server.request.duration.
//
// A denied caller never reaches h: it gets 403 with the header
// Inmesh-Error: authz, which the caller's mesh turns into a CallError of
// layer authz. Past its authorization, a call is held to this service's
// rate_limit block (per caller: the service of its verified certificate;
// the callers without one share one bucket): a refused call never reaches
// h either, and gets 429 with the header Inmesh-Error: rate_limit and a
// Retry-After (whole seconds, rounded up), which the caller's mesh turns
// into a CallError of layer rate_limit. Authorization denies on error: an unverifiable caller, or no
// policy loaded for this service. A service whose policy has no
// authorization block serves every caller that passed the TLS checks.
// Under the block's mode audit, every request reaches h: a denial is only
// counted and logged (see the gRPC server options, which decide alike).
//
// The propagated deadline (the Inmesh-Timeout-Ms header: a positive number
// of milliseconds up to a day; other values are ignored) bounds the
// request's context. When it passes before h has written its headers and h
// returns without writing any, the caller gets 504 with the header
// Inmesh-Error: timeout, which the caller's mesh turns into a CallError of
// layer timeout, instead of an empty 200.
func (m *Mesh) Handler(h http.Handler) http.Handler {
	return &handler{m: m, next: h}
}

type handler struct {
	m    *Mesh
	next http.Handler
}

var _ http.Handler = (*handler)(nil)

func (s *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := s.m
	start := m.clock.Now()
	self := m.cfg.service
	ctx, span := m.tracing.StartServerCall(r.Context(), r.Header, self, r.Method)

	if m.cfg.policyVersionHeader {
		m.setPolicyVersion(w.Header())
	}
	caller, callerErr := callerOf(r)
	callerID := meshlink.CallerIDOf(span, r.TLS)
	allow, reason := m.authorize(ctx, caller, callerErr, r)
	call := telemetry.HTTPServerCall{Service: self, Caller: caller, Method: r.Method}
	if !allow {
		w.Header().Set(HeaderError, string(LayerAuthz))
		http.Error(w, fmt.Sprintf("mesh: authz: %s denied caller %q: %s", self, caller, reason), http.StatusForbidden)
		call.StatusCode, call.ErrorType = http.StatusForbidden, string(LayerAuthz)
		m.instr.RecordHTTPServer(ctx, clock.Since(m.clock, start), call)
		telemetry.EndServerCallAs(span, http.StatusForbidden, caller, callerID, call.ErrorType)
		m.log.Debug("caller denied", "caller", caller, "method", r.Method, "path", r.URL.Path, "reason", reason)
		return
	}
	if wait, limit, limited := m.admit(ctx, caller); limited {
		m.refuse(ctx, w, span, start, call, caller, callerID, wait, limit)
		return
	}

	// One allocation holds what the request needs beyond its own: the
	// writer that records the status, the propagated deadline and the
	// request that carries it.
	sc := &serverCall{sw: statusWriter{ResponseWriter: w}}
	sw := &sc.sw
	bounded := false
	if d, ok := parseTimeout(r.Header[HeaderTimeout]); ok {
		// The deadline is lazy: it arms a timer only when the
		// application waits for it.
		now := start
		if _, real := m.clock.(clock.System); !real {
			now = time.Now() // contexts run on the real time
		}
		sc.dl.Init(ctx, now.Add(d))
		defer sc.dl.Cancel()
		ctx = &sc.dl
		bounded = true
	}
	if ctx != r.Context() {
		// WithContext, inlined, builds the copy on the stack; sc keeps it.
		sc.req = *r.WithContext(ctx)
		r = &sc.req
	}
	s.next.ServeHTTP(sw, r)

	if bounded && sw.code == 0 && ctx.Err() == context.DeadlineExceeded {
		// The propagated deadline passed and the application wrote
		// nothing: an empty 200 would tell the caller it succeeded. (A
		// caller that went away cancels ctx instead: nothing to answer.)
		sw.Header().Set(HeaderError, string(LayerTimeout))
		http.Error(sw, "mesh: timeout: the propagated deadline passed before "+self+" answered", http.StatusGatewayTimeout)
		call.ErrorType = string(LayerTimeout)
	}
	call.StatusCode = sw.status()
	if call.StatusCode >= 500 && call.ErrorType == "" {
		call.ErrorType = strconv.Itoa(call.StatusCode)
	}
	if m.instr.HTTPServerEnabled(ctx) {
		m.instr.RecordHTTPServer(ctx, clock.Since(m.clock, start), call)
	}
	telemetry.EndServerCallAs(span, call.StatusCode, caller, callerID, call.ErrorType)
}

// refuse answers a call that this service's rate limit refused: 429
// marked rate_limit, with the Retry-After of wait (whole seconds, rounded
// up) unless the caller's bucket never fills; the cause names the limit.
func (m *Mesh) refuse(ctx context.Context, w http.ResponseWriter, span trace.Span, start time.Time, call telemetry.HTTPServerCall,
	caller, callerID string, wait time.Duration, limit string) {
	w.Header().Set(HeaderError, string(LayerRateLimit))
	msg := fmt.Sprintf("mesh: rate_limit: %s refused caller %q: %s", m.cfg.service, caller, limit)
	if s := retryAfterSeconds(wait); s > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(s, 10))
		msg += fmt.Sprintf("; retry after %ds", s)
	}
	http.Error(w, msg, http.StatusTooManyRequests)
	call.StatusCode, call.ErrorType = http.StatusTooManyRequests, string(LayerRateLimit)
	m.instr.RecordHTTPServer(ctx, clock.Since(m.clock, start), call)
	telemetry.EndServerCallAs(span, http.StatusTooManyRequests, caller, callerID, call.ErrorType)
}

// HeaderPolicyVersion is the response header in which Handler names the
// version of the policy in force, under WithPolicyVersionHeader.
const HeaderPolicyVersion = "Inmesh-Policy-Version"

// setPolicyVersion sets HeaderPolicyVersion in h to the version of the
// policy in force, unless none is.
func (m *Mesh) setPolicyVersion(h http.Header) {
	if v := m.PolicyVersion(); v != "" {
		h[HeaderPolicyVersion] = []string{v}
	}
}

// serverCall is the storage of one request through Handler.
type serverCall struct {
	sw  statusWriter
	dl  core.Deadline
	req http.Request
}

// maxTimeoutMs is the largest HeaderTimeout value Handler honours: a day.
const maxTimeoutMs = 24 * 60 * 60 * 1000

// parseTimeout reads the HeaderTimeout values of a request: one positive
// decimal integer of milliseconds, digits only (no sign, space or
// fraction), at most a day. Anything else bounds nothing: a value this
// mesh's callers never send must not start the application on a deadline
// that has already passed, or on one that overflows.
func parseTimeout(vs []string) (time.Duration, bool) {
	if len(vs) != 1 {
		return 0, false
	}
	v := vs[0]
	if len(v) == 0 || len(v) > len("86400000") {
		return 0, false
	}
	ms := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		ms = ms*10 + int(c-'0')
	}
	if ms <= 0 || ms > maxTimeoutMs {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// callerOf returns the service of the verified client certificate, "" for
// a request without one.
func callerOf(r *http.Request) (string, error) {
	return meshlink.CallerOf(r.TLS)
}

// authorize is authorizeCall for request r.
func (m *Mesh) authorize(ctx context.Context, caller string, callerErr error, r *http.Request) (bool, string) {
	return m.authorizeCall(ctx, caller, callerErr, r.Method, wirePath(r), RequestHeader{src: r, get: requestHeader})
}

// requestHeader is the RequestHeader reader of an *http.Request.
func requestHeader(req any, name string) []string {
	r := req.(*http.Request)
	// Go keeps the Host header in r.Host, not in r.Header.
	if strings.EqualFold(name, "host") || name == ":authority" {
		return []string{r.Host}
	}
	return r.Header.Values(name)
}

// RequestHeader reads the header values of the request being authorized
// (HTTP headers, gRPC metadata), for an Authorization. It is a value, not a
// closure, so that handing it to the control plane's Authorize allocates
// nothing. The zero RequestHeader has no values.
type RequestHeader struct {
	src any                                 // the request: *http.Request, or an RPC's context
	get func(src any, name string) []string // a function of the package: no closure to allocate
}

// Values returns every value of the header name, in any case; nil when the
// request has none.
func (h RequestHeader) Values(name string) []string {
	if h.get == nil {
		return nil
	}
	return h.get(h.src, name)
}

// wirePath is the path of r as its client spelled it, percent-escapes kept:
// authorization must see "%2F" and "%2E", which r.URL.Path has decoded.
func wirePath(r *http.Request) string {
	if r.URL.RawPath != "" {
		return r.URL.RawPath
	}
	// RawPath is empty when the client's spelling is the default escaping
	// of Path, which EscapedPath returns (without allocating when there is
	// nothing to escape).
	return r.URL.EscapedPath()
}

// authorizeCall decides whether caller may call method on path of this
// service (for gRPC: POST and the full method), against the control
// plane's authorization or the compiled rules of the state in force,
// counts the decision in inmesh.authz.decisions, and reports whether the
// call goes through, with the reason when it does not. path is as the
// client spelled it (see wirePath); header gives every value of a request
// header (HTTP headers, gRPC metadata). It denies on every error.
//
// Under the authorization block's mode audit, the decision is made and
// counted as under enforce, a denial is logged (see auditDenial) and the
// call goes through. An unverifiable caller, or no policy loaded for this
// service, is no decision of the block: it is denied in either mode.
func (m *Mesh) authorizeCall(ctx context.Context, caller string, callerErr error, method, path string, header RequestHeader) (bool, string) {
	self := m.cfg.service
	if callerErr != nil {
		m.instr.RecordAuthzDecision(ctx, telemetry.AuthzDecision{Service: self, Caller: caller})
		return false, "caller identity: " + callerErr.Error()
	}
	if az := m.authorizeCaller; az != nil {
		// The control plane decides (with Consul, service-intentions), per
		// request, so a new deny applies to open connections too.
		d := az(caller, method, path, header)
		m.instr.RecordAuthzDecision(ctx, telemetry.AuthzDecision{Service: self, Caller: caller, Allow: d.Allow, Rule: d.Name})
		return d.Allow, d.Reason
	}
	st := m.state.Load()
	sa := st.self
	switch {
	case sa.missing:
		m.instr.RecordAuthzDecision(ctx, telemetry.AuthzDecision{Service: self, Caller: caller})
		return false, fmt.Sprintf("no policy for service %q is loaded", self)
	case sa.az == nil:
		m.instr.RecordAuthzDecision(ctx, telemetry.AuthzDecision{Service: self, Caller: caller, Allow: true})
		return true, ""
	}
	d := sa.az.Authorize(caller, method, path)
	audit := sa.az.Audit()
	m.instr.RecordAuthzDecision(ctx, telemetry.AuthzDecision{Service: self, Caller: caller, Allow: d.Allow, Audit: audit, Rule: d.Name})
	if d.Allow || !audit {
		return d.Allow, d.Reason
	}
	m.auditDenial(caller, method, path, d, st.policy.Version)
	return true, ""
}

// statusWriter records the status code the application writes.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Flush lets handlers stream through the wrapper.
func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
