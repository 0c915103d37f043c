package telemetry_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// The client span of a call says, when it ends, its subset, attempts and
// policy version, and on failure its layer as error.type; HTTP and gRPC
// alike. A budget refusal is an event of its own.
func TestClientSpanEnd(t *testing.T) {
	tr, rec := newTracing(t, nil)
	ctx := context.Background()
	_, span := tr.StartClientCall(ctx, "billing", "charge", "POST")
	telemetry.BudgetEvent(span, 3, "503")
	telemetry.EndClientCall(span, telemetry.CallEnd{StatusCode: 503, ErrorType: "budget", Err: errors.New("refused"),
		Subset: "v2", Attempts: 2, PolicyVersion: "v7"})
	_, rspan := tr.StartRPCClientCall(ctx, "billing", "check", "/grpc.health.v1.Health/Check")
	telemetry.EndRPCClientCall(rspan, resilience.CodeUnavailable, telemetry.CallEnd{ErrorType: "breaker", Subset: "v1", Attempts: 1, PolicyVersion: "v7"})

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	for i, want := range []map[attribute.Key]attribute.Value{{
		telemetry.AttrHTTPRoute:              attribute.StringValue("charge"),
		telemetry.AttrRoute:                  attribute.StringValue("charge"),
		telemetry.AttrSubset:                 attribute.StringValue("v2"),
		telemetry.AttrAttempts:               attribute.IntValue(2),
		telemetry.AttrPolicyVersion:          attribute.StringValue("v7"),
		telemetry.AttrErrorType:              attribute.StringValue("budget"),
		telemetry.AttrHTTPResponseStatusCode: attribute.IntValue(503),
	}, {
		telemetry.AttrRoute:             attribute.StringValue("check"),
		telemetry.AttrSubset:            attribute.StringValue("v1"),
		telemetry.AttrAttempts:          attribute.IntValue(1),
		telemetry.AttrPolicyVersion:     attribute.StringValue("v7"),
		telemetry.AttrErrorType:         attribute.StringValue("breaker"),
		telemetry.AttrRPCGRPCStatusCode: attribute.IntValue(int(resilience.CodeUnavailable)),
	}} {
		s := spans[i]
		got := attrs(s.Attributes())
		for k, v := range want {
			if got[k] != v {
				t.Errorf("span %q: %s = %v, want %v", s.Name(), k, got[k].Emit(), v.Emit())
			}
		}
		if s.Status().Code != codes.Error {
			t.Errorf("span %q: status %v", s.Name(), s.Status())
		}
	}
	if _, ok := attrs(spans[1].Attributes())[telemetry.AttrHTTPRoute]; ok {
		t.Errorf("gRPC span has http.route")
	}
	ev := spans[0].Events()
	if len(ev) != 1 || ev[0].Name != telemetry.EventBudgetRefused {
		t.Fatalf("events %v", ev)
	}
	if a := attrs(ev[0].Attributes); a[telemetry.AttrAttemptNumber].AsInt64() != 3 || a[telemetry.AttrAttemptOutcome].AsString() != "503" {
		t.Errorf("budget event attributes %v", a)
	}
}

// The server span carries the caller's service and its SPIFFE ID.
func TestServerSpanCallerIdentity(t *testing.T) {
	tr, rec := newTracing(t, nil)
	const id = "spiffe://mesh.local/ns/default/sa/enrollment"
	_, span := tr.StartServerCall(context.Background(), nil, "billing", "GET")
	telemetry.EndServerCallAs(span, 200, "enrollment", id, "")
	_, rspan := tr.StartRPCServerCall(context.Background(), nil, "billing", "/grpc.health.v1.Health/Check")
	telemetry.EndRPCServerCallAs(rspan, resilience.CodePermissionDenied, "enrollment", id, "authz")
	for _, s := range rec.Ended() {
		a := attrs(s.Attributes())
		if a[telemetry.AttrCaller].AsString() != "enrollment" || a[telemetry.AttrCallerIdentity].AsString() != id {
			t.Errorf("span %q: attributes %v", s.Name(), a)
		}
	}
	if n := len(rec.Ended()); n != 2 {
		t.Fatalf("%d spans", n)
	}
}

// inmesh.circuit_breaker.state reports every breaker as a state set.
func TestBreakerStateGauge(t *testing.T) {
	in, reader := newMetrics(t)
	in.SetBreakerStates(func(yield func(service, route, state string)) {
		yield("billing", "", telemetry.BreakerOpen)
		yield("billing", "charge", telemetry.BreakerHalfOpen)
	})
	m := collect(t, reader, telemetry.MetricBreakerState)
	if m.Unit != telemetry.UnitBreakerState || m.Description == "" {
		t.Errorf("unit %q, description %q", m.Unit, m.Description)
	}
	got := map[string]int64{}
	for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
		route, _ := dp.Attributes.Value(telemetry.AttrRoute)
		state, _ := dp.Attributes.Value(telemetry.AttrBreakerState)
		svc, _ := dp.Attributes.Value(telemetry.AttrServerAddress)
		got[svc.AsString()+"/"+route.AsString()+" "+state.AsString()] = dp.Value
	}
	want := map[string]int64{
		"billing/ closed": 0, "billing/ open": 1, "billing/ half-open": 0,
		"billing/charge closed": 0, "billing/charge open": 0, "billing/charge half-open": 1,
	}
	if len(got) != len(want) {
		t.Fatalf("points %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
	in.SetBreakerStates(nil)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			if mm.Name == telemetry.MetricBreakerState {
				if g := mm.Data.(metricdata.Gauge[int64]); len(g.DataPoints) != 0 {
					t.Errorf("observed %d points after SetBreakerStates(nil)", len(g.DataPoints))
				}
			}
		}
	}
}
