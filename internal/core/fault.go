package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/inmesh/inmesh/policy"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Fault is a route's compiled fault block: the delay and the abort that
// Start injects into the route's calls, decided once per call, after the
// route matched and before the first attempt, as a fault filter placed
// before the router would. A route whose block can inject nothing has no
// Fault (Route.Fault nil), and its calls pay for nothing. Immutable.
type Fault struct {
	DelayPercent float64 // 0..100 of the calls are delayed; 0: none
	Delay        time.Duration
	AbortPercent float64 // 0..100 of the calls are aborted; 0: none
	// OnlyWithHeader limits the fault to calls carrying the header (any
	// value; gRPC metadata for an RPC). Canonical "": every call.
	OnlyWithHeader HeaderKey

	httpAbort, rpcAbort *FaultAbort // the causes of an abort, by protocol
}

// FaultAbort is the cause of the CallError (layer fault) of a call a fault
// block aborted: the status it injects, named in Error ("fault injected:
// abort with HTTP 503", "... with gRPC unavailable"). An RPC's error
// carries GRPCCode as its status code.
type FaultAbort struct {
	RPC        bool // the aborted call is an RPC: GRPCCode applies, else HTTPStatus
	HTTPStatus int
	GRPCCode   resilience.GRPCCode
	status     string // "HTTP 503", "gRPC unavailable"
}

func (e *FaultAbort) Error() string { return "fault injected: abort with " + e.status }

// Status names the injected status: "HTTP 503" or "gRPC unavailable".
func (e *FaultAbort) Status() string { return e.status }

// CompileFault compiles f, a resolved fault block (abort's status and code
// defaulted), or returns nil when f is nil or injects nothing (both
// percents 0). An abort's grpc_code that no gRPC code has (validation
// rejects it) is returned as the error, with the Fault aborting RPCs with
// Unavailable, so that the call path stays safe.
func CompileFault(f *policy.Fault) (*Fault, error) {
	if f == nil {
		return nil, nil
	}
	c := &Fault{}
	if d := f.Delay; d != nil && d.Percent > 0 && d.Duration > 0 {
		c.DelayPercent, c.Delay = d.Percent, d.Duration.Std()
	}
	var err error
	if a := f.Abort; a != nil && a.Percent > 0 {
		c.AbortPercent = a.Percent
		code, ok := resilience.ParseGRPCCode(a.GRPCCode)
		name := a.GRPCCode
		if !ok {
			err = fmt.Errorf("core: fault.abort.grpc_code: %q names no gRPC code", a.GRPCCode)
			code, name = resilience.CodeUnavailable, "unavailable"
		}
		c.httpAbort = &FaultAbort{HTTPStatus: a.HTTPStatus, GRPCCode: code, status: "HTTP " + strconv.Itoa(a.HTTPStatus)}
		c.rpcAbort = &FaultAbort{RPC: true, HTTPStatus: a.HTTPStatus, GRPCCode: code, status: "gRPC " + name}
	}
	if c.DelayPercent == 0 && c.AbortPercent == 0 {
		return nil, err
	}
	if h := f.OnlyWithHeader; h != "" {
		c.OnlyWithHeader = HeaderKey{Canonical: textproto.CanonicalMIMEHeaderKey(h), Lower: strings.ToLower(h)}
	}
	return c, err
}

// String describes f for a log line: "delay 10% by 200ms, abort 5% with
// HTTP 503 / gRPC unavailable, only with header X-Inmesh-Fault".
func (f *Fault) String() string {
	var parts []string
	if f.DelayPercent > 0 {
		parts = append(parts, fmt.Sprintf("delay %v%% by %v", f.DelayPercent, f.Delay))
	}
	if f.AbortPercent > 0 {
		parts = append(parts, fmt.Sprintf("abort %v%% with %s / %s", f.AbortPercent, f.httpAbort.status, f.rpcAbort.status))
	}
	if f.OnlyWithHeader.Canonical != "" {
		parts = append(parts, "only with header "+f.OnlyWithHeader.Canonical)
	}
	return strings.Join(parts, ", ")
}

// chance reports whether a call is one of the percent (0..100) of calls
// chosen, on a draw of the env's random source; 100 needs no draw.
func (e *Env) chance(percent float64) bool {
	if percent >= 100 {
		return true
	}
	var u float64
	if e.Rand != nil {
		u = e.Rand()
	} else {
		u = rand.Float64()
	}
	return u*100 < percent
}

// injectFault applies the route's fault f to the call, which Start has
// readied up to its deadline: a delay on the env's clock, within the
// call's context (whose end during it fails the call as ContextFailure
// says, a deadline as a timeout), then an abort, which fails the call at
// layer fault before any attempt: nothing is sent or dialed, and neither
// the breaker, the budget nor outlier detection hears of it. Each is
// counted and, on the call's span, an event.
func (c *Call) injectFault(f *Fault) error {
	if f.OnlyWithHeader.Canonical != "" && (c.req.Header == nil || len(c.req.Header.Values(f.OnlyWithHeader)) == 0) {
		return nil
	}
	if f.DelayPercent > 0 && c.env.chance(f.DelayPercent) {
		c.env.Instr.RecordFault(c.Ctx, c.Dest.Name, telemetry.FaultDelay)
		telemetry.FaultDelayEvent(c.Span, f.Delay)
		if err := resilience.Sleep(c.Ctx, c.env.Clock, f.Delay); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return c.Fail(LayerTimeout, fmt.Errorf("%w while the fault block delayed the call by %v", err, f.Delay))
			}
			return err
		}
		c.Now = c.env.Clock.Now()
	}
	if f.AbortPercent > 0 && c.env.chance(f.AbortPercent) {
		a := f.httpAbort
		if c.req.RPC {
			a = f.rpcAbort
		}
		c.env.Instr.RecordFault(c.Ctx, c.Dest.Name, telemetry.FaultAbort)
		telemetry.FaultAbortEvent(c.Span, a.status)
		return c.Fail(LayerFault, a)
	}
	return nil
}
