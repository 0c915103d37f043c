package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// The instrument and span event of fault injection (the policy's fault
// block): every injected delay and abort is counted and, on a recording
// span, an event, so that a fault left on is seen.
const (
	// MetricFaultsInjected counts the faults injected into calls, by
	// destination service (server.address) and kind (AttrFaultKind).
	MetricFaultsInjected = "inmesh.faults.injected"
	UnitFaultsInjected   = "{fault}"
	DescFaultsInjected   = "Faults injected into client calls by the policy's fault block, delays and aborts."

	// AttrFaultKind is FaultDelay or FaultAbort, on MetricFaultsInjected.
	AttrFaultKind = "kind"

	// EventFault is the span event of an injected fault, with the
	// attributes AttrFaultEventKind and, for a delay, AttrFaultDelay, for
	// an abort, AttrFaultStatus.
	EventFault         = "inmesh.fault"
	AttrFaultEventKind = "inmesh.fault.kind"   // FaultDelay or FaultAbort
	AttrFaultDelay     = "inmesh.fault.delay"  // seconds the call was delayed
	AttrFaultStatus    = "inmesh.fault.status" // the injected status: "HTTP 503", "gRPC unavailable"
)

// Values of AttrFaultKind and AttrFaultEventKind.
const (
	FaultDelay = "delay"
	FaultAbort = "abort"
)

// newFaultCounter creates the counter of MetricFaultsInjected.
func newFaultCounter(m metric.Meter) (metric.Int64Counter, error) {
	return m.Int64Counter(MetricFaultsInjected,
		metric.WithUnit(UnitFaultsInjected), metric.WithDescription(DescFaultsInjected))
}

// RecordFault counts one fault of kind (FaultDelay or FaultAbort) injected
// into a call to service. Only a call that is faulted pays for it: its
// attribute set is built per call.
func (in *Instruments) RecordFault(ctx context.Context, service, kind string) {
	if in == nil || in.faults == nil {
		return
	}
	add(ctx, in.faults,
		attribute.String(AttrServerAddress, service),
		attribute.String(AttrFaultKind, kind))
}

// FaultDelayEvent records on span, when it is recording, that the call was
// delayed by d before its first attempt.
func FaultDelayEvent(span trace.Span, d time.Duration) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.AddEvent(EventFault, trace.WithAttributes(
		attribute.String(AttrFaultEventKind, FaultDelay),
		attribute.Float64(AttrFaultDelay, d.Seconds()),
	))
}

// FaultAbortEvent records on span, when it is recording, that the call was
// aborted with status (as "HTTP 503" or "gRPC unavailable") without being
// sent.
func FaultAbortEvent(span trace.Span, status string) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.AddEvent(EventFault, trace.WithAttributes(
		attribute.String(AttrFaultEventKind, FaultAbort),
		attribute.String(AttrFaultStatus, status),
	))
}
