package meshgrpc

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/telemetry"
)

// The diagnostic surface of a call, in every protocol: the duration
// histogram (name, unit, bounded attributes), the client span (route,
// subset, attempts, policy version, the layer on failure), the server span
// (the caller's identity), and one log record per mesh failure, read from
// the OTel SDK's manual reader, a span recorder and a logger.

// observed is what the meshes of a test report: their metrics, spans and
// log records.
type observed struct {
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	log    *keyedLog
}

// observe returns an observed and the options that make a mesh report to it.
func observe(t *testing.T) (*observed, []mesh.Option) {
	t.Helper()
	o := &observed{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder(), log: &keyedLog{}}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(o.reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(o.spans))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	return o, []mesh.Option{mesh.WithMeterProvider(mp), mesh.WithTracerProvider(tp), mesh.WithLogger(slog.New(o.log))}
}

// keyedLog is a slog.Handler that keeps every record with its attributes,
// those of the logger (With) included, and every key a record repeats.
type keyedLog struct {
	shared *keyedRecords
	with   []slog.Attr
}

type keyedRecords struct {
	mu      sync.Mutex
	records []map[string]string
	repeats []string
}

func (l *keyedLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *keyedLog) Handle(ctx context.Context, r slog.Record) error {
	if l.shared == nil {
		return nil
	}
	rec := map[string]string{"msg": r.Message, "level": r.Level.String()}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		rec["span_id"] = sc.SpanID().String()
	}
	var repeats []string
	add := func(a slog.Attr) bool {
		if _, dup := rec[a.Key]; dup {
			repeats = append(repeats, r.Message+": "+a.Key)
		}
		rec[a.Key] = a.Value.String()
		return true
	}
	for _, a := range l.with {
		add(a)
	}
	r.Attrs(add)
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	l.shared.records = append(l.shared.records, rec)
	l.shared.repeats = append(l.shared.repeats, repeats...)
	return nil
}

func (l *keyedLog) WithAttrs(as []slog.Attr) slog.Handler {
	l.init()
	return &keyedLog{shared: l.shared, with: append(append([]slog.Attr(nil), l.with...), as...)}
}

func (l *keyedLog) WithGroup(string) slog.Handler { l.init(); return l }

// init makes the shared store before the first child handler is made.
func (l *keyedLog) init() {
	if l.shared == nil {
		l.shared = &keyedRecords{}
	}
}

// failures returns the "call failed" records, and the keys any record repeated.
func (l *keyedLog) failures() (recs []map[string]string, repeats []string) {
	if l.shared == nil {
		return nil, nil
	}
	l.shared.mu.Lock()
	defer l.shared.mu.Unlock()
	for _, r := range l.shared.records {
		if r["msg"] == "call failed" {
			recs = append(recs, r)
		}
	}
	return recs, append([]string(nil), l.shared.repeats...)
}

// histogramPoints returns the points of the float64 histogram name, and its unit.
func histogramPoints(t *testing.T, reader *sdkmetric.ManualReader, name string) (unit string, points []metricdata.HistogramDataPoint[float64]) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m.Unit, m.Data.(metricdata.Histogram[float64]).DataPoints
			}
		}
	}
	return "", nil
}

// gaugeValue returns the int64 gauge name's point whose attributes match
// want, and whether there is one.
func gaugeValue(t *testing.T, reader *sdkmetric.ManualReader, name string, want ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
		points:
			for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
				for _, kv := range want {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				return dp.Value, true
			}
		}
	}
	return 0, false
}

// spanAttrs returns the attributes of s by key.
func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// lastSpan returns the last ended span of kind toward (client) or of
// (server) billing, nil for none.
func lastSpan(o *observed, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	spans := o.spans.Ended()
	for i := len(spans) - 1; i >= 0; i-- {
		s := spans[i]
		a := spanAttrs(s)
		if s.SpanKind() == kind && (a[telemetry.AttrServerAddress].AsString() == "billing" || a[telemetry.AttrService].AsString() == "billing") {
			return s
		}
	}
	return nil
}

// mainRoute is the route of every call of the telemetry cases.
const mainRoute = "    routes: [{name: main}]\n"

// clientSpan returns the one client span toward billing whose error.type
// is layer ("" for none), the last one for a success.
func clientSpan(t *testing.T, o *observed, layer mesh.Layer) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range o.spans.Ended() {
		a := spanAttrs(s)
		if s.SpanKind() == trace.SpanKindClient && a[telemetry.AttrServerAddress].AsString() == "billing" &&
			a[telemetry.AttrErrorType].AsString() == string(layer) {
			found = append(found, s)
		}
	}
	switch {
	case len(found) == 0:
		t.Fatalf("no client span with error.type %q among %d spans", layer, len(o.spans.Ended()))
	case layer != "" && len(found) > 1:
		t.Fatalf("%d client spans with error.type %q, want 1", len(found), layer)
	}
	return found[len(found)-1]
}

// telemetryCase is one way a call ends, set up by setup with the
// options of an observed for the client and billing's server meshes; it
// returns the fleet and the result of the call observed.
type telemetryCase struct {
	name  string
	layer mesh.Layer // "" for a success
	// route is the name of the route the call matches, version the
	// policy's version (default tel-1).
	route, version string
	modes          []mode
	setup          func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result)
	// check makes the case's own assertions.
	check func(t *testing.T, md mode, o *observed, f *fleet)
}

func telemetryCases() []telemetryCase {
	return []telemetryCase{{
		name:  "success",
		route: "main",
		modes: allModes,
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			f := startFleetWith(t, md, fleetConfig{policyFor: versioned("tel-1", policyFor(md, mainRoute)), clientOpts: client, serverOpts: server}, alwaysAnswer(ok))
			return f, f.call(context.Background())
		},
		check: func(t *testing.T, md mode, o *observed, f *fleet) {
			if f.server == nil {
				return // plain HTTP backends: no server mesh
			}
			s := lastSpan(o, trace.SpanKindServer)
			if s == nil {
				t.Fatal("no server span")
			}
			a := spanAttrs(s)
			if a[telemetry.AttrCaller].AsString() != "enrollment" ||
				a[telemetry.AttrCallerIdentity].AsString() != "spiffe://mesh.local/svc/enrollment" {
				t.Errorf("server span: caller %q, identity %q", a[telemetry.AttrCaller].AsString(), a[telemetry.AttrCallerIdentity].AsString())
			}
		},
	}, {
		name:  "timeout",
		route: "main",
		layer: mesh.LayerTimeout,
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			f := startFleetWith(t, md, fleetConfig{policyFor: versioned("tel-1", policyFor(md, "    timeout: 100ms\n"+mainRoute)), clientOpts: client, serverOpts: server}, alwaysAnswer(hang))
			return f, f.call(context.Background())
		},
	}, {
		name:  "breaker",
		route: "main",
		layer: mesh.LayerBreaker,
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			f := startFleetWith(t, md, fleetConfig{policyFor: versioned("tel-1", policyFor(md, "    circuit_breaker: {consecutive_failures: 3, open_for: 1m}\n"+mainRoute)),
				clientOpts: client, serverOpts: server}, alwaysAnswer(fail))
			for range 3 {
				if r := f.call(context.Background()); !r.failed() {
					t.Fatalf("before tripping: %v", r)
				}
			}
			return f, f.call(context.Background())
		},
		check: func(t *testing.T, md mode, o *observed, f *fleet) {
			open, ok := gaugeValue(t, o.reader, telemetry.MetricBreakerState,
				attribute.String(telemetry.AttrServerAddress, "billing"), attribute.String(telemetry.AttrBreakerState, telemetry.BreakerOpen))
			if !ok || open != 1 {
				t.Errorf("%s{billing, open} = %d (present %v), want 1", telemetry.MetricBreakerState, open, ok)
			}
			transitions := meshtest.Int64Sums(t, o.reader, telemetry.MetricBreakerTransitions, func(a attribute.Set) string {
				return meshtest.Attr(a, telemetry.AttrBreakerFrom) + ">" + meshtest.Attr(a, telemetry.AttrBreakerTo)
			})
			if transitions["closed>open"] != 1 {
				t.Errorf("transitions %v, want closed>open once", transitions)
			}
		},
	}, {
		name:  "budget",
		route: "main",
		layer: mesh.LayerBudget,
		setup: func(t *testing.T, md mode, client, _ []mesh.Option) (*fleet, result) {
			pol := versioned("tel-1", policyFor(md, `    retry:
      attempts: 3
      backoff: {initial: 1ms, max: 2ms}
      retry_on: [connect-failure]
      budget: {ratio: 0, min_per_second: 0}
`+mainRoute))(deadAddr(t))
			f := &fleet{md: md, policy: pol}
			f = f.withClient(t, newTestMesh(t, pol, append([]mesh.Option{mesh.WithService("enrollment")}, client...)...))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return f, f.call(ctx)
		},
		check: func(t *testing.T, md mode, o *observed, f *fleet) {
			s := lastSpan(o, trace.SpanKindClient)
			var refused int
			for _, e := range s.Events() {
				if e.Name == telemetry.EventBudgetRefused {
					refused++
				}
			}
			if refused != 1 {
				t.Errorf("%d budget refusal events on the span, want 1: %v", refused, s.Events())
			}
			n := meshtest.Int64Sums(t, o.reader, telemetry.MetricBudgetExhausted, func(a attribute.Set) string { return meshtest.Attr(a, telemetry.AttrServerAddress) })
			if n["billing"] != 1 {
				t.Errorf("%s %v, want billing 1", telemetry.MetricBudgetExhausted, n)
			}
		},
	}, {
		name:  "tls",
		route: "main",
		layer: mesh.LayerTLS,
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			f := startFleetWith(t, md, fleetConfig{server: "catalog", clientOpts: client, serverOpts: server, policyFor: versioned("tel-1", func(addrs ...string) string {
				return billingPolicy(mainRoute)(addrs...) + "  catalog: {}\n"
			})}, alwaysAnswer(ok))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return f, f.call(ctx)
		},
	}, {
		name:    "authz",
		layer:   mesh.LayerAuthz,
		version: "deny-1",
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			f := startFleetWith(t, md, fleetConfig{policyFor: denyPolicy(""), clientOpts: client, serverOpts: server}, alwaysAnswer(ok))
			return f, f.adminCall(context.Background())
		},
		check: func(t *testing.T, md mode, o *observed, f *fleet) {
			if d := authzCounts(t, o.reader); d["enrollment/deny/enforce/deny[0]"] != 1 {
				t.Errorf("authz decisions %v, want enrollment's deny by deny[0]", d)
			}
			s := lastSpan(o, trace.SpanKindServer)
			if s == nil {
				t.Fatal("no server span")
			}
			if a := spanAttrs(s); a[telemetry.AttrErrorType].AsString() != "authz" ||
				a[telemetry.AttrCallerIdentity].AsString() != "spiffe://mesh.local/svc/enrollment" {
				t.Errorf("server span: error.type %q, identity %q", a[telemetry.AttrErrorType].AsString(), a[telemetry.AttrCallerIdentity].AsString())
			}
		},
	}, {
		name:  "overload",
		route: "main",
		layer: mesh.LayerOverload,
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			h := newHolding()
			f := startFleetWith(t, md, fleetConfig{policyFor: versioned("tel-1", policyFor(md, "    concurrency: {max: 1}\n"+mainRoute)), clientOpts: client, serverOpts: server}, h.behaviour)
			done := make(chan result, 1)
			go func() { done <- f.call(context.Background()) }()
			<-h.entered
			r := f.call(context.Background())
			close(h.release)
			if held := <-done; !held.ok() {
				t.Errorf("the call within the limit: %v", held)
			}
			return f, r
		},
		check: func(t *testing.T, md mode, o *observed, f *fleet) {
			n := meshtest.Int64Sums(t, o.reader, telemetry.MetricOverloadShed, func(a attribute.Set) string { return meshtest.Attr(a, telemetry.AttrServerAddress) })
			if n["billing"] != 1 {
				t.Errorf("%s %v, want billing 1", telemetry.MetricOverloadShed, n)
			}
		},
	}, {
		name:  "rate_limit",
		route: "main",
		layer: mesh.LayerRateLimit,
		setup: func(t *testing.T, md mode, client, server []mesh.Option) (*fleet, result) {
			sc := clocktest.NewFake(time.Now())
			f := startFleetWith(t, md, fleetConfig{policyFor: versioned("tel-1", billingPolicy("    rate_limit: {requests_per_second: 1, burst: 1}\n"+mainRoute)),
				serverOpts: append([]mesh.Option{withClock(sc)}, server...), clientOpts: client}, alwaysAnswer(ok))
			if r := f.call(context.Background()); !r.ok() {
				t.Fatalf("the burst's call: %v", r)
			}
			return f, f.call(context.Background())
		},
		check: func(t *testing.T, md mode, o *observed, f *fleet) {
			n := meshtest.Int64Sums(t, o.reader, telemetry.MetricRateLimitDecisions, func(a attribute.Set) string {
				return meshtest.Attr(a, telemetry.AttrRateLimitResult)
			})
			if n[telemetry.RateLimitAllowed] != 1 || n[telemetry.RateLimitLimited] != 1 {
				t.Errorf("%s %v, want 1 allowed and 1 refused", telemetry.MetricRateLimitDecisions, n)
			}
		},
	}}
}

// TestCallTelemetry: for every way a call ends, in every protocol, the
// client's duration histogram is in seconds with a point for the call whose
// error.type is the layer, its attributes bounded (the destination service
// and the route's name: no endpoint address, no raw path); the client span
// carries the route, the attempts, the policy version and the layer; a mesh
// failure is one "call failed" log record with the CallError's fields; and
// no log record repeats a key.
func TestCallTelemetry(t *testing.T) {
	for _, tc := range telemetryCases() {
		t.Run(tc.name, func(t *testing.T) {
			run(t, func(t *testing.T, md mode) {
				o, opts := observe(t)
				f, r := tc.setup(t, md, opts, opts)
				ce := r.callError()
				switch {
				case tc.layer == "" && !r.ok():
					t.Fatalf("want success, got %v", r)
				case tc.layer != "" && (ce == nil || ce.Layer != tc.layer):
					t.Fatalf("want layer %s, got %v", tc.layer, r)
				}

				// The duration histogram.
				name := map[bool]string{false: telemetry.MetricHTTPClientDuration, true: telemetry.MetricRPCClientDuration}[md == modeGRPC]
				unit, points := histogramPoints(t, o.reader, name)
				if unit != "s" {
					t.Errorf("%s unit %q, want s", name, unit)
				}
				var calls uint64
				for _, dp := range points {
					for _, kv := range dp.Attributes.ToSlice() {
						v := kv.Value.Emit()
						if kv.Key == telemetry.AttrEndpoint || strings.Contains(v, "127.0.0.1") || strings.HasPrefix(v, "/") {
							t.Errorf("%s has the unbounded attribute %s=%s", name, kv.Key, v)
						}
					}
					if meshtest.Attr(dp.Attributes, telemetry.AttrErrorType) == string(tc.layer) &&
						meshtest.Attr(dp.Attributes, telemetry.AttrServerAddress) == "billing" {
						calls += dp.Count
						if md != modeGRPC && meshtest.Attr(dp.Attributes, telemetry.AttrHTTPRoute) != tc.route {
							t.Errorf("%s point without http.route: %v", name, dp.Attributes.ToSlice())
						}
					}
				}
				if calls != 1 {
					t.Errorf("%s: %d calls with error.type %q, want 1", name, calls, tc.layer)
				}

				// The client span.
				version := tc.version
				if version == "" {
					version = "tel-1"
				}
				s := clientSpan(t, o, tc.layer)
				a := spanAttrs(s)
				if a[telemetry.AttrPolicyVersion].AsString() != version || a[telemetry.AttrRoute].AsString() != tc.route {
					t.Errorf("client span: policy version %q, route %q; want %q, %q", a[telemetry.AttrPolicyVersion].AsString(), a[telemetry.AttrRoute].AsString(), version, tc.route)
				}
				if _, has := a[telemetry.AttrHTTPRoute]; md != modeGRPC && tc.route != "" && a[telemetry.AttrHTTPRoute].AsString() != tc.route || md == modeGRPC && has {
					t.Errorf("client span: http.route %q (present %v), want %q over HTTP only", a[telemetry.AttrHTTPRoute].AsString(), has, tc.route)
				}
				if ce != nil && int(a[telemetry.AttrAttempts].AsInt64()) != ce.Attempts {
					t.Errorf("client span: %d attempts, the CallError says %d", a[telemetry.AttrAttempts].AsInt64(), ce.Attempts)
				}
				if tc.layer == "" && a[telemetry.AttrAttempts].AsInt64() != 1 {
					t.Errorf("client span: %d attempts, want 1", a[telemetry.AttrAttempts].AsInt64())
				}

				// The log.
				recs, repeats := o.log.failures()
				if len(repeats) > 0 {
					t.Errorf("log records repeat keys: %v", repeats)
				}
				var mine []map[string]string
				for _, rec := range recs {
					if rec["workload"] == "enrollment" {
						mine = append(mine, rec)
					}
				}
				switch {
				case tc.layer == "" && len(mine) != 0:
					t.Errorf("a success logged %v", mine)
				case tc.layer != "":
					if len(mine) != 1 {
						t.Fatalf("%d call failed records, want 1: %v", len(mine), mine)
					}
					rec := mine[0]
					if rec["layer"] != string(tc.layer) || rec["service"] != "billing" || rec["policy_version"] != version ||
						rec["attempts"] == "" || rec["err"] == "" || rec["level"] != slog.LevelWarn.String() || rec["endpoint"] != ce.Endpoint {
						t.Errorf("record %v, want the CallError %+v at WARN", rec, ce)
					}
					if rec["span_id"] != s.SpanContext().SpanID().String() {
						t.Errorf("record logged in span %q, want the call's %s", rec["span_id"], s.SpanContext().SpanID())
					}
				}
				if tc.check != nil {
					tc.check(t, md, o, f)
				}
			}, tc.modesOr()...)
		})
	}
}

func (tc telemetryCase) modesOr() []mode {
	if tc.modes != nil {
		return tc.modes
	}
	return allModes
}

// TestPolicyVersionHeader: under WithPolicyVersionHeader billing's Handler
// names the policy version in force on its answers; without it, it says
// nothing.
func TestPolicyVersionHeader(t *testing.T) {
	for _, on := range []bool{false, true} {
		var opts []mesh.Option
		if on {
			opts = append(opts, mesh.WithPolicyVersionHeader())
		}
		f := startFleetWith(t, modeHTTP2, fleetConfig{policyFor: versioned("hdr-7", policyFor(modeHTTP2, "")), serverOpts: opts}, alwaysAnswer(ok))
		resp, err := f.client.HTTPClient().Do(meshtest.MustRequest(t, http.MethodGet, "http://billing/x"))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		got := resp.Header.Get(mesh.HeaderPolicyVersion)
		if want := map[bool]string{true: "hdr-7"}[on]; got != want {
			t.Errorf("WithPolicyVersionHeader %v: %s %q, want %q", on, mesh.HeaderPolicyVersion, got, want)
		}
	}
}

// TestEarlyFailureLogged: a call that fails before it is sent (layer
// egress, under egress: deny) is logged as every mesh failure is: one
// "call failed" record of its layer.
func TestEarlyFailureLogged(t *testing.T) {
	run(t, func(t *testing.T, md mode) {
		o, opts := observe(t)
		f := startFleetWith(t, md, fleetConfig{clientOpts: opts, policyFor: func(addrs ...string) string {
			return "egress: deny\n" + policyFor(md, "")(addrs...)
		}}, alwaysAnswer(ok))
		target := byMode(md, map[mode]string{modeHTTP1: "http://127.0.0.1:1/x", modeHTTP2: "http://127.0.0.1:1/x", modeGRPC: "passthrough:///127.0.0.1:1"})
		r := f.callTarget(context.Background(), target)
		if ce := r.callError(); ce == nil || ce.Layer != mesh.LayerEgress {
			t.Fatalf("%v, want layer egress", r)
		}
		recs, repeats := o.log.failures()
		if len(recs) != 1 || recs[0]["layer"] != string(mesh.LayerEgress) || len(repeats) != 0 {
			t.Errorf("records %v (repeated keys %v), want one of layer egress", recs, repeats)
		}
	}, allModes...)
}
