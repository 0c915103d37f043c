package telemetry_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/telemetry"
)

func TestRecordHTTPServer(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	in.RecordHTTPServer(ctx, 20*time.Millisecond, telemetry.HTTPServerCall{Service: "billing", Caller: "enrollment", Method: "POST", StatusCode: 200})
	in.RecordHTTPServer(ctx, 1*time.Millisecond, telemetry.HTTPServerCall{Service: "billing", Caller: "evil", Method: "POST", StatusCode: 403, ErrorType: "authz"})
	m := collect(t, reader, telemetry.MetricHTTPServerDuration)
	h := m.Data.(metricdata.Histogram[float64])
	if len(h.DataPoints) != 2 || m.Unit != "s" {
		t.Fatalf("points %d unit %q", len(h.DataPoints), m.Unit)
	}
	for _, dp := range h.DataPoints {
		caller, _ := dp.Attributes.Value(telemetry.AttrCaller)
		et, hasET := dp.Attributes.Value(telemetry.AttrErrorType)
		if caller.AsString() == "evil" && (!hasET || et.AsString() != "authz") {
			t.Errorf("denial without error.type authz: %v", dp.Attributes.ToSlice())
		}
	}
	if a := testing.AllocsPerRun(100, func() {
		in.RecordHTTPServer(ctx, time.Millisecond, telemetry.HTTPServerCall{Service: "billing", Caller: "enrollment", Method: "POST", StatusCode: 200})
	}); a != 0 {
		t.Errorf("RecordHTTPServer allocates %v times", a)
	}
}

func TestRecordAuthz(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	in.RecordAuthz(ctx, "billing", "enrollment", true)
	in.RecordAuthz(ctx, "billing", "enrollment", true)
	in.RecordAuthz(ctx, "billing", "evil", false)
	sum := collect(t, reader, telemetry.MetricAuthzDecisions).Data.(metricdata.Sum[int64])
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		d, _ := dp.Attributes.Value(telemetry.AttrAuthzDecision)
		c, _ := dp.Attributes.Value(telemetry.AttrCaller)
		got[c.AsString()+"/"+d.AsString()] = dp.Value
	}
	if got["enrollment/allow"] != 2 || got["evil/deny"] != 1 || len(got) != 2 {
		t.Fatalf("decisions %v", got)
	}
}

func TestRecordAuthzDecision(t *testing.T) {
	in, reader := newMetrics(t)
	ctx := context.Background()
	in.RecordAuthz(ctx, "billing", "web", false) // enforced, no rule named
	for _, d := range []telemetry.AuthzDecision{
		{Service: "billing", Caller: "web", Allow: true, Rule: "rules[0]"},
		{Service: "billing", Caller: "web", Allow: false, Rule: "deny[1]"},
		{Service: "billing", Caller: "web", Allow: false, Audit: true, Rule: "deny[1]"},
		{Service: "billing", Caller: "web", Allow: false, Audit: true, Rule: "deny[1]"},
		{Service: "billing", Caller: "web", Allow: true, Audit: true, Rule: "default"},
	} {
		in.RecordAuthzDecision(ctx, d)
	}
	sum := collect(t, reader, telemetry.MetricAuthzDecisions).Data.(metricdata.Sum[int64])
	got := map[string]int64{}
	for _, dp := range sum.DataPoints {
		d, _ := dp.Attributes.Value(telemetry.AttrAuthzDecision)
		m, _ := dp.Attributes.Value(telemetry.AttrAuthzMode)
		r, _ := dp.Attributes.Value(telemetry.AttrAuthzRule)
		got[d.AsString()+"/"+m.AsString()+"/"+r.AsString()] = dp.Value
	}
	want := map[string]int64{"deny/enforce/": 1, "allow/enforce/rules[0]": 1, "deny/enforce/deny[1]": 1, "deny/audit/deny[1]": 2, "allow/audit/default": 1}
	if len(got) != len(want) {
		t.Fatalf("decisions %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("decisions %v, want %v", got, want)
		}
	}
	d := telemetry.AuthzDecision{Service: "billing", Caller: "web", Audit: true, Rule: "deny[1]"}
	if a := testing.AllocsPerRun(100, func() { in.RecordAuthzDecision(ctx, d) }); a != 0 {
		t.Errorf("RecordAuthzDecision allocates %v times", a)
	}
	var nilIn *telemetry.Instruments
	nilIn.RecordAuthzDecision(ctx, d)
}

func TestCertificateExpiry(t *testing.T) {
	in, reader := newMetrics(t)
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	in.SetCertificateExpiry(func() (string, time.Time, bool) {
		return "spiffe://mesh.local/svc/billing", now.Add(90 * time.Minute), true
	}, func() time.Time { return now })
	g := collect(t, reader, telemetry.MetricCertificateExpiry).Data.(metricdata.Gauge[float64])
	if len(g.DataPoints) != 1 || g.DataPoints[0].Value != 5400 {
		t.Fatalf("gauge %+v", g.DataPoints)
	}
	in.SetCertificateExpiry(nil, nil)
}

func TestStartServerCallContinuesTheCallersTrace(t *testing.T) {
	tr, rec := newTracing(t, propagation.TraceContext{})
	h := http.Header{}
	h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	_, span := tr.StartServerCall(context.Background(), h, "billing", "POST")
	telemetry.EndServerCall(span, 403, "evil", "authz")
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.SpanKind() != trace.SpanKindServer || s.Parent().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" ||
		s.Name() != "POST billing" || s.Status().Description != "authz" {
		t.Fatalf("span %s kind %v parent %v status %v", s.Name(), s.SpanKind(), s.Parent().TraceID(), s.Status())
	}
}
