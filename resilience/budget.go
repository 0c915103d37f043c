package resilience

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// DefaultBudgetTTL is the token lifetime used when BudgetConfig.TTL is zero.
const DefaultBudgetTTL = 10 * time.Second

// BudgetConfig configures a [Budget].
type BudgetConfig struct {
	Ratio        float64       // tokens deposited per call; negative, NaN or infinite means 0
	MinPerSecond int           // retries per second always allowed; negative means 0
	TTL          time.Duration // token lifetime; 0 (or negative) means DefaultBudgetTTL
}

// budgetSlots is the number of slots of a budget window: a token lives
// between TTL*(budgetSlots-1)/budgetSlots and TTL.
const budgetSlots = 10

// Budget is a retry budget with Finagle's semantics: each logical call
// deposits Ratio tokens, each retry withdraws one, tokens live TTL, and a
// reserve of MinPerSecond*TTL/1s tokens exists from the start, so that
//
//	balance = Ratio*calls(last TTL) + MinPerSecond*TTL/1s - retries(last TTL)
//
// Calls and retries are counted in a window of 10 slots of TTL/10, so a
// token expires between 0.9*TTL and TTL after its deposit.
//
// A Budget is safe for concurrent use and lock-free. A nil *Budget is no
// budget: it allows every retry.
type Budget struct {
	clock    clock.Clock
	start    time.Time
	width    time.Duration // of one slot
	ratio    float64
	reserve  float64
	deposits window
	retries  window
}

// NewBudget returns a budget that reads time from c; a nil c means
// clock.System.
func NewBudget(cfg BudgetConfig, c clock.Clock) *Budget {
	if c == nil {
		c = clock.System{}
	}
	ttl := cfg.TTL
	if ttl <= 0 {
		ttl = DefaultBudgetTTL
	}
	ratio := cfg.Ratio
	if !(ratio > 0) || math.IsInf(ratio, 1) { // also NaN
		ratio = 0
	}
	minPerSecond := max(cfg.MinPerSecond, 0)
	return &Budget{
		clock:   c,
		start:   c.Now(),
		width:   max(ttl/budgetSlots, 1),
		ratio:   ratio,
		reserve: float64(minPerSecond) * ttl.Seconds(),
	}
}

// epoch returns the index of the slot period that contains now, counted from
// the budget's creation; it wraps around after 2^32 periods.
func (b *Budget) epoch() uint32 { return b.epochAt(b.clock.Now()) }

func (b *Budget) epochAt(now time.Time) uint32 {
	d := now.Sub(b.start)
	if d < 0 {
		d = 0
	}
	return uint32(d / b.width)
}

// Deposit records one logical call. HOT: lock-free, no allocation.
func (b *Budget) Deposit() {
	if b == nil {
		return
	}
	b.deposits.add(b.epoch())
}

// DepositAt is Deposit for a call that started at now, a time read from
// the budget's clock: a caller that has read it already saves a reading.
// HOT: lock-free, no allocation.
func (b *Budget) DepositAt(now time.Time) {
	if b == nil {
		return
	}
	b.deposits.add(b.epochAt(now))
}

// TryWithdraw takes one token for a retry and reports whether there was one;
// false means the budget is exhausted and the retry must not happen.
// Concurrent withdrawals never take more tokens than the balance holds; under
// contention at the limit one may fail that could have succeeded.
// HOT: lock-free, no allocation.
func (b *Budget) TryWithdraw() bool {
	if b == nil {
		return true
	}
	e := b.epoch()
	// Count the retry first, then check: a withdrawal that the balance does
	// not cover is undone. Every successful withdrawal has seen all those
	// counted before it, so together they never exceed the balance.
	if !b.retries.add(e) {
		return false
	}
	if float64(b.retries.sum(e)) <= b.allowance(e) {
		return true
	}
	b.retries.undo(e)
	return false
}

// Balance returns the number of retries available now, never negative. It is
// for admin pages and metrics; use TryWithdraw to take a token. A nil
// Budget returns +Inf.
func (b *Budget) Balance() float64 {
	if b == nil {
		return math.Inf(1)
	}
	e := b.epoch()
	return max(b.allowance(e)-float64(b.retries.sum(e)), 0)
}

// allowance returns the tokens deposited in the window ending at epoch e plus
// the reserve.
func (b *Budget) allowance(e uint32) float64 {
	return b.ratio*float64(b.deposits.sum(e)) + b.reserve
}

// window counts events in budgetSlots slots. Each slot packs the epoch it
// counts for (high 32 bits) and its count (low 32 bits) into one word, so a
// stale slot is reset and counted into with a single compare-and-swap.
type window [budgetSlots]atomic.Uint64

const slotCountMask = 1<<32 - 1

// add counts one event at epoch e and reports whether it was counted. It is
// not counted when the slot already belongs to a later period (the caller's
// time is more than a window old) or its count is saturated.
func (w *window) add(e uint32) bool {
	s := &w[e%budgetSlots]
	for {
		v := s.Load()
		var next uint64
		switch se := uint32(v >> 32); {
		case se == e:
			if v&slotCountMask == slotCountMask {
				return false
			}
			next = v + 1
		case int32(se-e) > 0:
			return false
		default:
			next = uint64(e)<<32 | 1
		}
		if s.CompareAndSwap(v, next) {
			return true
		}
	}
}

// undo removes one event counted by add at epoch e, unless the slot has moved
// to another period since (then the event has expired anyway).
func (w *window) undo(e uint32) {
	s := &w[e%budgetSlots]
	for {
		v := s.Load()
		if uint32(v>>32) != e || v&slotCountMask == 0 {
			return
		}
		if s.CompareAndSwap(v, v-1) {
			return
		}
	}
}

// sum returns the events of the window ending at epoch e. Slots of a slightly
// later period, written by callers that read the time after this one, count
// too, so that concurrent withdrawals see each other.
func (w *window) sum(e uint32) uint64 {
	var n uint64
	for i := range w {
		v := w[i].Load()
		if d := int32(uint32(v>>32) - e); d > -budgetSlots && d < budgetSlots {
			n += v & slotCountMask
		}
	}
	return n
}
