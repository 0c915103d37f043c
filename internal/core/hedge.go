package core

import (
	"context"
	"slices"
	"time"

	"github.com/inmesh/inmesh/discovery"
	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/resilience"
	"github.com/inmesh/inmesh/telemetry"
)

// Hedging, in Run: when the attempt in flight has not answered after the
// route's delay (or the quantile of its recent latency), the call sends
// another attempt to another endpoint, up to the hedge's max, each hedge
// paid for by a token of the retry budget. The first attempt whose outcome
// decides the call wins; the others are canceled, and settled as canceled:
// the breaker and outlier detection hear nothing of a loser.
//
// A failure of one attempt (one the breaker counts, or one retry_on
// names) while another is in flight does not decide the call: it is
// settled as any failure (the breaker and outlier detection hear of it),
// set aside, and the call waits for the others, which are its retries
// already. If they all fail, the last failure is the round's outcome and
// the retry policy decides on it as on any attempt's (a retry, within the
// route's attempts and the budget, is hedged again). Ending the call on
// the first failure would throw away the hedge's answer that the caller is
// waiting for; retrying at once beside the hedges would add load the hedge
// max does not bound.
//
// Every attempt of a hedged call runs on a goroutine of its own, the
// call's goroutine coordinating them: it alone touches the Call, starts
// the hedges when its timer fires, settles each attempt as it ends, and
// waits for every attempt before Run returns, so no goroutine outlives the
// call. Its cost over an unhedged call, when no hedge is sent: the timer,
// the channel, the goroutine of the first attempt, and the first attempt's
// own context when the route has no per-try timeout (a loser's must be
// canceled alone), with what that context costs its parent (a lazy
// Deadline under it is made) and the adapter (an HTTP body that ends it).

// flight is one attempt of a hedged call in flight, with its outcome.
type flight struct {
	a     Attempt
	o     Outcome
	stop  context.CancelFunc // ends a.Ctx (the Send may take a.cancel: this is the coordinator's copy)
	end   time.Time          // when Send returned
	hedge bool

	// The first attempt's own context, under a call's context with a
	// deadline: lazy, so that it costs nothing until someone waits on it
	// (a context.WithCancel would make the call's Deadline at once); and
	// its Cancel, bound once.
	own       Deadline
	cancelOwn context.CancelFunc
}

// hedging returns the route's hedging when this call may be hedged: the
// request can be sent again and may be (idempotent, or the hedge says
// non_idempotent), the adapter can have two attempts in flight, and the
// pool has another endpoint.
func (c *Call) hedging() *Hedge {
	h := c.Route.Hedge
	if h == nil || c.req.Single || !c.req.Replayable || (!c.req.Idempotent && !h.NonIdempotent) || len(c.Pool.Hosts) < 2 {
		return nil
	}
	return h
}

// observe records the latency of attempt a, which ended with o at end, in
// lt: an answer that is no failure (a failure's time says nothing of the
// route's latency, a canceled attempt's even less).
func (c *Call) observe(lt *resilience.LatencyTracker, a *Attempt, o *Outcome, end time.Time) {
	if o.NotSent || resilience.Neutral(o.Result) || resilience.IsFailure(o.Result) {
		return
	}
	lt.Record(end.Sub(a.Now), end)
}

// runHedged is Run for a call that may be hedged after delay.
func (c *Call) runHedged(s Sender, h *Hedge, delay time.Duration) (Outcome, error) {
	// Unbuffered (one allocation, where a buffer of pointers is a second):
	// the coordinator receives every flight before it returns.
	done := make(chan *flight)
	var (
		waited  time.Duration
		prev    Outcome // the round before a retry
		prevErr error
	)
	if c.first == nil {
		c.first = new(flight)
	}
	for {
		p := c.first
		if err := c.Begin(&p.a, waited); err != nil {
			if c.shed != nil && p.a.N > 1 {
				o, err := c.RetryShed(&prev, prevErr)
				if o.Answer == nil && prev.Answer != nil {
					s.Discard(prev.Answer)
				}
				return o, err
			}
			if prev.Answer != nil {
				s.Discard(prev.Answer)
			}
			return Outcome{}, err
		}
		if prev.Answer != nil {
			s.Discard(prev.Answer)
			prev.Answer = nil
		}
		f, err := c.round(s, h, delay, done, p)
		retry, res := c.Next(&f.o, err)
		if !retry {
			return f.o, res
		}
		wait, ok := c.Backoff(&f.o)
		if !ok {
			return f.o, c.NotWaited(&f.o, wait, err)
		}
		// The answer a retry supersedes is discarded once the retry has
		// its slot: a refused retry returns it (RetryShed), as Run does.
		prev, prevErr = f.o, err
		if err := c.Sleep(wait); err != nil {
			if prev.Answer != nil {
				s.Discard(prev.Answer)
			}
			return Outcome{}, err
		}
		waited = wait
	}
}

// round sends p, begun, and the hedges of it, and returns the flight that
// decides the round, settled, with the error Settle gave for it: the first
// that is not a failure while others are in flight (the others canceled),
// or the last.
func (c *Call) round(s Sender, h *Hedge, delay time.Duration, done chan *flight, p *flight) (*flight, error) {
	p.hedge = false
	if p.a.cancel == nil {
		if dl, has := c.Ctx.Deadline(); has && p.cancelOwn == nil {
			// The first round's only: a transport may still read an
			// earlier attempt's context when a retry starts.
			p.cancelOwn = p.own.Cancel
			p.own.Init(c.Ctx, dl)
			p.a.Ctx, p.a.cancel = &p.own, p.cancelOwn
		} else {
			p.a.Ctx, p.a.cancel = context.WithCancel(c.Ctx)
		}
	}
	p.stop = p.a.cancel
	var live [1 + maxHedges]*flight
	live[0], p.end = p, time.Time{}
	n, hedges := 1, 0
	c.launch(s, p, done)

	var timer clock.Timer
	var fire <-chan time.Time
	arm := func() {
		timer = c.env.Clock.NewTimer(delay)
		fire = timer.C()
	}
	arm()
	var aside *flight // the last failure set aside
	for {
		select {
		case <-fire:
			fire = nil
			if f := c.hedge(s, live[:n], delay, done); f != nil {
				live[n] = f
				n++
				if hedges++; hedges < h.Max {
					arm()
				}
			}
		case f := <-done:
			i := slices.Index(live[:n], f)
			n--
			live[i], live[n] = live[n], nil
			if h.Latency != nil {
				c.observe(h.Latency, &f.a, &f.o, f.end)
			}
			err := c.Settle(&f.a, &f.o)
			if n > 0 && setAside(c, &f.o) {
				if aside != nil && aside.o.Answer != nil {
					s.Discard(aside.o.Answer)
				}
				aside = f
				continue
			}
			if aside != nil && aside.o.Answer != nil {
				s.Discard(aside.o.Answer)
			}
			timer.Stop()
			c.cancelLosers(s, live[:n], done)
			if f.hedge && !f.o.NotSent && !resilience.Neutral(f.o.Result) && !setAside(c, &f.o) {
				c.env.Instr.RecordHedge(c.Ctx, c.Dest.Name, c.Route.Name, telemetry.HedgeWon)
			}
			return f, err
		}
	}
}

// setAside reports whether an attempt that ended with o, while others are
// in flight, waits for them rather than deciding the call: a failure that
// can be retried or that the breaker counts. A final outcome (a denial,
// the caller's cancellation) decides at once, as an answer does.
func setAside(c *Call, o *Outcome) bool {
	if o.NotSent {
		return true
	}
	return !o.Final && (resilience.IsFailure(o.Result) || c.Route.RetryOn.Match(o.Result))
}

// launch sends f's attempt on a goroutine of its own, which hands f to
// done when the Send returns.
func (c *Call) launch(s Sender, f *flight, done chan<- *flight) {
	go func() {
		f.o = s.Send(&f.a)
		f.end = c.env.Clock.Now()
		done <- f
	}()
}

// hedge starts a hedge of the attempts live, after delay, unless the call
// is over, no other endpoint is left, the breaker refuses it or the retry
// budget does (a refusal is counted and is a span event); nil when none
// was started.
func (c *Call) hedge(s Sender, live []*flight, delay time.Duration, done chan<- *flight) *flight {
	if c.Ctx.Err() != nil || len(c.Pool.Hosts) <= len(live) {
		return nil
	}
	now := c.env.Clock.Now()
	var host *discovery.Host
	if c.picks {
		var avoid [1 + maxHedges]*discovery.Host
		for i, f := range live {
			avoid[i] = f.a.Host
		}
		if c.hashed {
			host = c.Pool.PickAvoidingHash(c.hash, avoid[:len(live)], now)
		} else {
			host = c.Pool.PickAvoiding(avoid[:len(live)], now)
		}
		if host == nil {
			return nil
		}
	}
	// A hedge is worth sending only now: it takes a free concurrency slot
	// or is not sent (it never queues, and is no shed).
	permit, ok := c.Dest.Limiter.TryAcquire()
	if !ok {
		return nil
	}
	c.releaseVerdict()
	ticket, err := c.Route.Breaker.Allow()
	if err != nil {
		permit.Release()
		return nil
	}
	if !c.Route.Budget.TryWithdraw() {
		ticket.Release()
		permit.Release()
		c.env.Instr.RecordHedge(c.Ctx, c.Dest.Name, c.Route.Name, telemetry.HedgeRefused)
		telemetry.HedgeEvent(c.Span, c.Attempts+1, "", telemetry.HedgeRefused)
		return nil
	}
	c.Attempts++
	c.hedges++
	f := &flight{hedge: true}
	f.a = Attempt{Ctx: c.Ctx, N: c.Attempts, Host: host, Prev: c.Host, Pool: c.Pool, Now: now, Waited: delay,
		Hedge: true, call: c, ticket: ticket, permit: permit, retry: c.retriesLeft()}
	if pt := c.Route.Eff.PerTryTimeout; pt > 0 {
		f.a.Ctx, f.a.cancel = context.WithTimeout(c.Ctx, pt)
	} else {
		f.a.Ctx, f.a.cancel = context.WithCancel(c.Ctx)
	}
	f.stop = f.a.cancel
	c.env.Instr.RecordHedge(c.Ctx, c.Dest.Name, c.Route.Name, telemetry.HedgeSent)
	endpoint := ""
	if host != nil {
		endpoint = host.Address
	}
	telemetry.HedgeEvent(c.Span, f.a.N, endpoint, telemetry.HedgeSent)
	c.launch(s, f, done)
	return f
}

// cancelLosers cancels the attempts live, which lost, waits for each, and
// settles it as canceled: its ticket and concurrency slot released,
// nothing reported to the breaker, outlier detection or an adaptive limit
// whatever its outcome, its answer discarded.
func (c *Call) cancelLosers(s Sender, live []*flight, done <-chan *flight) {
	for _, f := range live {
		f.stop()
	}
	for range live {
		f := <-done
		f.a.ticket.Release()
		f.a.permit.Release()
		f.a.permit = resilience.Permit{}
		if f.a.cancel != nil {
			f.a.cancel()
			f.a.cancel = nil
		}
		if f.o.Answer != nil {
			s.Discard(f.o.Answer)
		}
		if c.Span != nil && c.Span.IsRecording() {
			h := f.a.Host
			if h == nil {
				h = f.o.Host
			}
			endpoint := ""
			if h != nil {
				endpoint = h.Address
			}
			telemetry.AttemptEvent(c.Span, f.a.N, endpoint, resilience.ErrCanceled.String(), f.a.Waited)
		}
	}
}
