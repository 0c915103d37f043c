package lograte

import (
	"sync/atomic"
	"time"
)

// Slots is the number of keys a Limiter rate-limits apart: two keys that
// hash to the same slot share its rate.
const Slots = 64

// Limiter allows one record per interval per key, a key being a pair of
// strings (a service and a layer, a caller and a rule).
type Limiter struct {
	slots [Slots]slot
}

type slot struct {
	next       atomic.Int64 // Unix nanoseconds before which the slot allows nothing; 0: now
	suppressed atomic.Int64 // records left out since the slot's last one
}

// Allow reports whether a record about the key (a, b) may be written at
// now, given one per every, and how many records of its slot were left
// out since its last one. A nil Limiter allows every record.
func (l *Limiter) Allow(now time.Time, every time.Duration, a, b string) (bool, int64) {
	if l == nil {
		return true, 0
	}
	s := &l.slots[slotOf(a, b)]
	t := now.UnixNano()
	next := s.next.Load()
	if t < next || !s.next.CompareAndSwap(next, t+int64(every)) {
		s.suppressed.Add(1)
		return false, 0
	}
	return true, s.suppressed.Swap(0)
}

// slotOf is the slot of (a, b): FNV-1a of both, apart.
func slotOf(a, b string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(a); i++ {
		h = (h ^ uint64(a[i])) * prime
	}
	h = (h ^ 0xff) * prime // a byte no name has: "ab"+"c" is not "a"+"bc"
	for i := 0; i < len(b); i++ {
		h = (h ^ uint64(b[i])) * prime
	}
	return h % Slots
}
