package clocktest

import (
	"slices"
	"sync"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
)

// Fake is a manually advanced Clock, safe for concurrent use. Its time moves
// only when [Fake.Advance] is called. Create one with [NewFake].
type Fake struct {
	mu      sync.Mutex
	changed *sync.Cond // broadcast when the set of pending timers changes
	now     time.Time
	seq     uint64       // creation order, to fire timers due at the same time in order
	pending []*fakeTimer // timers neither fired nor stopped
}

var _ clock.Clock = (*Fake)(nil)

// NewFake returns a Fake clock whose current time is start.
func NewFake(start time.Time) *Fake {
	f := &Fake{now: start}
	f.changed = sync.NewCond(&f.mu)
	return f
}

// Now returns the fake current time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the fake time reaches Now()+d.
// A timer with d <= 0 fires at once and is never pending.
func (f *Fake) NewTimer(d time.Duration) clock.Timer {
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		t.c <- f.now
		return t
	}
	f.seq++
	t.when, t.seq = f.now.Add(d), f.seq
	f.pending = append(f.pending, t)
	f.changed.Broadcast()
	return t
}

// Advance moves the fake time forward by d, firing the timers that fall due
// on the way in the order of their deadlines (creation order for equal
// deadlines). While a timer fires, Now reports its deadline. A negative d
// panics.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		panic("clocktest: Advance with a negative duration")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		i := f.nextDue(end)
		if i < 0 {
			break
		}
		t := f.pending[i]
		f.pending = slices.Delete(f.pending, i, i+1)
		f.now = t.when
		t.c <- t.when // never blocks: the buffer of 1 is used once
	}
	f.now = end
	f.changed.Broadcast()
}

// nextDue returns the index of the earliest pending timer due at or before
// end, or -1. f.mu must be held.
func (f *Fake) nextDue(end time.Time) int {
	best := -1
	for i, t := range f.pending {
		if t.when.After(end) {
			continue
		}
		if best < 0 || t.when.Before(f.pending[best].when) ||
			(t.when.Equal(f.pending[best].when) && t.seq < f.pending[best].seq) {
			best = i
		}
	}
	return best
}

// BlockUntilTimers waits, in real time, until at least n timers are pending
// (created, neither fired nor stopped), so a test knows that the goroutine
// under test is waiting before it calls Advance.
func (f *Fake) BlockUntilTimers(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.pending) < n {
		f.changed.Wait()
	}
}

// PendingTimers returns the number of timers neither fired nor stopped, so a
// test can check that the code under test stopped its timers.
func (f *Fake) PendingTimers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// fakeTimer is a Timer of a Fake clock.
type fakeTimer struct {
	f    *Fake
	c    chan time.Time
	when time.Time
	seq  uint64
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop removes the timer from its clock and reports whether it was pending.
func (t *fakeTimer) Stop() bool {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.Index(f.pending, t)
	if i < 0 {
		return false
	}
	f.pending = slices.Delete(f.pending, i, i+1)
	f.changed.Broadcast()
	return true
}
