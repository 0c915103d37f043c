package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Env is what every call of one mesh shares. It is set up once and not
// modified afterwards.
type Env struct {
	Clock clock.Clock
	Log   *slog.Logger
	Instr *telemetry.Instruments
	// Err returns the error callers get for ce: package mesh's *CallError,
	// converted without a copy (for package meshgrpc, wrapped in the error
	// that is also its gRPC status).
	Err func(ce *CallError) error
	// Rand returns uniform draws in [0, 1) for the fault block's
	// percentages; nil means math/rand/v2's Float64. Safe for concurrent
	// use.
	Rand func() float64
	// Failures rate-limits the log records of failed calls (LogFailure);
	// nil logs every one.
	Failures *FailureLog
}

// Request is what the core reads of a call: what the route match sees and
// whether the call may be sent more than once.
type Request struct {
	Path   string // the URL path, or an RPC's full method
	Method string // the HTTP method ("" is GET); POST for an RPC
	Header Header // nil: no headers
	// RawQuery is the URL's query, as sent (undecoded); "" for an RPC.
	// It is read only by a route with query_param conditions.
	RawQuery string
	RPC      bool // a gRPC call: errors name "RPC <full method>"
	// Replayable is set when the request can be sent again (its body can
	// be replayed); Idempotent when sending it twice is safe, as net/http
	// decides it. A route that does not say non_idempotent retries only
	// idempotent calls. gRPC sets both: every RPC is retried as the policy
	// says, as grpc-go's own retries (gRFC A6) do. Hedging asks the same.
	Replayable, Idempotent bool
	// Single is set when the adapter cannot have two attempts of the call
	// in flight at once (a gRPC reply it cannot copy): it is never hedged.
	Single bool
	// Stream is set for a streaming RPC: its attempts last as long as the
	// stream, so their durations say nothing of the destination's latency
	// and an adaptive concurrency limit does not learn from them.
	Stream bool
}

// what names the request in a route error.
func (r *Request) what() string {
	if r.RPC {
		return "RPC " + r.Path
	}
	return r.Method + " " + r.Path
}

// Call is one logical call through the mesh, protocol-free: the route, the
// split, the call's deadline, the attempts with their breaker admission,
// per-try deadline, reports to breaker and outlier detection, backoff and
// retry budget, and the CallError. An adapter (HTTP round tripper, gRPC
// interceptor) embeds it, calls Init, Start and Run (or, for a gRPC
// stream, the steps of Run one by one: Begin, Settle, Next, Backoff,
// Sleep), and Finish; it sends each attempt itself (Sender).
//
// A Call belongs to one goroutine at a time; the adapter serializes the
// steps it takes from several (a stream's).
//
// A concurrency slot is taken per attempt, in Begin, and given back in
// Settle, so that retries and hedges count against the limit. Fault
// injection is decided in Start. Hedging is Run's (hedge.go): more
// attempts while the first is in flight, the losers settled as canceled.
type Call struct {
	env   *Env
	Dest  *Destination
	Route *Route      // the matched route, nil when none matches
	Entry *SplitEntry // the subset the split chose, nil without a split
	Pool  *Pool       // the hosts of the chosen subset
	Span  trace.Span
	// Ctx is the call's context: the caller's bounded by the route's
	// timeout. An adapter may replace it with one that carries more values
	// (gRPC's outgoing trace context) after Start.
	Ctx      context.Context
	dl       Deadline // Ctx, when the route has a timeout
	Attempts int
	Host     *discovery.Host // the last attempt's endpoint
	Now      time.Time       // the start of the call, then of the current attempt
	// PolicyVersion is the version of the policy the call's destination
	// was read from, for its errors: the adapter sets it after Init.
	PolicyVersion string

	req    Request
	max    int32 // attempts allowed (at most 10), hedges not counted
	hedges int32 // the hedged attempts among Attempts
	picks  bool  // the core picks each attempt's endpoint
	ends   bool  // Finish ends dl (KeepContext not called)
	bo     *resilience.Backoff
	att    Attempt // Run's attempt
	// first is a hedged Run's first attempt of each round, made by the
	// first hedged Run: held by pointer, so that the call of an unhedged
	// route (nearly every call, and on the heap) is the smaller by a flight.
	first *flight
	// shed is the concurrency limit's refusal of the last Begin, nil when
	// it admitted the attempt.
	shed error
	// verdict is the ticket of the last settled attempt, for a rate
	// breaker, which hears of a call once, in Finish (holdVerdict).
	verdict       resilience.Ticket
	verdictFailed bool
	// hash is the request's hash for a consistent-hash load balancer,
	// when hashed (Start computes it, for a route with hash policies).
	hash   uint64
	hashed bool
}

// Hash returns the request's hash for a ring_hash or maglev pool, and
// false when the call has none (its route has no hash policy, or none
// produced a value: the balancer then picks at random).
func (c *Call) Hash() (uint64, bool) { return c.hash, c.hashed }

// Init starts a call of req toward d: it finds the route. picks says
// whether the core picks each attempt's endpoint (HTTP) or the adapter's
// balancer does (gRPC: Attempt.Host is nil, Outcome.Host says where it
// went).
func (c *Call) Init(env *Env, d *Destination, req Request, picks bool) {
	c.env, c.Dest, c.req, c.picks = env, d, req, picks
	c.Now = env.Clock.Now()
	c.Route = d.Lookup(&c.req)
}

// RouteName is the matched route's name, "" without a match.
func (c *Call) RouteName() string {
	if c.Route == nil {
		return ""
	}
	return c.Route.Name
}

// SubsetName is the subset the split chose, "" before or without a split:
// "service/subset" for another service's, "v2 (failover from v1)" when the
// call failed over (SplitEntry.Failover).
func (c *Call) SubsetName() string {
	if c.Entry == nil || c.Pool == nil {
		return ""
	}
	return c.Pool.Label
}

// Fail returns the error of this call failed at layer for cause err.
func (c *Call) Fail(layer Layer, err error) error {
	ce := &CallError{
		Layer:         layer,
		Service:       c.Dest.Name,
		Route:         c.RouteName(),
		Subset:        c.SubsetName(),
		Attempts:      c.Attempts,
		PolicyVersion: c.PolicyVersion,
		Err:           err,
	}
	if c.Host != nil {
		ce.Endpoint = c.Host.Address
	}
	return c.env.Err(ce)
}

// Start readies the call to send, in ctx (the caller's, with the call's
// span): it fails with layer route without a route, chooses the subset
// (layer discovery when it has no endpoint), bounds ctx by the route's
// timeout (the shorter of it and the caller's deadline wins), injects the
// route's fault (a delay, within that deadline; an abort, layer fault),
// and deposits the call in the retry budget when the route retries.
func (c *Call) Start(ctx context.Context, span trace.Span) error {
	c.Ctx, c.Span = ctx, span
	rt := c.Route
	if rt == nil {
		return c.Fail(LayerRoute, fmt.Errorf("no route of service %q matches %s", c.Dest.Name, c.req.what()))
	}
	c.Pool = rt.All
	if len(rt.Split) > 0 {
		c.Entry = rt.PickSplit(rand.IntN(rt.Total))
		c.Pool = c.Entry.Pool
		if c.Entry.Failover != nil {
			if c.Pool = c.Entry.Choose(c.Now); c.Pool == nil {
				c.Pool = c.Entry.Pool
				return c.Fail(LayerDiscovery, noFailover(c.Dest.Name, c.Entry))
			}
		}
	}
	if len(c.Pool.Hosts) == 0 {
		return c.Fail(LayerDiscovery, noEndpoints(c.Dest.Name, c.Pool))
	}
	if rt.Hash != nil {
		c.hash, c.hashed = rt.Hash.Hash(&c.req)
	}
	if rt.Eff.Timeout > 0 {
		// Contexts run on the real time. With the system clock, the
		// call's start (c.Now, read in Init) is that time: what
		// context.WithTimeout would give, without reading it again.
		now := c.Now
		if _, real := c.env.Clock.(clock.System); !real {
			now = time.Now()
		}
		c.dl.Init(ctx, now.Add(rt.Eff.Timeout))
		c.Ctx, c.ends = &c.dl, true
	}
	if rt.Fault != nil {
		if err := c.injectFault(rt.Fault); err != nil {
			return err
		}
	}
	c.max = int32(rt.MaxAttempts(&c.req))
	if rt.Budget != nil { // retries or hedges
		rt.Budget.DepositAt(c.Now)
	}
	return nil
}

// KeepContext hands the end of the call's context (the route's timeout)
// to the adapter, which then calls EndContext once: an HTTP answer keeps
// the call's deadline until its body is closed. It reports false, and
// takes nothing, when the call has no context of its own.
func (c *Call) KeepContext() bool {
	kept := c.ends
	c.ends = false
	return kept
}

// EndContext ends the call's context, which KeepContext handed over.
func (c *Call) EndContext() { c.dl.Cancel() }

// Finish ends the call: it counts its attempts toward the route and
// cancels its context unless KeepContext took it.
func (c *Call) Finish() {
	if c.Route != nil {
		c.Route.Counter.Add(int64(c.Attempts))
	}
	c.verdict.Done(c.verdictFailed)
	c.verdict = resilience.Ticket{}
	if c.ends {
		c.dl.Cancel()
		c.ends = false
	}
}

// ContextFailure turns the end of the call's context into the caller's
// error: a deadline is a mesh timeout, a cancellation is the caller's own.
func (c *Call) ContextFailure() error {
	err := c.Ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return c.Fail(LayerTimeout, namedDeadline(c.deadlineName(), err))
	}
	return err
}

// Attempt is one try of a call. The core fills it in Begin; the adapter
// sends it and says how it ended in an Outcome. Several attempts of one
// call may be in flight at once, each with its own context and breaker
// ticket: a hedge (Hedge set) beside the attempt it hedges.
type Attempt struct {
	Ctx    context.Context // the call's context, bounded by the per-try timeout
	N      int             // 1 for the first attempt
	Host   *discovery.Host // the endpoint the core picked; nil when the adapter's balancer picks
	Prev   *discovery.Host // the previous attempt's endpoint, which a balancer avoids when it can
	Pool   *Pool           // the hosts the attempt may go to
	Now    time.Time       // when the attempt starts
	Waited time.Duration   // the wait before it (a hedge's: its delay)
	// Hedge is set for a hedge: other attempts of the call are in flight
	// while it is, so the adapter sends it with storage of its own (not the
	// call's), and a balancer that picks avoids the endpoints of the
	// call's attempts in flight (the core picks another than theirs).
	Hedge bool

	call   *Call
	ticket resilience.Ticket
	permit resilience.Permit // the concurrency slot; zero without a limit
	cancel context.CancelFunc
	retry  bool // attempts were left for a retry when it began (MayRetry reads no Call field a hedge changes)
}

// TakeCancel returns the cancel of the attempt's own context (nil without a
// per-try timeout), which the caller then owns: an HTTP answer keeps the
// attempt's deadline until its body is closed. Otherwise Settle cancels it.
func (a *Attempt) TakeCancel() context.CancelFunc {
	cancel := a.cancel
	a.cancel = nil
	return cancel
}

// Ended says how the contexts of the attempt ended, if one did: the call's
// deadline (a timeout) or its cancellation by the caller (kind
// ErrCanceled, layer ""), else the attempt's own deadline (a per-try
// timeout) or its cancellation by the core (a hedge that lost: canceled).
func (a *Attempt) Ended() (kind resilience.ErrKind, layer Layer, ended bool) {
	if err := a.call.Ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return resilience.ErrTimeout, LayerTimeout, true
		}
		return resilience.ErrCanceled, "", true
	}
	if err := a.Ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return resilience.ErrTimeout, LayerTimeout, true
		}
		return resilience.ErrCanceled, "", true
	}
	return resilience.ErrNone, "", false
}

// Expired reports whether the attempt's deadline (its own or the call's)
// has passed, whether or not its timer has fired yet.
func (a *Attempt) Expired() bool {
	dl, ok := a.Ctx.Deadline()
	return ok && time.Until(dl) <= 0
}

// PerTry reports whether the deadline that bounds the attempt is its
// per_try_timeout, not the call's: time may be left for a retry.
func (a *Attempt) PerTry() bool {
	return a.call.Route.Eff.PerTryTimeout > 0 && !earlierDeadline(a.call.Ctx, a.Ctx)
}

// Deadline names the deadline that bounds the attempt: "per_try_timeout",
// "the route's timeout" or "the caller's deadline".
func (a *Attempt) Deadline() string {
	if a.PerTry() {
		return "per_try_timeout"
	}
	return a.call.deadlineName()
}

// deadlineName names the deadline that bounds the call: "the route's
// timeout" or "the caller's deadline".
func (c *Call) deadlineName() string {
	// dl.parent: Ctx before the route's timeout bounded it.
	if c.Route != nil && c.Route.Eff.Timeout > 0 && !earlierDeadline(c.dl.parent, c.Ctx) {
		return "the route's timeout"
	}
	return "the caller's deadline"
}

// DeadlineError is the cause of a CallError of layer timeout: it says which
// deadline passed (per_try_timeout, the route's timeout, the caller's
// deadline), and whether it passed at the destination, whose Handler
// answered before the application did. errors.Is(err,
// context.DeadlineExceeded) holds.
type DeadlineError struct {
	Which  string
	Remote bool
	Err    error // context.DeadlineExceeded, or what the transport said
}

func (e *DeadlineError) Error() string {
	if e.Remote {
		return fmt.Sprintf("%v: %s passed at the destination (its Handler's copy of the propagated deadline) before the application answered", e.Err, e.Which)
	}
	return fmt.Sprintf("%s passed: %v", e.Which, e.Err)
}

// Unwrap returns the cause.
func (e *DeadlineError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, context.DeadlineExceeded) hold whatever the
// transport wrapped.
func (e *DeadlineError) Is(target error) bool { return target == context.DeadlineExceeded }

// namedDeadline returns err as a DeadlineError naming which, unless it is
// one already.
func namedDeadline(which string, err error) error {
	var de *DeadlineError
	if errors.As(err, &de) {
		return err
	}
	return &DeadlineError{Which: which, Err: err}
}

// MayRetry reports whether the policy lets an attempt that ended with
// result be retried, attempts left and retry_on matching; the adapter uses
// it to skip reading a server's hint that cannot matter.
func (a *Attempt) MayRetry(result resilience.Outcome) bool {
	return a.retry && a.call.Route.RetryOn.Match(result)
}

// retriesLeft reports whether attempts are left for a retry: hedges do not
// count against the route's attempts (a hedge is a bet on another
// endpoint, bounded by its max and the budget, not a retry).
func (c *Call) retriesLeft() bool { return c.Attempts-int(c.hedges) < int(c.max) }

// earlierDeadline reports whether a has a deadline no later than b's.
func earlierDeadline(a, b context.Context) bool {
	da, ok := a.Deadline()
	if !ok {
		return false
	}
	db, ok := b.Deadline()
	return !ok || !da.After(db)
}

// HintKind is what a server's hint asks of the next retry.
type HintKind uint8

const (
	HintNone    HintKind = iota // the route's backoff
	HintAtLeast                 // wait at least Wait (HTTP Retry-After), the backoff going on
	HintExactly                 // wait Wait exactly (gRPC pushback); the backoff restarts after it
	HintStop                    // do not retry (a gRPC pushback that is negative or malformed)
)

// Hint is a server's say on the retry of its failed attempt.
type Hint struct {
	Kind HintKind
	Wait time.Duration
}

// Outcome is how an attempt ended, as its adapter classified it.
type Outcome struct {
	// Result is what retry_on, the breaker and outlier detection read.
	Result resilience.Outcome
	// Layer is set for a failure of the mesh or the network, which the
	// caller gets as a CallError of that layer with cause Err. "" for an
	// answer of the destination and the caller's cancellation, where Err
	// is returned as is (a gRPC status, the context's error; nil for an
	// HTTP answer or gRPC OK).
	Layer Layer
	Err   error
	Final bool // never retried, whatever the policy says
	// NotSent is set when the attempt never left (its request could not
	// be built): it proves nothing about the destination.
	NotSent bool
	Hint    Hint
	Host    *discovery.Host // the endpoint the attempt went to (or tried); nil when none was picked
	// Answer is the adapter's answer (an *http.Response), given back to
	// Sender.Discard when a retry supersedes it.
	Answer any
}

// Overloaded reports whether the attempt's answer says that the
// destination is up but sheds load (resilience.Overloaded, with the
// server's hint to wait: a Retry-After or a pushback of a delay): HTTP 429,
// gRPC ResourceExhausted, a 503 or Unavailable with the hint. Settle
// counts it as neither failure nor success for the breaker and outlier
// detection; a concurrency limit counts it as a drop.
func (o *Outcome) Overloaded() bool {
	return resilience.Overloaded(o.Result, o.Hint.Kind == HintAtLeast || o.Hint.Kind == HintExactly)
}

// Sender sends the attempts of a call: "send this attempt, tell me how it
// ended". Send may be called again after Discard; with hedging, for two
// attempts at once.
type Sender interface {
	Send(a *Attempt) Outcome
	// Discard releases answer, the Answer of an outcome that a retry
	// supersedes.
	Discard(answer any)
}

// Begin starts attempt a (storage the caller provides) after a wait of
// waited: it takes a slot of the destination's concurrency limit (queueing
// up to its max_wait, within the call's deadline), picks the endpoint when
// the core picks, asks the route's breaker, and bounds the attempt's
// context by the per-try timeout. The error, a CallError of layer
// overload, discovery or breaker (or the end of the call's context while
// queued, as ContextFailure says), ends the call; see RetryShed for a
// refused retry.
func (c *Call) Begin(a *Attempt, waited time.Duration) error {
	c.Attempts++
	c.shed = nil
	*a = Attempt{Ctx: c.Ctx, N: c.Attempts, Prev: c.Host, Pool: c.Pool, Now: c.Now, Waited: waited, call: c, retry: c.retriesLeft()}
	if l := c.Dest.Limiter; l != nil {
		p, err := l.Acquire(c.Ctx)
		if err != nil {
			if _, shed := err.(*resilience.OverloadError); !shed {
				return c.ContextFailure() // the call's context ended in the queue
			}
			// Never sent: the breaker and outlier detection hear nothing.
			c.shed = err
			c.Dest.Shed.Add(1)
			c.event(a, string(LayerOverload))
			return c.Fail(LayerOverload, err)
		}
		if p.Queued() {
			c.Now = c.env.Clock.Now()
			a.Now = c.Now
		}
		a.permit = p
	}
	if c.picks {
		if c.Entry != nil && c.Entry.Failover != nil && a.N > 1 && !c.Pool.available(c.Now) {
			// The hosts went unavailable since the call started: a
			// retry fails over too.
			if p := c.Entry.Choose(c.Now); p != nil {
				c.Pool, a.Pool = p, p
			}
		}
		if c.hashed {
			c.Host = c.Pool.PickHash(c.hash, c.Host, c.Now)
		} else {
			c.Host = c.Pool.Pick(c.Host, c.Now)
		}
		if c.Host == nil {
			a.permit.Release()
			return c.Fail(LayerDiscovery, noEndpoints(c.Dest.Name, c.Pool))
		}
		a.Host = c.Host
	}
	c.releaseVerdict()
	ticket, err := c.Route.Breaker.Allow()
	if err != nil {
		a.permit.Release()
		// c.Host is the attempt's endpoint when the core picks, else the
		// previous attempt's (nil at first): the balancer picks after the
		// breaker admitted the attempt.
		c.event(a, string(LayerBreaker))
		return c.Fail(LayerBreaker, err)
	}
	a.ticket = ticket
	if pt := c.Route.Eff.PerTryTimeout; pt > 0 {
		a.Ctx, a.cancel = context.WithTimeout(c.Ctx, pt)
	}
	return nil
}

// holdVerdict keeps the ticket of an attempt that ended, failed or not,
// for a rate breaker: the call's last settled attempt reports in Finish,
// and an earlier one gives its ticket back unreported when a later one
// begins (releaseVerdict), so that the breaker's window counts calls as
// their callers saw them, a failure that a retry repaired not at all, a
// call that failed after three attempts once. A failed probe of a
// breaker that is not closed reports at once instead (Settle): it
// reopens the breaker before the call's retries, or other calls, probe
// again.
func (c *Call) holdVerdict(t resilience.Ticket, failed bool) {
	c.verdict.Release()
	c.verdict, c.verdictFailed = t, failed
}

// releaseVerdict gives back the ticket holdVerdict kept, before another
// attempt asks the breaker: a half-open breaker's probe slot is free for
// it.
func (c *Call) releaseVerdict() {
	c.verdict.Release()
	c.verdict = resilience.Ticket{}
}

// Settle records how attempt a ended: its endpoint becomes the call's, its
// concurrency slot is given back (with what an adaptive limit learns from
// it: see limitReport), the breaker (through the attempt's ticket) and
// outlier detection hear of it
// (failed per resilience.IsFailure; an attempt its caller canceled, or
// that was never sent, proves nothing: it releases its ticket and reports
// nothing, so that it neither closes a half-open breaker nor resets a
// host's failure streak; so does an answer that says the destination sheds
// load, Outcome.Overloaded), the span gets its event, and the attempt's
// context ends unless the adapter took it. It returns the error the caller
// gets if this attempt is the last.
func (c *Call) Settle(a *Attempt, o *Outcome) error {
	if c.picks {
		o.Host = a.Host
	}
	c.Host = o.Host
	if a.permit != (resilience.Permit{}) {
		c.limitReport(a, o)
	}
	if o.NotSent || resilience.Neutral(o.Result) || o.Overloaded() {
		a.ticket.Release()
	} else {
		failed := resilience.IsFailure(o.Result)
		if b := c.Route.Breaker; b.CountsCalls() && (!failed || b.Closed()) {
			c.holdVerdict(a.ticket, failed)
		} else {
			a.ticket.Done(failed)
		}
		if o.Host != nil {
			if hh := Health(o.Host); hh != nil {
				now := a.Now
				if failed {
					now = c.env.Clock.Now()
				}
				hh.Report(failed, now)
			}
		}
	}
	if !o.NotSent && c.Span != nil && c.Span.IsRecording() {
		c.event(a, label(o))
	}
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
	if o.Layer == LayerTimeout {
		o.Err = namedDeadline(a.Deadline(), o.Err)
	}
	if o.Layer != "" {
		return c.Fail(o.Layer, o.Err)
	}
	return o.Err
}

// limitReport gives attempt a's concurrency slot back. An adaptive limit
// learns the round-trip time of an answer, and takes an overload answer
// (resilience.IsDrop: 503, 429, gRPC Unavailable or ResourceExhausted,
// a timeout) as a drop. It learns nothing from an attempt that proves
// nothing (canceled by its caller, never sent), from a failure that says
// nothing of the destination's load (connect, reset, TLS, another server
// error, whose fast answers would pass for a low latency), nor from a
// stream's attempt.
func (c *Call) limitReport(a *Attempt, o *Outcome) {
	p := a.permit
	a.permit = resilience.Permit{}
	switch r := o.Result; {
	case o.NotSent || resilience.Neutral(r) || c.req.Stream || !c.Dest.Limiter.Adaptive():
		p.Release()
	case resilience.IsDrop(r):
		p.Done(0, true)
	case resilience.IsFailure(r):
		p.Release()
	default:
		p.Done(clock.Since(c.env.Clock, a.Now), false)
	}
}

// RetryShed returns what the caller gets when the concurrency limit
// refused the retry (Begin's error is layer overload, Shed reports true)
// of the attempt that ended with o, err being Settle's error for it: as
// for a refused retry budget, an answer is returned as is (o, err);
// otherwise the call fails at layer overload, naming the last attempt's
// error.
func (c *Call) RetryShed(o *Outcome, err error) (Outcome, error) {
	if o.Result.Err == resilience.ErrNone {
		return *o, err
	}
	return Outcome{}, c.Fail(LayerOverload, fmt.Errorf("%w; last attempt: %w", c.shed, err))
}

// Shed reports whether the concurrency limit refused the last Begin.
func (c *Call) Shed() bool { return c.shed != nil }

// label is the outcome of an attempt in its span event: the layer of a
// mesh failure, else the HTTP status or gRPC code, or "canceled".
func label(o *Outcome) string {
	switch {
	case o.Layer != "":
		return string(o.Layer)
	case o.Result.Err != resilience.ErrNone:
		return o.Result.Err.String()
	case o.Result.IsGRPC:
		return o.Result.GRPCCode.String()
	}
	return strconv.Itoa(o.Result.HTTPStatus)
}

// event records attempt a's span event with outcome.
func (c *Call) event(a *Attempt, outcome string) {
	endpoint := ""
	if c.Host != nil {
		endpoint = c.Host.Address
	}
	telemetry.AttemptEvent(c.Span, a.N, endpoint, outcome, a.Waited)
}

// MayRetry reports whether an attempt that ended with o can be followed by
// another: it is not final, its server did not forbid it, attempts are
// left and retry_on matches. The call's context and the budget are
// Next's to check.
func (c *Call) MayRetry(o *Outcome) bool {
	return !o.Final && o.Hint.Kind != HintStop && c.retriesLeft() && c.Route.RetryOn.Match(o.Result)
}

// Next decides whether the attempt that ended with o, whose error for the
// caller is err (Settle's), is retried. When not, res is what the caller
// gets: err, or a CallError of layer budget when the budget refused the
// retry of an attempt that got no answer (an answer is returned as is). A
// retry withdraws its token from the budget here; a refusal is counted and
// is an event on the call's span.
func (c *Call) Next(o *Outcome, err error) (retry bool, res error) {
	if !c.MayRetry(o) || c.Ctx.Err() != nil {
		return false, err
	}
	if !c.Route.Budget.TryWithdraw() {
		c.env.Instr.RecordBudgetExhausted(c.Ctx, c.Dest.Name)
		if c.Span != nil && c.Span.IsRecording() {
			telemetry.BudgetEvent(c.Span, c.Attempts+1, label(o))
		}
		if o.Result.Err == resilience.ErrNone {
			return false, err
		}
		return false, c.Fail(LayerBudget, fmt.Errorf("retry budget exhausted; last attempt: %w", err))
	}
	return true, nil
}

// Backoff returns the wait before the retry of the attempt that ended with
// o, and whether to wait it at all (else its outcome is returned, see
// NotWaited). The wait is the route's backoff, or the server's hint when
// longer (at least, as Retry-After), or the hint exactly (gRPC pushback,
// after which the backoff starts over). The rule for a hint: one longer
// than the route's backoff max is not waited (a server asking for more
// than the policy would ever wait gets its answer returned rather than a
// parked call), nor is a wait that would outlive the call's deadline.
//
// One exception: the refusal of the destination's rate limit (layer
// rate_limit, believed from a verified peer only) says when its token is
// there, and a retry before then is refused again. Its hint is waited
// whatever the backoff max, provided the wait ends before the call's
// deadline; otherwise the call fails at once.
func (c *Call) Backoff(o *Outcome) (wait time.Duration, ok bool) {
	h := o.Hint
	switch h.Kind {
	case HintStop:
		return 0, false
	case HintExactly:
		c.bo = nil
		wait = h.Wait
	default:
		if c.bo == nil {
			c.bo = resilience.NewBackoff(c.Route.Backoff)
		}
		wait = max(c.bo.Next(), h.Wait)
	}
	if h.Wait > c.Route.Backoff.MaxDelay() && o.Layer != LayerRateLimit {
		return wait, false
	}
	if dl, has := c.Ctx.Deadline(); has && c.env.Clock.Now().Add(wait).After(dl) {
		return wait, false
	}
	return wait, true
}

// NotWaited returns the error the caller gets when the retry of the
// attempt that ended with o is not waited (Backoff said so): err, its
// error, or for a rate limit's refusal (layer rate_limit) the same failure
// saying that its wait would end past the call's deadline.
func (c *Call) NotWaited(o *Outcome, wait time.Duration, err error) error {
	if o.Layer != LayerRateLimit || o.Hint.Kind == HintStop {
		return err
	}
	return c.Fail(LayerRateLimit, fmt.Errorf("%w; not retried: waiting %v for the retry would end past the call's deadline", o.Err, wait))
}

// Sleep waits d before the next attempt, which then starts. The end of the
// call's context during the wait is returned as ContextFailure says.
func (c *Call) Sleep(d time.Duration) error {
	if err := resilience.Sleep(c.Ctx, c.env.Clock, d); err != nil {
		return c.ContextFailure()
	}
	c.Now = c.env.Clock.Now()
	return nil
}

// Run makes the attempts of a started call through s until one is not
// retried, and returns its outcome and the error the caller gets (nil for
// an answer, which the outcome then holds). On a route that hedges, a
// call that may be hedged sends its attempts from goroutines of its own,
// which Run waits for (runHedged).
//
// With a concurrency limit, the answer a retry supersedes is discarded
// once the retry has its slot, not before the backoff: a refused retry
// returns it (RetryShed).
func (c *Call) Run(s Sender) (Outcome, error) {
	if h := c.hedging(); h != nil {
		if delay, ok := h.delay(c.Now); ok {
			return c.runHedged(s, h, delay)
		}
	}
	var (
		waited  time.Duration
		prev    Outcome // the attempt before a retry
		prevErr error
		held    bool // prev.Answer is not discarded yet
	)
	for {
		a := &c.att
		if err := c.Begin(a, waited); err != nil {
			if c.shed != nil && a.N > 1 {
				return c.RetryShed(&prev, prevErr)
			}
			if held {
				s.Discard(prev.Answer)
			}
			return Outcome{}, err
		}
		if held {
			s.Discard(prev.Answer)
			held = false
		}
		o := s.Send(a)
		if h := c.Route.Hedge; h != nil && h.Latency != nil {
			c.observe(h.Latency, a, &o, c.env.Clock.Now())
		}
		err := c.Settle(a, &o)
		retry, res := c.Next(&o, err)
		if !retry {
			return o, res
		}
		wait, ok := c.Backoff(&o)
		if !ok {
			return o, c.NotWaited(&o, wait, err)
		}
		if o.Answer != nil {
			if c.Dest.Limiter != nil {
				held = true
			} else {
				s.Discard(o.Answer)
			}
		}
		prev, prevErr = o, err
		if err := c.Sleep(wait); err != nil {
			if held {
				s.Discard(prev.Answer)
			}
			return Outcome{}, err
		}
		waited = wait
	}
}
