package core

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// failureLogEvery is how often the log may hold a record of a failed call
// per destination service and layer; the failures in between are counted
// and the next record says how many were left out. Every failure is still
// counted in the metrics and marked on its span: the log is for the
// details those cannot carry (the endpoint, the cause's text), and one
// record a second per service and layer says them without a failing
// dependency flooding the log at the call rate.
const failureLogEvery = time.Second

// failureSlots is the number of (service, layer) pairs rate-limited apart;
// two pairs that hash to the same slot share its rate.
const failureSlots = 64

// FailureLog rate-limits the log records of failed calls: at most one per
// failureLogEvery per slot, a slot per (service, layer) pair up to
// failureSlots. It takes no lock and allocates nothing; its zero value is
// ready. Safe for concurrent use.
type FailureLog struct {
	slots [failureSlots]failureSlot
}

type failureSlot struct {
	next       atomic.Int64 // Unix nanoseconds before which the slot logs nothing; 0: log now
	suppressed atomic.Int64 // records left out since the slot's last one
}

// allow reports whether a record about service and layer may be logged at
// now, and how many records of its slot were left out since its last one.
// A nil FailureLog allows every record.
func (l *FailureLog) allow(now time.Time, service string, layer Layer) (bool, int64) {
	if l == nil {
		return true, 0
	}
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(service); i++ {
		h = (h ^ uint64(service[i])) * prime
	}
	h = (h ^ 0xff) * prime // no byte of a name: "ab"+"c" is not "a"+"bc"
	for i := 0; i < len(layer); i++ {
		h = (h ^ uint64(layer[i])) * prime
	}
	s := &l.slots[h%failureSlots]
	t := now.UnixNano()
	next := s.next.Load()
	if t < next || !s.next.CompareAndSwap(next, t+int64(failureLogEvery)) {
		s.suppressed.Add(1)
		return false, 0
	}
	return true, s.suppressed.Swap(0)
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
