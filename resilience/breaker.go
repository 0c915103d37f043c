package resilience

import (
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Breaker defaults, used for zero fields of BreakerConfig. OpenFor and
// HalfOpenRequests are the policy document's defaults.
const (
	DefaultBreakerFailures         = 5
	DefaultBreakerOpenFor          = 30 * time.Second
	DefaultBreakerHalfOpenRequests = 1
)

// BreakerConfig configures a [Breaker]. Zero (or negative) fields mean the
// Default* constants above.
type BreakerConfig struct {
	ConsecutiveFailures int           // trips after this many consecutive failures
	OpenFor             time.Duration // open -> half-open after this
	HalfOpenRequests    int           // exactly this many probes in half-open; closes after that many successes
}

// ErrBreakerOpen is wrapped by the error of [Breaker.Allow] when the breaker
// rejects an attempt: it is open, or half-open with all its probes in flight.
var ErrBreakerOpen = errors.New("resilience: circuit breaker is open")

// What an attempt reports to gobreaker: a failure, or nothing learned
// (excluded from the counts, which frees its half-open slot).
var (
	errAttemptFailed   = errors.New("resilience: attempt failed")
	errAttemptReleased = errors.New("resilience: attempt proved nothing")
)

// Breaker is a circuit breaker for one destination, over gobreaker's
// TwoStepCircuitBreaker. It is closed at first; it opens after
// ConsecutiveFailures failures in a row (a success resets the count); after
// OpenFor it is half-open and lets exactly HalfOpenRequests probes through;
// it closes when they all succeed and opens again as soon as one fails.
// An attempt released with [Ticket.Release] counts as neither: a released
// probe gives its slot to the next attempt.
//
// A Breaker is safe for concurrent use. A nil *Breaker is no breaker: it
// allows every attempt and is always "closed".
//
// gobreaker reads time.Now itself, so a Breaker does not take a clock.
// Transitions are evaluated lazily, when Allow or State is called.
type Breaker struct {
	cb          *gobreaker.TwoStepCircuitBreaker[struct{}]
	errOpen     error // wraps ErrBreakerOpen, for the open state
	errHalfOpen error // wraps ErrBreakerOpen, for half-open with every probe in flight
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
	st := gobreaker.Settings{
		Name:        name,
		MaxRequests: uint32(probes),
		Timeout:     openFor,
		// Interval 0: the counts of the closed state are cleared only on
		// transitions, so only consecutive failures trip the breaker.
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= uint32(failures)
		},
		IsExcluded: func(err error) bool { return err == errAttemptReleased },
	}
	if onChange != nil {
		st.OnStateChange = func(name string, from, to gobreaker.State) {
			onChange(name, from.String(), to.String())
		}
	}
	return &Breaker{
		cb:          gobreaker.NewTwoStepCircuitBreaker[struct{}](st),
		errOpen:     fmt.Errorf("%w: %s", ErrBreakerOpen, name),
		errHalfOpen: fmt.Errorf("%w: %s: half-open, every probe in flight", ErrBreakerOpen, name),
	}
}

// Ticket is the permission an allowed attempt holds. Its zero value (from
// a nil Breaker) reports nowhere.
type Ticket struct {
	report func(error)
}

// Done reports how the attempt ended, failed per [IsFailure]. Call it, or
// Release, exactly once per allowed attempt: a half-open breaker waits for
// its probes to report, and a second report would be counted twice.
func (t Ticket) Done(failed bool) {
	switch {
	case t.report == nil:
	case failed:
		t.report(errAttemptFailed)
	default:
		t.report(nil)
	}
}

// Release reports an attempt that proves nothing about the destination (its
// caller canceled it, or it was never sent): it counts as neither success nor
// failure, and a half-open probe's slot goes to the next attempt. It stands
// for Done: call one of them, once.
func (t Ticket) Release() {
	if t.report != nil {
		t.report(errAttemptReleased)
	}
}

// Allow asks whether an attempt may go through. If so, it returns the
// attempt's Ticket, whose Done must be called once the attempt has ended. If
// not, it returns an error wrapping [ErrBreakerOpen]. Allow allocates only
// what gobreaker's two-step API allocates (one closure).
func (b *Breaker) Allow() (Ticket, error) {
	if b == nil {
		return Ticket{}, nil
	}
	report, err := b.cb.Allow()
	if err != nil {
		if errors.Is(err, gobreaker.ErrTooManyRequests) {
			return Ticket{}, b.errHalfOpen
		}
		return Ticket{}, b.errOpen
	}
	return Ticket{report: report}, nil
}

// State returns "closed", "open" or "half-open".
func (b *Breaker) State() string {
	if b == nil {
		return gobreaker.StateClosed.String()
	}
	return b.cb.State().String()
}
