package telemetry

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// HTTPServerCall describes one request served by the mesh's HTTP middleware.
type HTTPServerCall struct {
	Service    string // this workload's service
	Caller     string // the calling service from its verified identity; "" when unknown
	Method     string
	StatusCode int
	ErrorType  string // "" on success; "authz" for a denial; the status code as text for a 5xx
}

// RecordHTTPServer records http.server.request.duration (seconds) for one
// request. HOT: attribute sets are cached as for RecordHTTPClient.
func (in *Instruments) RecordHTTPServer(ctx context.Context, elapsed time.Duration, c HTTPServerCall) {
	if !in.HTTPServerEnabled(ctx) {
		return
	}
	c.Method = normalizeMethod(c.Method)
	in.httpServer.Record(ctx, elapsed.Seconds(), in.serverOpts.get(c, httpServerOptions)...)
}

func httpServerOptions(c HTTPServerCall) []metric.RecordOption {
	kvs := make([]attribute.KeyValue, 0, 5)
	kvs = append(kvs,
		attribute.String(AttrService, c.Service),
		attribute.String(AttrHTTPRequestMethod, c.Method),
		attribute.Int(AttrHTTPResponseStatusCode, c.StatusCode))
	kvs = appendNonEmpty(kvs, AttrCaller, c.Caller)
	kvs = appendNonEmpty(kvs, AttrErrorType, c.ErrorType)
	return recordOptions(kvs)
}

// AuthzDecision describes one authorization decision on an incoming
// request. It is comparable and is the cache key of its attribute set.
type AuthzDecision struct {
	Service string // this workload's service
	Caller  string // the calling service from its verified identity; "" when unknown
	Allow   bool   // the decision, as under enforce
	Audit   bool   // mode audit: the request went through whatever the decision
	Rule    string // the rule that decided: "rules[3]", "deny[0]", "default"; "" when none is named
}

// Values of AttrAuthzDecision and AttrAuthzMode.
const (
	AuthzAllow   = "allow"
	AuthzDeny    = "deny"
	AuthzEnforce = "enforce"
	AuthzAudit   = "audit"
)

// RecordAuthz counts one authorization decision of service on a call from
// caller, enforced, naming no rule. HOT: cached attribute sets.
func (in *Instruments) RecordAuthz(ctx context.Context, service, caller string, allow bool) {
	in.RecordAuthzDecision(ctx, AuthzDecision{Service: service, Caller: caller, Allow: allow})
}

// RecordAuthzDecision counts one authorization decision in
// inmesh.authz.decisions, with its decision (allow, deny), mode (enforce,
// audit) and, when d names one, rule. HOT: cached attribute sets.
func (in *Instruments) RecordAuthzDecision(ctx context.Context, d AuthzDecision) {
	if in == nil {
		return
	}
	in.authz.Add(ctx, 1, in.authzOpts.get(d, authzOptions)...)
}

func authzOptions(d AuthzDecision) []metric.AddOption {
	decision, mode := AuthzDeny, AuthzEnforce
	if d.Allow {
		decision = AuthzAllow
	}
	if d.Audit {
		mode = AuthzAudit
	}
	kvs := make([]attribute.KeyValue, 0, 5)
	kvs = append(kvs,
		attribute.String(AttrService, d.Service),
		attribute.String(AttrCaller, d.Caller),
		attribute.String(AttrAuthzDecision, decision),
		attribute.String(AttrAuthzMode, mode))
	kvs = appendNonEmpty(kvs, AttrAuthzRule, d.Rule)
	set := attribute.NewSet(kvs...)
	return []metric.AddOption{metric.WithAttributeSet(set)}
}

// CertificateExpiry reports this workload's certificate: its SPIFFE ID and
// when it expires; ok is false when there is none.
type CertificateExpiry func() (id string, notAfter time.Time, ok bool)

// SetCertificateExpiry makes inmesh.certificate.expiry observe fn (nil
// stops observing). now gives the time the seconds are counted from.
func (in *Instruments) SetCertificateExpiry(fn CertificateExpiry, now func() time.Time) {
	if in == nil {
		return
	}
	if fn == nil {
		in.cert.Store(nil)
		return
	}
	in.cert.Store(&certSource{expiry: fn, now: now})
}

type certSource struct {
	expiry CertificateExpiry
	now    func() time.Time
}

// observeCertificate reports the seconds left on this workload's certificate.
func (in *Instruments) observeCertificate(_ context.Context, o metric.Observer) error {
	src := in.cert.Load()
	if src == nil {
		return nil
	}
	id, notAfter, ok := src.expiry()
	if !ok {
		return nil
	}
	o.ObserveFloat64(in.certExpiry, notAfter.Sub(src.now()).Seconds(),
		metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrIdentity, id))))
	return nil
}

// StartServerCall starts the server span of one incoming request, as a child
// of the trace context the caller propagated in h: kind server, named
// "{method} {service}", with the caller's service when known.
func (t *Tracing) StartServerCall(ctx context.Context, h http.Header, service, method string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = t.prop.Extract(ctx, headerCarrier(h))
	if t.off(ctx) {
		return ctx, trace.SpanFromContext(ctx)
	}
	method = normalizeMethod(method)
	prefix := method
	if prefix == methodOther {
		prefix = "HTTP"
	}
	return t.tracer.Start(ctx, prefix+" "+service,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String(AttrService, service),
			attribute.String(AttrHTTPRequestMethod, method)))
}

// EndServerCall sets the outcome of a server span and ends it, as
// EndServerCallAs without the caller's SPIFFE ID.
func EndServerCall(span trace.Span, statusCode int, caller, errorType string) {
	EndServerCallAs(span, statusCode, caller, "", errorType)
}

// EndServerCallAs sets the outcome of a server span and ends it:
// http.response.status_code, the caller's service and SPIFFE ID (callerID)
// when known, and status Error only for 5xx answers and denials (errorType
// set; a 4xx of the application is the caller's error, per the semantic
// conventions for server spans).
func EndServerCallAs(span trace.Span, statusCode int, caller, callerID, errorType string) {
	if span.IsRecording() {
		buf := getEndAttrs()
		kvs := append(buf[:0], attribute.Int(AttrHTTPResponseStatusCode, statusCode))
		kvs = appendNonEmpty(kvs, AttrCaller, caller)
		kvs = appendNonEmpty(kvs, AttrCallerIdentity, callerID)
		finish(span, kvs, errorType, nil)
		putEndAttrs(buf)
	}
	span.End()
}
