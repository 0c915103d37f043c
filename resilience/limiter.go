package resilience

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// ErrOverload is wrapped by the error of [Limiter.Acquire] when the limiter
// refuses an attempt: the destination has as many attempts in flight as
// its concurrency limit allows, and no slot freed within MaxWait.
var ErrOverload = errors.New("resilience: concurrency limit reached")

// OverloadError is the error of a refused [Limiter.Acquire]. It wraps
// [ErrOverload].
type OverloadError struct {
	Name    string        // the limiter's destination
	Limit   int           // its limit when it refused
	MaxWait time.Duration // how long the attempt queued; 0: refused at once
}

// Error names the destination, its limit and the wait.
func (e *OverloadError) Error() string {
	if e.MaxWait > 0 {
		return fmt.Sprintf("%v: %q has its limit of %d attempts in flight, and no slot freed within max_wait %v",
			ErrOverload, e.Name, e.Limit, e.MaxWait)
	}
	return fmt.Sprintf("%v: %q has its limit of %d attempts in flight", ErrOverload, e.Name, e.Limit)
}

// Unwrap returns ErrOverload.
func (e *OverloadError) Unwrap() error { return ErrOverload }

// LimiterConfig configures a [Limiter]: a fixed limit of Max attempts in
// flight, or, with Adaptive, a limit learned within [Min, Max] starting at
// Initial. An attempt that finds no free slot queues up to MaxWait for one
// (0: it is refused at once). Zero or out-of-range fields are brought into
// range: Max and Min at least 1, Min at most Max, Initial within Min..Max
// (Min when 0). It is comparable, a key of the limiters kept across policy
// reloads.
type LimiterConfig struct {
	Max          int
	Adaptive     bool
	Min, Initial int
	MaxWait      time.Duration
}

// maxLimit bounds every limit: the in-flight count has 32 bits of the
// limiter's word.
const maxLimit = 1 << 30

// Limiter caps the attempts in flight to one destination. Acquire takes a
// slot, a Permit gives it back. A slot that is free is taken with one
// compare-and-swap, without a lock or an allocation. When every slot is
// taken and MaxWait is set, attempts queue, first come first served: a slot
// that frees goes to the oldest waiter, never to a newcomer, and a waiter
// that has not been given one within MaxWait (or whose context ends) leaves
// the queue. The queue takes the limiter's lock, which no admitted attempt
// ever waits on.
//
// An adaptive Limiter learns the destination's capacity from its attempts'
// round-trip times and overload answers (see [Permit.Done]):
//
//   - Samples are aggregated with atomics into windows. A window closes
//     when it holds enough samples and has lasted long enough (at least
//     twice the no-load latency), or at once on a drop; the goroutine whose
//     report closes it computes the new limit (under a TryLock no one
//     waits on: a report that finds it taken goes on).
//   - Latency (a gradient, after Netflix's Gradient2 and Envoy's gradient
//     controller): the no-load latency is the lowest window average seen.
//     While a window's average stays within 10% of it, the limit grows by
//     √limit/4 (by a fifth of that near the level of the last drop, which
//     it probes slowly); it does not grow while fewer than half of its
//     slots are in use, since idle slots say nothing of the capacity. When
//     latency rises above that, a queue formed: the limit moves a quarter
//     of the way toward gradient × limit, the gradient being no-load over
//     the window's latency (at least 0.5). When latency stays as high over
//     5 windows in a row while the limit shrinks, the latency is the
//     destination's own (it became slower), and becomes the no-load one.
//     A limit that starts far above a queueing destination's capacity
//     takes the latency it finds as the no-load one: it is learned from
//     below, or from drops.
//   - Drops (a multiplicative decrease, after AIMD and TCP): a destination
//     that sheds its excess load answers it at once (HTTP 503 or 429, gRPC
//     Unavailable or ResourceExhausted) and its latency never rises; a drop
//     lowers the limit to 0.9 × the attempts that were in flight, at once.
//     Only the first drop of the attempts admitted since the last decrease
//     counts, so a burst of drops from one round of attempts decreases
//     once.
//
// A Limiter is safe for concurrent use. A nil *Limiter admits every
// attempt.
type Limiter struct {
	name    string
	clk     clock.Clock
	maxWait time.Duration

	// word holds the attempts in flight (low 32 bits) and the waiters
	// (high 32 bits). With waiters, a slot that frees goes to the oldest,
	// under mu; without, slots are taken and given back by CAS alone.
	word  atomic.Uint64
	limit atomic.Int64
	// refusal is the error of the last refusal, reused while the limit
	// stays the same: a refusal allocates nothing.
	refusal atomic.Pointer[OverloadError]

	mu         sync.Mutex // the queue
	head, tail *waiter

	ad *adaptive // nil for a fixed limit
}

// waiter is one attempt in the queue. Only the goroutine holding l.mu
// links, unlinks and grants it; a granted waiter's ready has its one value.
type waiter struct {
	ready      chan struct{} // buffered: a grant never blocks
	prev, next *waiter
	queued     bool
}

var waiters = sync.Pool{New: func() any { return &waiter{ready: make(chan struct{}, 1)} }}

const waiterOne = 1 << 32

// NewLimiter returns a limiter for the destination name, as cfg says,
// reading time from clk (nil: clock.System) to measure windows and waits.
func NewLimiter(name string, cfg LimiterConfig, clk clock.Clock) *Limiter {
	if clk == nil {
		clk = clock.System{}
	}
	hi := min(max(cfg.Max, 1), maxLimit)
	l := &Limiter{name: name, clk: clk, maxWait: max(cfg.MaxWait, 0)}
	if !cfg.Adaptive {
		l.limit.Store(int64(hi))
		return l
	}
	lo := min(max(cfg.Min, 1), hi)
	initial := cfg.Initial
	if initial == 0 {
		initial = lo
	}
	initial = min(max(initial, lo), hi)
	l.ad = &adaptive{lo: float64(lo), hi: float64(hi), est: float64(initial)}
	l.ad.start.Store(clk.Now().UnixNano())
	l.limit.Store(int64(initial))
	return l
}

// Permit is a slot an admitted attempt holds. Call Done or Release once
// when the attempt has ended. The zero Permit (from a nil Limiter) holds
// nothing.
type Permit struct {
	l      *Limiter
	gen    uint32
	queued bool
}

// Queued reports whether the attempt waited in the queue for its slot.
func (p Permit) Queued() bool { return p.queued }

// Done gives the slot back and reports the attempt to an adaptive limit:
// its round-trip time, and whether it was dropped, answered with an
// overload (see [IsDrop]). A dropped attempt's rtt is not used.
func (p Permit) Done(rtt time.Duration, dropped bool) {
	l := p.l
	if l == nil {
		return
	}
	if l.ad != nil {
		l.ad.record(l, p.gen, rtt, dropped)
	}
	l.release()
}

// Release gives the slot back without a report: the attempt proves
// nothing about the destination (its caller canceled it, it was never
// sent, or it failed in a way that says nothing of the destination's
// load). It stands for Done.
func (p Permit) Release() {
	if p.l != nil {
		p.l.release()
	}
}

// Limit returns the current limit: the fixed one, or the adaptive one
// learned so far. A nil Limiter's is 0.
func (l *Limiter) Limit() int {
	if l == nil {
		return 0
	}
	return int(l.limit.Load())
}

// InFlight returns the attempts holding a slot.
func (l *Limiter) InFlight() int {
	if l == nil {
		return 0
	}
	return int(uint32(l.word.Load()))
}

// Waiting returns the attempts queued for a slot.
func (l *Limiter) Waiting() int {
	if l == nil {
		return 0
	}
	return int(l.word.Load() >> 32)
}

// Adaptive reports whether the limit is learned: only then do Done's
// round-trip times matter.
func (l *Limiter) Adaptive() bool { return l != nil && l.ad != nil }

// MaxWait returns how long an attempt may queue for a slot.
func (l *Limiter) MaxWait() time.Duration {
	if l == nil {
		return 0
	}
	return l.maxWait
}

// Acquire takes a slot for an attempt, waiting up to MaxWait for one in
// the queue. It returns an *[OverloadError] (wrapping [ErrOverload]) when
// none frees in time, or ctx's error when ctx ends first. A free slot, with
// no one queued, is taken without a lock or an allocation.
func (l *Limiter) Acquire(ctx context.Context) (Permit, error) {
	if l == nil {
		return Permit{}, nil
	}
	if p, ok := l.TryAcquire(); ok {
		return p, nil
	}
	if l.maxWait <= 0 {
		return Permit{}, l.refused()
	}
	return l.wait(ctx)
}

// TryAcquire takes a free slot, when there is one and no one is queued,
// without waiting: an attempt that is worth sending only now (a hedge)
// asks this way. A nil Limiter always admits.
func (l *Limiter) TryAcquire() (Permit, bool) {
	if l == nil {
		return Permit{}, true
	}
	for {
		w := l.word.Load()
		if w>>32 != 0 || uint32(w) >= uint32(l.limit.Load()) {
			return Permit{}, false
		}
		if l.word.CompareAndSwap(w, w+1) {
			return l.permit(false), true
		}
	}
}

func (l *Limiter) permit(queued bool) Permit {
	p := Permit{l: l, queued: queued}
	if l.ad != nil {
		p.gen = l.ad.gen.Load()
	}
	return p
}

// refused returns the error of a refusal at the current limit.
func (l *Limiter) refused() error {
	limit := int(l.limit.Load())
	if e := l.refusal.Load(); e != nil && e.Limit == limit {
		return e
	}
	e := &OverloadError{Name: l.name, Limit: limit, MaxWait: l.maxWait}
	l.refusal.Store(e)
	return e
}

// wait queues for a slot, up to MaxWait or the end of ctx.
func (l *Limiter) wait(ctx context.Context) (Permit, error) {
	if err := ctx.Err(); err != nil {
		return Permit{}, err
	}
	wt := waiters.Get().(*waiter)
	l.mu.Lock()
	for {
		w := l.word.Load()
		if w>>32 == 0 && uint32(w) < uint32(l.limit.Load()) {
			// A slot freed while this attempt came to the queue.
			if l.word.CompareAndSwap(w, w+1) {
				l.mu.Unlock()
				waiters.Put(wt)
				return l.permit(false), nil
			}
			continue
		}
		if l.word.CompareAndSwap(w, w+waiterOne) {
			break
		}
	}
	l.push(wt)
	l.mu.Unlock()

	t := l.clk.NewTimer(l.maxWait)
	var err error
	select {
	case <-wt.ready:
		t.Stop()
		waiters.Put(wt)
		return l.permit(true), nil
	case <-t.C():
		err = l.refused()
	case <-ctx.Done():
		t.Stop()
		err = ctx.Err()
	}
	l.mu.Lock()
	if wt.queued {
		l.unlink(wt)
		l.word.Add(^uint64(waiterOne - 1)) // one waiter less
		l.mu.Unlock()
		waiters.Put(wt)
		return Permit{}, err
	}
	l.mu.Unlock()
	// Granted as the wait ended: the slot is this attempt's. It came in
	// time unless ctx ended, whose end is then the answer.
	<-wt.ready
	waiters.Put(wt)
	if ctx.Err() != nil {
		l.release()
		return Permit{}, ctx.Err()
	}
	return l.permit(true), nil
}

// push appends wt to the queue. l.mu is held.
func (l *Limiter) push(wt *waiter) {
	wt.queued, wt.prev, wt.next = true, l.tail, nil
	if l.tail != nil {
		l.tail.next = wt
	} else {
		l.head = wt
	}
	l.tail = wt
}

// unlink removes wt from the queue. l.mu is held.
func (l *Limiter) unlink(wt *waiter) {
	if wt.prev != nil {
		wt.prev.next = wt.next
	} else {
		l.head = wt.next
	}
	if wt.next != nil {
		wt.next.prev = wt.prev
	} else {
		l.tail = wt.prev
	}
	wt.queued, wt.prev, wt.next = false, nil, nil
}

// grantHead gives the oldest waiter its slot. l.mu is held, the word
// already counts the slot as the waiter's.
func (l *Limiter) grantHead() {
	wt := l.head
	l.unlink(wt)
	wt.ready <- struct{}{}
}

// release gives a slot back: to the oldest waiter when there is one and
// the limit allows, else to the pool.
func (l *Limiter) release() {
	for {
		w := l.word.Load()
		if w>>32 != 0 {
			break
		}
		if l.word.CompareAndSwap(w, w-1) {
			return
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		w := l.word.Load()
		if w>>32 == 0 || uint32(w) > uint32(l.limit.Load()) {
			// No waiter left, or more in flight than a lowered limit
			// allows: the slot is gone.
			if l.word.CompareAndSwap(w, w-1) {
				return
			}
			continue
		}
		// The slot passes to the oldest waiter: as many in flight, one
		// waiter less.
		if l.word.CompareAndSwap(w, w-waiterOne) {
			l.grantHead()
			return
		}
	}
}

// grant gives free slots to waiters after the limit rose.
func (l *Limiter) grant() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		w := l.word.Load()
		if w>>32 == 0 || uint32(w) >= uint32(l.limit.Load()) {
			return
		}
		if l.word.CompareAndSwap(w, w+1-waiterOne) {
			l.grantHead()
		}
	}
}

// The adaptive limit's parameters.
const (
	// minWindowSamples is the fewest samples a window closes with (a drop
	// closes it sooner).
	minWindowSamples = 10
	// rttTolerance is how much above the no-load latency the window's may
	// be before the limit shrinks: noise, not a queue.
	rttTolerance = 1.1
	// smoothing is how far the limit moves toward its target per window.
	smoothing = 0.25
	// dropFactor is the multiplicative decrease on a drop.
	dropFactor = 0.9
	// nearDrop scales the growth of a limit close to the in-flight count
	// of the last drop.
	nearDrop = 0.2
	// rebaseWindows is how many windows in a row latency may stay above
	// the tolerance before it is taken as the new no-load latency.
	rebaseWindows = 5
)

// adaptive is the learning state of an adaptive Limiter.
type adaptive struct {
	lo, hi float64

	// The current window, added to with atomics.
	start   atomic.Int64 // when it began, Unix nanoseconds of the clock
	samples atomic.Int64 // attempts answered, not dropped
	sum     atomic.Int64 // their round-trip times, nanoseconds
	drops   atomic.Int64 // drops of the current generation
	peak    atomic.Int64 // the most attempts in flight at a report
	// gen counts the decreases: a drop of an attempt admitted before the
	// last one does not decrease again.
	gen atomic.Uint32
	// noLoad is the no-load latency, nanoseconds (0: none yet), read
	// without the lock to size the window.
	noLoad atomic.Int64

	mu  sync.Mutex // TryLock only: the goroutine closing a window
	est float64    // the limit, unrounded; under mu
	// dropAt is the attempts in flight at the last drop (0: none yet).
	dropAt float64
	// high counts the windows in a row with latency above the tolerance,
	// highFrom is the first one's; under mu.
	high     int
	highFrom float64
}

// record takes the report of an attempt admitted in generation gen, with
// l's in-flight count still including it, and closes the window when it
// is due.
func (a *adaptive) record(l *Limiter, gen uint32, rtt time.Duration, dropped bool) {
	inflight := int64(uint32(l.word.Load()))
	for {
		p := a.peak.Load()
		if inflight <= p || a.peak.CompareAndSwap(p, inflight) {
			break
		}
	}
	if dropped {
		if gen != a.gen.Load() {
			return
		}
		a.drops.Add(1)
	} else {
		a.samples.Add(1)
		a.sum.Add(int64(max(rtt, 0)))
	}
	now := l.clk.Now().UnixNano()
	if !dropped && !a.due(now) {
		return
	}
	if a.mu.TryLock() {
		a.update(l, now)
		a.mu.Unlock()
	}
}

// due reports whether the window is complete at now: enough samples over
// at least twice the no-load latency.
func (a *adaptive) due(now int64) bool {
	return a.samples.Load() >= minWindowSamples && now-a.start.Load() >= 2*a.noLoad.Load()
}

// update closes the window, if it is still due, and sets the new limit.
// a.mu is held.
func (a *adaptive) update(l *Limiter, now int64) {
	drops := a.drops.Load()
	if drops == 0 && !a.due(now) {
		return // another report closed it first
	}
	n, sum := a.samples.Swap(0), a.sum.Swap(0)
	a.drops.Swap(0)
	peak := a.peak.Swap(0)
	a.start.Store(now)
	est := a.est
	switch {
	case drops > 0:
		a.gen.Add(1)
		a.dropAt = float64(peak)
		est = min(est, a.dropAt) * dropFactor
	case n > 0:
		short := float64(sum) / float64(n)
		noLoad := float64(a.noLoad.Load())
		if noLoad == 0 || short < noLoad {
			noLoad = short
		}
		if short <= rttTolerance*noLoad {
			// Latency near the no-load one: grow, unless the slots are
			// mostly idle (they say nothing of the capacity then).
			a.high = 0
			if float64(peak) >= est/2 {
				step := math.Sqrt(est) * smoothing
				if est < a.dropAt*1.1 {
					// Near the level of the last drop: probe it slowly.
					step *= nearDrop
				}
				est += step
			}
		} else {
			// A queue formed: shrink toward gradient × limit.
			gradient := max(noLoad/short, 0.5)
			est += (gradient*est - est) * smoothing
			if a.high == 0 {
				a.highFrom = short
			}
			if a.high++; a.high >= rebaseWindows {
				if short >= 0.95*a.highFrom {
					// Latency stayed as high while the limit shrank: it
					// is the destination's own, not a queue of ours.
					noLoad = short
				}
				a.high = 0
			}
		}
		a.noLoad.Store(int64(noLoad))
	}
	est = min(max(est, a.lo), a.hi)
	a.est = est
	limit := int64(est)
	if old := l.limit.Swap(limit); limit > old {
		l.grant()
	}
}

// IsDrop reports whether an outcome is one an adaptive limit takes as a
// drop, a sign that the limit is above the destination's capacity: HTTP
// 503 or 429, gRPC Unavailable or ResourceExhausted, or a timeout. It is
// wider than [Overloaded] (what the breaker leaves out): a plain 503 is a
// drop for the limit and a failure for the breaker. HOT: no allocation.
func IsDrop(o Outcome) bool {
	switch {
	case o.Err != ErrNone:
		return o.Err == ErrTimeout
	case o.IsGRPC:
		return o.GRPCCode == CodeUnavailable || o.GRPCCode == CodeResourceExhausted || o.GRPCCode == CodeDeadlineExceeded
	}
	return o.HTTPStatus == 503 || o.HTTPStatus == 429
}
