package telemetry

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/resilience"
)

// gRPC instruments and attributes, after the OpenTelemetry semantic
// conventions for RPC: rpc.client.duration and rpc.server.duration
// are histograms in seconds, as HTTP's are (the conventions replaced the
// millisecond rpc.client.duration and rpc.server.duration with them), and a
// span is named "{rpc.service}/{rpc.method}".
const (
	UnitRPCDuration       = "s"
	DescRPCClientDuration = "Duration of outbound RPCs, retries included."
	DescRPCServerDuration = "Duration of inbound RPCs."

	AttrRPCSystem         = "rpc.system"           // always RPCSystemGRPC here
	AttrRPCService        = "rpc.service"          // the full service name, "grpc.health.v1.Health"
	AttrRPCMethod         = "rpc.method"           // the method name, "Check"
	AttrRPCGRPCStatusCode = "rpc.grpc.status_code" // the status code as an integer

	RPCSystemGRPC = "grpc"
)

// rpcDurationBuckets are the bucket boundaries, in seconds, of the RPC
// duration histograms: HTTP's, so that both protocols' latencies compare.
var rpcDurationBuckets = httpDurationBuckets

// rpcInstruments are the gRPC instruments of one mesh.
type rpcInstruments struct {
	client     metric.Float64Histogram
	server     metric.Float64Histogram
	clientOpts cowCache[RPCCall, []metric.RecordOption]
	serverOpts cowCache[RPCServerCall, []metric.RecordOption]
}

// newRPCInstruments creates the gRPC instruments from m. Errors are returned
// joined by New; the instruments are usable even then.
func newRPCInstruments(m metric.Meter) (*rpcInstruments, []error) {
	r := &rpcInstruments{
		clientOpts: cowCache[RPCCall, []metric.RecordOption]{max: maxCachedAttributeSets},
		serverOpts: cowCache[RPCServerCall, []metric.RecordOption]{max: maxCachedAttributeSets},
	}
	var errs []error
	var err error
	if r.client, err = m.Float64Histogram(MetricRPCClientDuration,
		metric.WithUnit(UnitRPCDuration),
		metric.WithDescription(DescRPCClientDuration),
		metric.WithExplicitBucketBoundaries(rpcDurationBuckets...)); err != nil {
		errs = append(errs, err)
	}
	if r.server, err = m.Float64Histogram(MetricRPCServerDuration,
		metric.WithUnit(UnitRPCDuration),
		metric.WithDescription(DescRPCServerDuration),
		metric.WithExplicitBucketBoundaries(rpcDurationBuckets...)); err != nil {
		errs = append(errs, err)
	}
	return r, errs
}

// RPCCall identifies the attributes of one logical gRPC client call. It is
// comparable and is the cache key of its attribute set.
type RPCCall struct {
	Service, Route, Subset string
	FullMethod             string              // "/grpc.health.v1.Health/Check"
	Code                   resilience.GRPCCode // the status code the caller got
	ErrorType              string              // "" on success; the failing mesh layer, or the code's name for a failed RPC
}

// RecordRPCClient records rpc.client.duration, in seconds, for one
// logical call (retries included), with the attributes rpc.system,
// rpc.service, rpc.method, rpc.grpc.status_code, server.address (the
// destination service) and, when set, inmesh.route, inmesh.subset and
// error.type.
//
// HOT: the attribute set of each distinct RPCCall is cached (bounded), so in
// steady state it takes no lock and allocates nothing.
func (in *Instruments) RecordRPCClient(ctx context.Context, elapsed time.Duration, c RPCCall) {
	if in == nil || in.rpc == nil {
		return
	}
	in.rpc.client.Record(ctx, elapsed.Seconds(), in.rpc.clientOpts.get(c, rpcCallOptions)...)
}

// RPCServerCall describes one RPC served behind the mesh's server
// interceptors. It is comparable and is the cache key of its attribute set.
type RPCServerCall struct {
	Service    string // this workload's service
	Caller     string // the calling service from its verified identity; "" when unknown
	FullMethod string
	Code       resilience.GRPCCode
	ErrorType  string // "" on success; "authz" for a denial; the code's name for a server error
}

// RecordRPCServer records rpc.server.duration, in seconds, for one RPC,
// with the attributes rpc.system, rpc.service, rpc.method,
// rpc.grpc.status_code, inmesh.service and, when set, inmesh.caller and
// error.type. HOT: cached attribute sets, as RecordRPCClient.
func (in *Instruments) RecordRPCServer(ctx context.Context, elapsed time.Duration, c RPCServerCall) {
	if in == nil || in.rpc == nil {
		return
	}
	in.rpc.server.Record(ctx, elapsed.Seconds(), in.rpc.serverOpts.get(c, rpcServerOptions)...)
}

func rpcCallOptions(c RPCCall) []metric.RecordOption {
	kvs := rpcAttributes(AttrServerAddress, c.Service, c.FullMethod, c.Code)
	kvs = appendNonEmpty(kvs, AttrRoute, c.Route)
	kvs = appendNonEmpty(kvs, AttrSubset, c.Subset)
	kvs = appendNonEmpty(kvs, AttrErrorType, c.ErrorType)
	return recordOptions(kvs)
}

func rpcServerOptions(c RPCServerCall) []metric.RecordOption {
	kvs := rpcAttributes(AttrService, c.Service, c.FullMethod, c.Code)
	kvs = appendNonEmpty(kvs, AttrCaller, c.Caller)
	kvs = appendNonEmpty(kvs, AttrErrorType, c.ErrorType)
	return recordOptions(kvs)
}

// rpcAttributes starts the attributes of an RPC's measurement: rpc.system,
// the service (serviceKey: server.address for the destination, inmesh.service
// on the server), rpc.service, rpc.method and rpc.grpc.status_code, with room
// for three more.
func rpcAttributes(serviceKey, service, fullMethod string, code resilience.GRPCCode) []attribute.KeyValue {
	svc, meth := SplitMethod(fullMethod)
	kvs := make([]attribute.KeyValue, 0, 8)
	return append(kvs,
		attribute.String(AttrRPCSystem, RPCSystemGRPC),
		attribute.String(serviceKey, service),
		attribute.String(AttrRPCService, svc),
		attribute.String(AttrRPCMethod, meth),
		attribute.Int(AttrRPCGRPCStatusCode, int(code)))
}

// SplitMethod splits a full gRPC method name, "/grpc.health.v1.Health/Check",
// into its service and method, "grpc.health.v1.Health" and "Check". A name
// without the second slash is all service.
func SplitMethod(fullMethod string) (service, method string) {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// StartRPCClientCall starts the one client span of a logical gRPC call, to
// be ended by EndRPCCall: kind client, named "{rpc.service}/{rpc.method}"
// ("grpc.health.v1.Health/Check"), with rpc.system, rpc.service,
// rpc.method, server.address and inmesh.route (when route is not empty) set
// at start so that samplers see them. Name and options are cached per
// (service, route, fullMethod).
func (t *Tracing) StartRPCClientCall(ctx context.Context, service, route, fullMethod string) (context.Context, trace.Span) {
	if t == nil || t.off(ctx) {
		return ctx, trace.SpanFromContext(context.Background()) // a no-op span
	}
	s := t.rpcStarts.get(spanKey{service, route, fullMethod}, rpcClientSpanStart)
	return t.tracer.Start(ctx, s.name, s.opts...)
}

func rpcClientSpanStart(k spanKey) spanStart {
	svc, meth := SplitMethod(k.method)
	kvs := make([]attribute.KeyValue, 0, 5)
	kvs = append(kvs,
		attribute.String(AttrRPCSystem, RPCSystemGRPC),
		attribute.String(AttrRPCService, svc),
		attribute.String(AttrRPCMethod, meth),
		attribute.String(AttrServerAddress, k.service))
	kvs = appendNonEmpty(kvs, AttrRoute, k.route)
	return spanStart{
		name: strings.TrimPrefix(k.method, "/"),
		opts: []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(kvs...),
		},
	}
}

// EndRPCCall records the outcome of a logical gRPC call on span and ends
// it, as EndRPCClientCall with only a layer and an error.
func EndRPCCall(span trace.Span, code resilience.GRPCCode, errorType string, err error) {
	EndRPCClientCall(span, code, CallEnd{ErrorType: errorType, Err: err})
}

// EndRPCClientCall records the outcome of a logical gRPC call on span and
// ends it: rpc.grpc.status_code always; the subset, attempts and policy
// version of e when set; status Error, with error.type, for every code but
// OK (e.ErrorType when set, else the code's name), as the conventions ask
// of client spans. e.StatusCode is not read. A nil span is ignored.
func EndRPCClientCall(span trace.Span, code resilience.GRPCCode, e CallEnd) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		errorType := e.ErrorType
		if errorType == "" && code != resilience.CodeOK {
			errorType = code.String()
		}
		buf := getEndAttrs()
		kvs := append(buf[:0], attribute.Int(AttrRPCGRPCStatusCode, int(code)))
		kvs = appendCallEnd(kvs, e)
		finish(span, kvs, errorType, e.Err)
		putEndAttrs(buf)
	}
	span.End()
}

// StartRPCServerCall starts the server span of one incoming RPC, as a child
// of the trace context the caller propagated in the incoming metadata, which
// md reads (the gRPC adapter's carrier over its metadata; nil: none): kind
// server, named "{rpc.service}/{rpc.method}", with rpc.system, rpc.service,
// rpc.method and inmesh.service.
func (t *Tracing) StartRPCServerCall(ctx context.Context, md propagation.TextMapCarrier, service, fullMethod string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	if md != nil {
		ctx = t.prop.Extract(ctx, md)
	}
	if t.off(ctx) {
		return ctx, trace.SpanFromContext(ctx)
	}
	svc, meth := SplitMethod(fullMethod)
	return t.tracer.Start(ctx, strings.TrimPrefix(fullMethod, "/"),
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String(AttrRPCSystem, RPCSystemGRPC),
			attribute.String(AttrRPCService, svc),
			attribute.String(AttrRPCMethod, meth),
			attribute.String(AttrService, service)))
}

// EndRPCServerCall sets the outcome of a server span and ends it, as
// EndRPCServerCallAs without the caller's SPIFFE ID.
func EndRPCServerCall(span trace.Span, code resilience.GRPCCode, caller, errorType string) {
	EndRPCServerCallAs(span, code, caller, "", errorType)
}

// EndRPCServerCallAs sets the outcome of a server span and ends it:
// rpc.grpc.status_code, the caller's service and SPIFFE ID (callerID) when
// known, and status Error for a denial (errorType set) and for the codes
// the conventions count as server errors (Unknown, DeadlineExceeded,
// Unimplemented, Internal, Unavailable, DataLoss); other codes are the
// caller's errors.
func EndRPCServerCallAs(span trace.Span, code resilience.GRPCCode, caller, callerID, errorType string) {
	if span.IsRecording() {
		if errorType == "" && IsRPCServerError(code) {
			errorType = code.String()
		}
		var buf [4]attribute.KeyValue
		kvs := append(buf[:0], attribute.Int(AttrRPCGRPCStatusCode, int(code)))
		kvs = appendNonEmpty(kvs, AttrCaller, caller)
		kvs = appendNonEmpty(kvs, AttrCallerIdentity, callerID)
		finish(span, kvs, errorType, nil)
	}
	span.End()
}

// IsRPCServerError reports whether code is a server error under the
// semantic conventions: Unknown, DeadlineExceeded, Unimplemented, Internal,
// Unavailable or DataLoss.
func IsRPCServerError(code resilience.GRPCCode) bool {
	switch code {
	case resilience.CodeUnknown, resilience.CodeDeadlineExceeded, resilience.CodeUnimplemented,
		resilience.CodeInternal, resilience.CodeUnavailable, resilience.CodeDataLoss:
		return true
	}
	return false
}

// OutgoingMetadata returns the trace context and baggage of ctx as the
// propagator writes them, as metadata pairs (lower-case key, value, key,
// value, ...) for the gRPC adapter to append to the outgoing metadata. It
// returns nil, without allocating, when there is nothing to carry (no valid
// span context and no baggage).
func (t *Tracing) OutgoingMetadata(ctx context.Context) []string {
	if t == nil || !HasTraceContext(ctx) {
		return nil
	}
	var c outgoingCarrier
	t.prop.Inject(ctx, &c)
	return c.kv
}

// outgoingCarrier collects what a propagator injects, as metadata pairs.
type outgoingCarrier struct{ kv []string }

var _ propagation.TextMapCarrier = (*outgoingCarrier)(nil)

func (c *outgoingCarrier) Get(key string) string {
	key = strings.ToLower(key)
	for i := 0; i+1 < len(c.kv); i += 2 {
		if c.kv[i] == key {
			return c.kv[i+1]
		}
	}
	return ""
}

func (c *outgoingCarrier) Set(key, value string) {
	c.kv = append(c.kv, strings.ToLower(key), value)
}

func (c *outgoingCarrier) Keys() []string {
	keys := make([]string, 0, len(c.kv)/2)
	for i := 0; i < len(c.kv); i += 2 {
		keys = append(keys, c.kv[i])
	}
	return keys
}

// HasTraceContext reports whether ctx carries anything to propagate: a
// valid span context or baggage.
func HasTraceContext(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0
}
