package core

import (
	"context"
	"log/slog"
	"time"

	"github.com/inmesh/inmesh/internal/lograte"
)

// failureLogEvery is how often the log may hold a record of a failed call
// per destination service and layer; the failures in between are counted
// and the next record says how many were left out. Every failure is still
// counted in the metrics and marked on its span: the log is for the
// details those cannot carry (the endpoint, the cause's text), and one
// record a second per service and layer says them without a failing
// dependency flooding the log at the call rate.
const failureLogEvery = time.Second

// FailureLog rate-limits the log records of failed calls: at most one per
// failureLogEvery per (service, layer) pair (lograte.Limiter). Its zero
// value is ready; a nil FailureLog allows every record. Safe for
// concurrent use.
type FailureLog struct{ l lograte.Limiter }

// allow reports whether a record about service and layer may be logged at
// now, and how many records of its slot were left out since its last one.
func (l *FailureLog) allow(now time.Time, service string, layer Layer) (bool, int64) {
	if l == nil {
		return true, 0
	}
	return l.l.Allow(now, failureLogEvery, service, string(layer))
}

// failureLevel is the level of the record of a failure at layer: Info for
// an injected fault (the policy asked for it), Warn for every other layer.
// A failed call is the destination's or the policy's trouble, not an error
// of the mesh itself.
func failureLevel(layer Layer) slog.Level {
	if layer == LayerFault {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// LogFailure logs ce, the mesh failure a call's caller gets, as one
// structured record "call failed" with the CallError's fields (layer,
// service, route, subset, endpoint, attempts, policy_version, err) and the
// count of records left out before it (suppressed), rate-limited per
// destination service and layer (Env.Failures). ctx carries the call's
// span, when it has one: a handler that reads the trace from it ties the
// record to the span.
// It does nothing when the logger would drop the record.
func (env *Env) LogFailure(ctx context.Context, ce *CallError) {
	if env.Log == nil || ce == nil {
		return
	}
	level := failureLevel(ce.Layer)
	if !env.Log.Enabled(ctx, level) {
		return
	}
	ok, suppressed := env.Failures.allow(env.Clock.Now(), ce.Service, ce.Layer)
	if !ok {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("layer", string(ce.Layer)),
		slog.String("service", ce.Service),
		slog.String("route", ce.Route),
		slog.String("subset", ce.Subset),
		slog.String("endpoint", ce.Endpoint),
		slog.Int("attempts", ce.Attempts),
		slog.String("policy_version", ce.PolicyVersion),
		slog.Any("err", ce.Err),
		slog.Int64("suppressed", suppressed),
	}
	env.Log.LogAttrs(ctx, level, "call failed", attrs[:]...)
}
