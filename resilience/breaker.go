package resilience

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// Breaker defaults, used for zero fields of BreakerConfig. They are the
// policy document's defaults.
const (
	DefaultBreakerFailures         = 5
	DefaultBreakerOpenFor          = 30 * time.Second
	DefaultBreakerHalfOpenRequests = 1
	DefaultBreakerWindow           = 10 * time.Second // the rate form's
	DefaultBreakerMinCalls         = 20               // the rate form's
)

// BreakerConfig configures a [Breaker], in one of two forms: the
// consecutive form (FailureRate 0), which trips after ConsecutiveFailures
// failures in a row, or the rate form (FailureRate > 0), which trips when
// at least FailureRate of the attempts reported over the last Window
// failed, once at least MinCalls were reported in it (ConsecutiveFailures
// is then ignored). Zero (or negative) fields mean the Default* constants
// above.
type BreakerConfig struct {
	ConsecutiveFailures int           // the consecutive form: trips after this many consecutive failures
	FailureRate         float64       // the rate form when > 0: trips at this share of failures (above 1 means 1)
	Window              time.Duration // the rate form: the sliding window the share is counted over
	MinCalls            int           // the rate form: never trips on fewer reports in the window
	OpenFor             time.Duration // open -> half-open after this
	HalfOpenRequests    int           // exactly this many probes in half-open; closes after that many successes
	// Clock is the time of OpenFor and of the window; nil means
	// clock.System. It is not compared by whoever keys breakers by their
	// configuration: leave it out of the key.
	Clock clock.Clock
}

// ErrBreakerOpen is wrapped by the error of [Breaker.Allow] when the breaker
// rejects an attempt: it is open, or half-open with all its probes in flight.
var ErrBreakerOpen = errors.New("resilience: circuit breaker is open")

// Breaker is a circuit breaker for one destination. It is closed at first;
// it opens after ConsecutiveFailures failures in a row (a success resets
// the count), or, in the rate form, when a failure brings the share of
// failures among the attempts reported over the last Window to
// FailureRate with at least MinCalls reported; after OpenFor it is
// half-open and lets exactly HalfOpenRequests probes through; it closes when they all succeed and
// opens again as soon as one fails. An attempt released with
// [Ticket.Release] counts as neither: a released probe gives its slot to
// the next attempt. A report from an attempt allowed before the last
// transition is ignored.
//
// It follows gobreaker's two-step breaker (Allow, then report), with an
// interval of 0: only consecutive failures count. Unlike it, a closed
// Breaker admits an attempt and takes its report with one atomic word (the
// state, its generation and the failure streak): no lock, no clock, no
// allocation. Only failures, the half-open state and transitions take the
// breaker's lock.
//
// The rate form admits as the consecutive one, with one atomic load; a
// closed rate breaker counts its reports in a sliding window of ten
// buckets by compare-and-swap, reading its clock once per report (the
// monotonic clock alone on the system clock), and takes its lock only to
// trip. Its window starts empty each time it closes. It counts the
// reports it gets; the mesh's core gives it one per call, the call's last
// attempt ([Breaker.CountsCalls]), where the consecutive form hears of
// every attempt.
//
// A Breaker is safe for concurrent use. A nil *Breaker is no breaker: it
// allows every attempt and is always "closed".
//
// The open -> half-open transition is evaluated lazily, when Allow or
// State is called, on the breaker's clock.
type Breaker struct {
	name     string
	failures uint64      // trips at this streak (the consecutive form)
	win      *rateWindow // the rate form's window; nil for the consecutive form
	clock    clock.Clock
	openFor  time.Duration
	probes   uint32
	onChange func(name, from, to string)
	// errOpen and errHalfOpen wrap ErrBreakerOpen, for the open state and
	// for half-open with every probe in flight; made under mu when first
	// returned (most breakers never open).
	errOpen, errHalfOpen error

	// word is the generation (high 32 bits), the state (2 bits) and, when
	// closed, the failure streak (low 30 bits; always 0 in the rate
	// form, whose word changes only by transitions). A closed breaker's
	// streak changes by compare-and-swap without the lock; every
	// transition is a compare-and-swap under mu.
	word atomic.Uint64

	mu sync.Mutex
	// Under mu: when an open breaker turns half-open, and the half-open
	// generation's counts.
	expiry                     time.Time
	requests, freed, successes uint32
}

// The states of a Breaker, in its word.
const (
	stateClosed uint64 = iota
	stateHalfOpen
	stateOpen
)

const (
	streakBits = 30
	streakMask = 1<<streakBits - 1
	stateMask  = 3 << streakBits
)

func stateOf(w uint64) uint64 { return (w & stateMask) >> streakBits }
func genOf(w uint64) uint32   { return uint32(w >> 32) }

func stateName(st uint64) string {
	switch st {
	case stateOpen:
		return "open"
	case stateHalfOpen:
		return "half-open"
	}
	return "closed"
}

// NewBreaker returns a closed breaker. name names it in errors and in
// onChange, which, when not nil, is called on each transition with the states
// "closed", "open" or "half-open". onChange runs synchronously while the
// breaker is locked: it must be quick and must not call the Breaker.
func NewBreaker(name string, cfg BreakerConfig, onChange func(name, from, to string)) *Breaker {
	failures := cfg.ConsecutiveFailures
	if failures <= 0 {
		failures = DefaultBreakerFailures
	}
	openFor := cfg.OpenFor
	if openFor <= 0 {
		openFor = DefaultBreakerOpenFor
	}
	probes := cfg.HalfOpenRequests
	if probes <= 0 {
		probes = DefaultBreakerHalfOpenRequests
	}
	c := cfg.Clock
	if c == nil {
		c = clock.System{}
	}
	b := &Breaker{
		name:     name,
		failures: min(uint64(failures), streakMask),
		clock:    c,
		openFor:  openFor,
		probes:   uint32(min(probes, math.MaxUint32)),
		onChange: onChange,
	}
	if cfg.FailureRate > 0 {
		b.win = newRateWindow(cfg.FailureRate, cfg.Window, cfg.MinCalls, c)
	}
	return b
}

// Ticket is the permission an allowed attempt holds: the breaker and the
// generation that allowed it. Its zero value (from a nil Breaker) reports
// nowhere.
type Ticket struct {
	b   *Breaker
	gen uint32
}

// Done reports how the attempt ended, failed per [IsFailure]. Call it, or
// Release, exactly once per allowed attempt: a half-open breaker waits for
// its probes to report, and a second report would be counted twice.
func (t Ticket) Done(failed bool) {
	switch {
	case t.b == nil:
	case failed:
		t.b.failed(t.gen)
	default:
		t.b.succeeded(t.gen)
	}
}

// Release reports an attempt that proves nothing about the destination (its
// caller canceled it, or it was never sent): it counts as neither success nor
// failure, and a half-open probe's slot goes to the next attempt. It stands
// for Done: call one of them, once.
func (t Ticket) Release() {
	if t.b != nil {
		t.b.released(t.gen)
	}
}

// Allow asks whether an attempt may go through. If so, it returns the
// attempt's Ticket, whose Done must be called once the attempt has ended. If
// not, it returns an error wrapping [ErrBreakerOpen]. Allow does not
// allocate; a closed breaker admits without a lock.
func (b *Breaker) Allow() (Ticket, error) {
	if b == nil {
		return Ticket{}, nil
	}
	if w := b.word.Load(); stateOf(w) == stateClosed {
		return Ticket{b: b, gen: genOf(w)}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.current(b.clock.Now())
	switch stateOf(w) {
	case stateOpen:
		if b.errOpen == nil {
			b.errOpen = fmt.Errorf("%w: %s", ErrBreakerOpen, b.name)
		}
		return Ticket{}, b.errOpen
	case stateHalfOpen:
		if b.requests-min(b.freed, b.requests) >= b.probes {
			if b.errHalfOpen == nil {
				b.errHalfOpen = fmt.Errorf("%w: %s: half-open, every probe in flight", ErrBreakerOpen, b.name)
			}
			return Ticket{}, b.errHalfOpen
		}
		b.requests++
	}
	return Ticket{b: b, gen: genOf(w)}, nil
}

// State returns "closed", "open" or "half-open".
func (b *Breaker) State() string {
	if b == nil {
		return stateName(stateClosed)
	}
	if w := b.word.Load(); stateOf(w) == stateClosed {
		return stateName(stateClosed)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return stateName(stateOf(b.current(b.clock.Now())))
}

// CountsCalls reports whether b is of the rate form, whose window counts
// calls: its user reports only the last attempt of each call (the others
// released), so that retries do not count one failing call several
// times. The consecutive form takes every attempt.
func (b *Breaker) CountsCalls() bool { return b != nil && b.win != nil }

// Closed reports whether b is closed now, with one atomic load (a nil
// Breaker is). An open breaker whose open_for has passed reads as not
// closed until it is asked (Allow, State).
func (b *Breaker) Closed() bool { return b == nil || stateOf(b.word.Load()) == stateClosed }

// Window returns the attempts reported to a closed rate breaker over its
// last window, and how many of them failed: (0, 0) for the consecutive
// form and for a breaker that is not closed.
func (b *Breaker) Window() (calls, failures int) {
	if b == nil || b.win == nil || stateOf(b.word.Load()) != stateClosed {
		return 0, 0
	}
	c, f := b.win.counts(b.win.now())
	return int(c), int(f)
}

// current returns the word at now, after turning an open breaker whose
// time is up half-open. b.mu is held.
func (b *Breaker) current(now time.Time) uint64 {
	w := b.word.Load()
	if stateOf(w) == stateOpen && b.expiry.Before(now) {
		b.transition(w, stateHalfOpen, now)
		w = b.word.Load()
	}
	return w
}

// transition moves the breaker from word w to state to, in a new
// generation, and reports whether it did (false: w is no longer the word,
// changed by a closed breaker's success). b.mu is held.
func (b *Breaker) transition(w, to uint64, now time.Time) bool {
	if to == stateClosed && b.win != nil {
		// Before the word says closed, so that no report of the new
		// generation is lost. The breaker is half-open: the word does
		// not change without b.mu.
		b.win.reset()
	}
	if !b.word.CompareAndSwap(w, uint64(genOf(w)+1)<<32|to<<streakBits) {
		return false
	}
	b.requests, b.freed, b.successes = 0, 0, 0
	if to == stateOpen {
		b.expiry = now.Add(b.openFor)
	}
	if b.onChange != nil {
		b.onChange(b.name, stateName(stateOf(w)), stateName(to))
	}
	return true
}

// succeeded takes the success of an attempt allowed in generation gen.
func (b *Breaker) succeeded(gen uint32) {
	for {
		w := b.word.Load()
		if genOf(w) != gen {
			return
		}
		if stateOf(w) != stateClosed {
			break
		}
		if b.win != nil {
			b.win.record(b.win.now(), false)
			return
		}
		if w&streakMask == 0 || b.word.CompareAndSwap(w, w&^streakMask) {
			return
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.word.Load()
	if genOf(w) != gen || stateOf(w) != stateHalfOpen {
		return
	}
	b.successes++
	if b.successes >= b.probes {
		b.transition(w, stateClosed, b.clock.Now())
	}
}

// failed takes the failure of an attempt allowed in generation gen.
func (b *Breaker) failed(gen uint32) {
	if b.win != nil {
		w := b.word.Load()
		if genOf(w) != gen {
			return
		}
		if stateOf(w) == stateClosed {
			if !b.win.record(b.win.now(), true) {
				return
			}
			// The failure brought the window to the rate: trip, unless
			// another report did (the word is constant while closed).
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.word.Load() == w {
				b.transition(w, stateOpen, b.clock.Now())
			}
			return
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		w := b.word.Load()
		if genOf(w) != gen {
			return
		}
		switch stateOf(w) {
		case stateHalfOpen:
			b.transition(w, stateOpen, b.clock.Now())
			return
		case stateClosed:
			if w&streakMask+1 >= b.failures {
				if b.transition(w, stateOpen, b.clock.Now()) {
					return
				}
			} else if b.word.CompareAndSwap(w, w+1) {
				return
			}
		default:
			return
		}
	}
}

// released takes the release of an attempt allowed in generation gen: it
// frees a half-open probe's slot, and changes nothing when closed.
func (b *Breaker) released(gen uint32) {
	if w := b.word.Load(); genOf(w) != gen || stateOf(w) == stateClosed {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.word.Load(); genOf(w) == gen && stateOf(w) == stateHalfOpen {
		b.freed++
	}
}
