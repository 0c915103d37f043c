package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// call is the part of one logical call through the mesh that does not
// depend on the protocol: the route, the split, the call's deadline, the
// retry bookkeeping, the breaker and outlier reports, and the CallError.
// The HTTP round tripper (httpCall) and the gRPC interceptors (rpcCall)
// embed it and add the sending. A call lives on the caller's goroutine.
type call struct {
	m  *Mesh
	st *state
	d  *destination

	rt       *route
	entry    *splitEntry
	p        *pool
	span     trace.Span
	ctx      context.Context // the call's context: caller's plus the policy timeout
	cancel   context.CancelFunc
	attempts int
	host     *discovery.Host
	now      time.Time // the start of the call, then of the current attempt
}

// routeName is the matched route's name, "" before a match.
func (c *call) routeName() string {
	if c.rt == nil {
		return ""
	}
	return c.rt.name
}

// subsetName is the subset the split chose, "" before or without a split.
func (c *call) subsetName() string {
	if c.entry == nil {
		return ""
	}
	return c.entry.subset
}

// fail builds the CallError of this call.
func (c *call) fail(layer Layer, err error) *CallError {
	ce := &CallError{
		Layer:         layer,
		Service:       c.d.name,
		Route:         c.routeName(),
		Subset:        c.subsetName(),
		Attempts:      c.attempts,
		PolicyVersion: c.d.version,
		Err:           err,
	}
	if c.host != nil {
		ce.Endpoint = c.host.Address
	}
	return ce
}

// split chooses the subset of the call's route (c.rt, not nil) and its
// pool, and fails with layer discovery when the pool has no endpoint.
func (c *call) split() *CallError {
	c.p = c.rt.all
	if len(c.rt.split) > 0 {
		c.entry = c.rt.pickSplit(rand.IntN(c.rt.total))
		c.p = c.entry.pool
	}
	if len(c.p.hosts) == 0 {
		return c.fail(LayerDiscovery, noEndpoints(c.d.name, c.p.subset))
	}
	return nil
}

// begin bounds the call's context by the route's timeout (the shorter of it
// and the caller's deadline wins) and deposits the call in the retry budget
// when the route retries.
func (c *call) begin() {
	if c.rt.eff.Timeout > 0 {
		c.ctx, c.cancel = context.WithTimeout(c.ctx, c.rt.eff.Timeout)
	}
	if c.rt.eff.Attempts > 1 {
		c.rt.budget.Deposit()
	}
}

// release cancels the call's context.
func (c *call) release() {
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
}

// ctxFailure turns the end of the call's context into the caller's error:
// a deadline is a mesh timeout, a cancellation is the caller's own.
func (c *call) ctxFailure() error {
	err := c.ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return c.fail(LayerTimeout, err)
	}
	return err
}

// pick chooses the endpoint of an attempt into c.host, preferring another
// one than the previous attempt's.
func (c *call) pick() *discovery.Host {
	c.host = c.p.pick(c.host, c.now)
	return c.host
}

// pick returns a host of p for an attempt at now, another one than prev
// when the picker offers one.
func (p *pool) pick(prev *discovery.Host, now time.Time) *discovery.Host {
	h := p.picker.Pick(now)
	if h == prev && prev != nil && len(p.hosts) > 1 {
		h = p.picker.Pick(now)
	}
	return h
}

// admit asks the route's breaker to let an attempt through. A refusal is
// recorded as the attempt's span event and returned as the CallError of
// layer breaker. c.host is the attempt's endpoint over HTTP, and the
// previous attempt's (nil at first) over gRPC, whose balancer picks after
// the breaker admitted the attempt.
func (c *call) admit(waited time.Duration) (resilience.Ticket, *CallError) {
	ticket, err := c.rt.breaker.Allow()
	if err != nil {
		endpoint := ""
		if c.host != nil {
			endpoint = c.host.Address
		}
		telemetry.AttemptEvent(c.span, c.attempts, endpoint, string(LayerBreaker), waited)
		return ticket, c.fail(LayerBreaker, err)
	}
	return ticket, nil
}

// settle reports how the attempt on c.host ended to the breaker (through
// its ticket) and to outlier detection, failed per resilience.IsFailure. A
// nil c.host (a gRPC attempt that picked no endpoint) reports to the
// breaker only. An attempt its caller canceled proves nothing: it releases
// its ticket and reports nothing to outlier detection, so that it neither
// closes a half-open breaker nor resets a host's failure streak.
func (c *call) settle(ticket resilience.Ticket, o resilience.Outcome) {
	if resilience.Neutral(o) {
		ticket.Release()
		return
	}
	failed := resilience.IsFailure(o)
	ticket.Done(failed)
	if c.host == nil {
		return
	}
	if hh := health(c.host); hh != nil {
		now := c.now
		if failed {
			now = c.m.clock.Now()
		}
		hh.Report(failed, now)
	}
}

// verdict is what follows an attempt.
type verdict uint8

const (
	verdictReturn verdict = iota // return the last attempt's outcome
	verdictBudget                // a retry was due but the retry budget refused it
	verdictRetry                 // back off, then try again
)

// next decides what follows an attempt that ended with out, at most
// maxAttempts being allowed. A retry withdraws its token from the budget
// here; a refusal is counted.
func (c *call) next(out resilience.Outcome, maxAttempts int) verdict {
	if c.attempts >= maxAttempts || !c.rt.retryOn.Match(out) || c.ctx.Err() != nil {
		return verdictReturn
	}
	if !c.rt.budget.TryWithdraw() {
		c.m.instr.RecordBudgetExhausted(c.ctx, c.d.name)
		return verdictBudget
	}
	return verdictRetry
}

// backoff returns the wait before the next attempt: the route's backoff
// (*bo is created on first use), or floor when longer (a server's hint such
// as Retry-After, 0 without one). ok is false when the wait is not to be
// waited, as hinted says.
func (c *call) backoff(bo **resilience.Backoff, floor time.Duration) (wait time.Duration, ok bool) {
	if *bo == nil {
		*bo = resilience.NewBackoff(c.rt.backoff)
	}
	return c.hinted(max((*bo).Next(), floor), floor)
}

// pushback returns the wait before the next attempt that a server fixed
// (gRPC's grpc-retry-pushback-ms): d exactly, in place of the backoff, whose
// progression restarts from its initial delay afterwards. ok is as hinted
// says.
func (c *call) pushback(bo **resilience.Backoff, d time.Duration) (wait time.Duration, ok bool) {
	*bo = nil
	return c.hinted(d, d)
}

// hinted returns wait, the wait before the next attempt after a server's
// hint of hint (0 without one), and whether to wait it. Not when the hint
// is longer than the route's backoff max: a server asking for more than the
// policy would ever wait gets its answer returned rather than a parked
// call. Nor when waiting would outlive the call's deadline. The last
// outcome is then the best the caller can get.
func (c *call) hinted(wait, hint time.Duration) (time.Duration, bool) {
	if hint > c.rt.backoff.MaxDelay() {
		return wait, false
	}
	if dl, has := c.ctx.Deadline(); has && c.m.clock.Now().Add(wait).After(dl) {
		return wait, false
	}
	return wait, true
}

// sleep waits d before the next attempt, which then starts. The end of the
// call's context during the wait is returned as ctxFailure says.
func (c *call) sleep(d time.Duration) error {
	if err := resilience.Sleep(c.ctx, c.m.clock, d); err != nil {
		return c.ctxFailure()
	}
	c.now = c.m.clock.Now()
	return nil
}

// countAttempts adds the call's attempts to its route's counter.
func (c *call) countAttempts() {
	if c.rt != nil {
		c.rt.counter.Add(int64(c.attempts))
	}
}

func noEndpoints(service, subset string) error {
	if subset == "" {
		return fmt.Errorf("service %q has no endpoints", service)
	}
	return fmt.Errorf("subset %q of service %q has no endpoints", subset, service)
}
