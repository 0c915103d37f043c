package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instruments holds the metric instruments of one mesh. It is safe for
// concurrent use. A nil *Instruments records nothing.
type Instruments struct {
	httpClient    metric.Float64Histogram
	attempts      metric.Int64ObservableCounter
	budget        metric.Int64Counter
	breaker       metric.Int64Counter
	ejections     metric.Int64Counter
	policyUpdates metric.Int64Counter
	faults        metric.Int64Counter // inmesh.faults.injected (fault.go)

	httpOpts cowCache[HTTPCall, []metric.RecordOption]

	httpServer metric.Float64Histogram
	serverOpts cowCache[HTTPServerCall, []metric.RecordOption]
	authz      metric.Int64Counter
	authzOpts  cowCache[AuthzDecision, []metric.AddOption]
	certExpiry metric.Float64ObservableGauge
	staleness  metric.Float64ObservableGauge
	lastStale  atomic.Int64 // nanoseconds; -1 until a control plane reports
	cert       atomic.Pointer[certSource]

	rpc *rpcInstruments // rpc.client.duration and rpc.server.duration (rpc.go)

	rateLimit        *rateLimitInstruments // inmesh.rate_limit.decisions (ratelimit.go)
	hedgeInstruments                       // inmesh.hedges (hedge.go)
	overload         *overloadInstruments  // inmesh.concurrency.limit and inmesh.overload.shed (overload.go)
	breakerState     breakerStateGauge     // inmesh.circuit_breaker.state (breaker.go)

	// counters are the attempt counters handed out by AttemptCounter,
	// observed at collection time. Guarded by mu; the request path only
	// touches a *Counter.
	mu            sync.Mutex
	counters      map[routeKey]*Counter
	registrations []metric.Registration
}

// Counter is a monotonic count kept by the request path and read by an
// observable instrument when metrics are collected, so that counting costs
// one atomic add. A nil *Counter counts nothing. Safe for concurrent use.
type Counter struct {
	n    atomic.Int64
	key  routeKey
	opts []metric.ObserveOption // its attributes, made at the first collection (under Instruments.mu)
}

// Add adds n.
func (c *Counter) Add(n int64) {
	if c != nil {
		c.n.Add(n)
	}
}

// Load returns the count so far (0 for a nil Counter), for diagnostics.
func (c *Counter) Load() int64 {
	if c == nil {
		return 0
	}
	return c.n.Load()
}

// HTTPCall identifies the attributes of one logical HTTP client call. It is
// comparable and is the cache key of its attribute set.
type HTTPCall struct {
	Service, Route, Subset, Method string
	StatusCode                     int    // 0 when no response
	ErrorType                      string // "" on success; the layer ("timeout", "connect", ...) or the status code as text ("503") for a 5xx answer
}

// routeKey is the cache key of the per-route instruments.
type routeKey struct{ service, route string }

// New creates the instruments of one mesh from mp; a nil mp means
// otel.GetMeterProvider(), whose delegate follows a provider installed later.
// An error from an instrument is returned joined with the others; the
// Instruments are usable even then (the OTel API returns working or no-op
// instruments alongside its errors).
func New(mp metric.MeterProvider) (*Instruments, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	in := &Instruments{
		httpOpts:   cowCache[HTTPCall, []metric.RecordOption]{max: maxCachedAttributeSets},
		serverOpts: cowCache[HTTPServerCall, []metric.RecordOption]{max: maxCachedAttributeSets},
		authzOpts:  cowCache[AuthzDecision, []metric.AddOption]{max: maxCachedAttributeSets},
		counters:   map[routeKey]*Counter{},
	}
	in.lastStale.Store(-1)
	var errs []error
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	in.httpClient, err = m.Float64Histogram(MetricHTTPClientDuration,
		metric.WithUnit(UnitHTTPClientDuration),
		metric.WithDescription(DescHTTPClientDuration),
		metric.WithExplicitBucketBoundaries(httpDurationBuckets...))
	collect(err)
	in.attempts, err = m.Int64ObservableCounter(MetricClientAttempts,
		metric.WithUnit(UnitClientAttempts),
		metric.WithDescription(DescClientAttempts))
	collect(err)
	if err == nil {
		reg, err := m.RegisterCallback(in.observeAttempts, in.attempts)
		collect(err)
		in.registrations = append(in.registrations, reg)
	}
	in.httpServer, err = m.Float64Histogram(MetricHTTPServerDuration,
		metric.WithUnit(UnitHTTPServerDuration),
		metric.WithDescription(DescHTTPServerDuration),
		metric.WithExplicitBucketBoundaries(httpDurationBuckets...))
	collect(err)
	in.authz, err = m.Int64Counter(MetricAuthzDecisions,
		metric.WithUnit(UnitAuthzDecisions), metric.WithDescription(DescAuthzDecisions))
	collect(err)
	in.certExpiry, err = m.Float64ObservableGauge(MetricCertificateExpiry,
		metric.WithUnit(UnitCertificateExpiry), metric.WithDescription(DescCertificateExpiry))
	collect(err)
	if err == nil {
		reg, err := m.RegisterCallback(in.observeCertificate, in.certExpiry)
		collect(err)
		in.registrations = append(in.registrations, reg)
	}
	in.staleness, err = m.Float64ObservableGauge(MetricPolicyStaleness,
		metric.WithUnit(UnitPolicyStaleness), metric.WithDescription(DescPolicyStaleness))
	collect(err)
	if err == nil {
		reg, err := m.RegisterCallback(in.observeStaleness, in.staleness)
		collect(err)
		in.registrations = append(in.registrations, reg)
	}
	in.budget, err = m.Int64Counter(MetricBudgetExhausted,
		metric.WithUnit(UnitBudgetExhausted), metric.WithDescription(DescBudgetExhausted))
	collect(err)
	in.breaker, err = m.Int64Counter(MetricBreakerTransitions,
		metric.WithUnit(UnitBreakerTransitions), metric.WithDescription(DescBreakerTransitions))
	collect(err)
	in.ejections, err = m.Int64Counter(MetricOutlierEjections,
		metric.WithUnit(UnitOutlierEjections), metric.WithDescription(DescOutlierEjections))
	collect(err)
	in.policyUpdates, err = m.Int64Counter(MetricPolicyUpdates,
		metric.WithUnit(UnitPolicyUpdates), metric.WithDescription(DescPolicyUpdates))
	collect(err)
	in.faults, err = newFaultCounter(m)
	collect(err)
	collect(in.hedgeInstruments.init(m))
	errs = append(errs, in.initOverload(m)...)
	var rpcErrs []error
	in.rpc, rpcErrs = newRPCInstruments(m)
	errs = append(errs, rpcErrs...)
	in.rateLimit, err = newRateLimitInstruments(m)
	collect(err)
	errs = append(errs, in.initBreakerState(m)...)
	if len(errs) > 0 {
		return in, fmt.Errorf("telemetry: creating instruments: %w", errors.Join(errs...))
	}
	return in, nil
}

// RecordHTTPClient records http.client.request.duration, in seconds, for one
// logical call (retries included), with server.address (the destination
// service), http.request.method, http.route and inmesh.route (the route's
// name), inmesh.subset, http.response.status_code and error.type. Empty Route, Subset and ErrorType and a
// zero StatusCode are left out of the attributes; a method outside the known
// set is recorded as "_OTHER".
//
// HOT: the attribute set of each distinct HTTPCall is cached (bounded), so in
// steady state it takes no lock and allocates nothing.
func (in *Instruments) RecordHTTPClient(ctx context.Context, elapsed time.Duration, c HTTPCall) {
	if !in.HTTPClientEnabled(ctx) {
		return
	}
	c.Method = normalizeMethod(c.Method)
	in.httpClient.Record(ctx, elapsed.Seconds(), in.httpOpts.get(c, httpCallOptions)...)
}

// HTTPClientEnabled reports whether RecordHTTPClient would record anything
// for ctx (false for no-op providers): a caller can then skip measuring
// the call's duration.
func (in *Instruments) HTTPClientEnabled(ctx context.Context) bool {
	return in != nil && in.httpClient.Enabled(ctx)
}

// HTTPServerEnabled reports whether RecordHTTPServer would record anything
// for ctx (false for no-op providers).
func (in *Instruments) HTTPServerEnabled(ctx context.Context) bool {
	return in != nil && in.httpServer.Enabled(ctx)
}

// AttemptCounter returns the counter of attempts toward service on route,
// the same one for the same pair, observed as inmesh.client.attempts
// (attributes server.address and inmesh.route). Call it when routes are
// compiled, not per request; the request path then only adds to it.
func (in *Instruments) AttemptCounter(service, route string) *Counter {
	if in == nil {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	k := routeKey{service, route}
	c, ok := in.counters[k]
	if !ok {
		c = &Counter{key: k}
		in.counters[k] = c
	}
	return c
}

// observeAttempts reports every attempt counter.
func (in *Instruments) observeAttempts(_ context.Context, o metric.Observer) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, c := range in.counters {
		if c.opts == nil {
			// Made when first observed, not when compiled: a mesh of many
			// destinations, most never called or never collected, holds
			// no attribute set for them.
			c.opts = []metric.ObserveOption{metric.WithAttributeSet(routeSet(c.key))}
		}
		o.ObserveInt64(in.attempts, c.n.Load(), c.opts...)
	}
	return nil
}

// Close unregisters the instruments' callbacks. The counters keep counting
// but are no longer observed.
func (in *Instruments) Close() error {
	if in == nil {
		return nil
	}
	var errs []error
	for _, r := range in.registrations {
		if r != nil {
			errs = append(errs, r.Unregister())
		}
	}
	return errors.Join(errs...)
}

// RecordBudgetExhausted counts one retry refused by the retry budget of service.
func (in *Instruments) RecordBudgetExhausted(ctx context.Context, service string) {
	if in == nil {
		return
	}
	add(ctx, in.budget, attribute.String(AttrServerAddress, service))
}

// RecordBreakerTransition counts one state change of the circuit breaker of
// service, from and to being "closed", "open" or "half-open".
func (in *Instruments) RecordBreakerTransition(ctx context.Context, service, from, to string) {
	if in == nil {
		return
	}
	add(ctx, in.breaker,
		attribute.String(AttrServerAddress, service),
		attribute.String(AttrBreakerFrom, from),
		attribute.String(AttrBreakerTo, to))
}

// RecordEjection counts one ejection of endpoint (host:port) of service by
// outlier detection.
func (in *Instruments) RecordEjection(ctx context.Context, service, endpoint string) {
	if in == nil {
		return
	}
	add(ctx, in.ejections,
		attribute.String(AttrServerAddress, service),
		attribute.String(AttrEndpoint, endpoint))
}

// RecordPolicyUpdate counts one policy document from source, result being
// ResultApplied or ResultRejected.
func (in *Instruments) RecordPolicyUpdate(ctx context.Context, result, source string) {
	if in == nil {
		return
	}
	add(ctx, in.policyUpdates,
		attribute.String(AttrPolicyResult, result),
		attribute.String(AttrPolicySource, source))
}

// add counts one event on a rare-event counter; its attribute set is built
// per call, since these events are not on the request path.
func add(ctx context.Context, c metric.Int64Counter, kvs ...attribute.KeyValue) {
	c.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(kvs...)))
}

// httpCallOptions builds the record options of c; c.Method is normalized.
func httpCallOptions(c HTTPCall) []metric.RecordOption {
	kvs := make([]attribute.KeyValue, 0, 7)
	kvs = append(kvs,
		attribute.String(AttrServerAddress, c.Service),
		attribute.String(AttrHTTPRequestMethod, c.Method))
	kvs = appendNonEmpty(kvs, AttrRoute, c.Route)
	kvs = appendNonEmpty(kvs, AttrHTTPRoute, c.Route)
	kvs = appendNonEmpty(kvs, AttrSubset, c.Subset)
	if c.StatusCode != 0 {
		kvs = append(kvs, attribute.Int(AttrHTTPResponseStatusCode, c.StatusCode))
	}
	kvs = appendNonEmpty(kvs, AttrErrorType, c.ErrorType)
	return recordOptions(kvs)
}

// routeSet is the attribute set of a service and route.
func routeSet(k routeKey) attribute.Set {
	kvs := make([]attribute.KeyValue, 0, 2)
	kvs = append(kvs, attribute.String(AttrServerAddress, k.service))
	kvs = appendNonEmpty(kvs, AttrRoute, k.route)
	return attribute.NewSet(kvs...)
}

// recordOptions wraps kvs as a ready-to-pass option slice. A slice, not a
// single option, is cached: passing one option to a variadic interface
// method would allocate its backing array on every call.
func recordOptions(kvs []attribute.KeyValue) []metric.RecordOption {
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}

func appendNonEmpty(kvs []attribute.KeyValue, key, value string) []attribute.KeyValue {
	if value == "" {
		return kvs
	}
	return append(kvs, attribute.String(key, value))
}

// SetPolicyStaleness records how stale the control plane's last answer may
// be (Consul's X-Consul-LastContact), observed as inmesh.policy.staleness.
func (in *Instruments) SetPolicyStaleness(d time.Duration) {
	if in != nil {
		in.lastStale.Store(int64(d))
	}
}

func (in *Instruments) observeStaleness(_ context.Context, o metric.Observer) error {
	if d := in.lastStale.Load(); d >= 0 {
		o.ObserveFloat64(in.staleness, time.Duration(d).Seconds())
	}
	return nil
}
