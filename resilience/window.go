package resilience

import (
	"sync/atomic"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// windowBuckets is the number of buckets of a rate breaker's window: the
// window slides by a tenth of its length.
const windowBuckets = 10

// A bucket word holds the bucket's epoch (high 32 bits), its calls (16
// bits) and its failures (low 16 bits).
const (
	countBits  = 16
	countMask  = 1<<countBits - 1
	oneCall    = 1 << countBits
	oneFailure = 1
)

// rateWindow counts the reports of a closed rate breaker over a sliding
// window: windowBuckets buckets of width Window/windowBuckets, the current
// one and the ones before it, each one atomic word of its epoch (the
// number of widths since the window's base time, mod 2^32) and its counts.
// The bucket of epoch e is buckets[e%windowBuckets]; the first report of a
// new epoch into a bucket holding an older one starts it anew, by the same
// compare-and-swap that counts. No lock, no allocation.
//
// A bucket counts at most 65535 calls: further reports in it are dropped
// until the next bucket, which keeps the share among those counted. A
// report whose clock reading is a whole window older than its bucket's
// epoch is dropped too.
type rateWindow struct {
	clock    clock.Clock
	system   bool // clock is clock.System: now reads the monotonic clock only
	base     time.Time
	width    time.Duration
	rate     float64
	minCalls uint64
	buckets  [windowBuckets]atomic.Uint64
}

// newRateWindow returns the window of a rate breaker tripping at rate over
// length with minCalls at least (zero: the defaults), on clock c.
func newRateWindow(rate float64, length time.Duration, minCalls int, c clock.Clock) *rateWindow {
	if length <= 0 {
		length = DefaultBreakerWindow
	}
	if minCalls <= 0 {
		minCalls = DefaultBreakerMinCalls
	}
	_, system := c.(clock.System)
	return &rateWindow{
		clock:    c,
		system:   system,
		base:     c.Now(),
		width:    max(length/windowBuckets, 1),
		rate:     min(rate, 1),
		minCalls: uint64(minCalls),
	}
}

// now returns the current epoch: the number of bucket widths from the
// window's base to now. On the system clock it reads the monotonic clock
// alone, which costs less than a full reading (time.Since).
func (w *rateWindow) now() uint64 {
	var d time.Duration
	if w.system {
		d = time.Since(w.base)
	} else {
		d = w.clock.Now().Sub(w.base)
	}
	return uint64(max(d, 0) / w.width)
}

// record counts a report at epoch e, failed or not, and reports whether it
// is a failure that brings the window to the breaker's rate.
func (w *rateWindow) record(e uint64, failed bool) bool {
	b := &w.buckets[e%windowBuckets]
	delta := uint64(oneCall)
	if failed {
		delta |= oneFailure
	}
	for {
		old := b.Load()
		var next uint64
		switch d := uint32(e) - uint32(old>>32); {
		case d == 0:
			if old>>countBits&countMask == countMask {
				return false // full
			}
			next = old + delta
		case d < 1<<31:
			next = uint64(uint32(e))<<32 | delta // an older epoch's: start anew
		default:
			return false // a newer epoch's: this report is a rateWindow late
		}
		if b.CompareAndSwap(old, next) {
			break
		}
	}
	if !failed {
		return false
	}
	calls, failures := w.counts(e)
	return calls >= w.minCalls && float64(failures)/float64(calls) >= w.rate
}

// counts sums the buckets of the window that ends with epoch e. A bucket
// of a slightly later epoch, written by a report that read the clock
// after this one, counts too (it holds the place of the window's oldest).
func (w *rateWindow) counts(e uint64) (calls, failures uint64) {
	for i := range w.buckets {
		v := w.buckets[i].Load()
		if d := int32(uint32(v>>32) - uint32(e)); d > -windowBuckets && d < windowBuckets {
			calls += v >> countBits & countMask
			failures += v & countMask
		}
	}
	return calls, failures
}

// reset empties the window.
func (w *rateWindow) reset() {
	for i := range w.buckets {
		w.buckets[i].Store(0)
	}
}
