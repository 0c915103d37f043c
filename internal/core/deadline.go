package core

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Deadline is a context bounded by a deadline: what context.WithDeadline
// gives, held in its owner's storage (a Call, a server's request; no
// allocation) and lazy. Its timer starts, and its parent is watched, only
// when someone waits for its end: the first Done or AfterFunc. Until then
// Err compares the clock with the deadline itself. A call whose answer
// comes before anyone waits (an in-process RoundTripper, a handler that
// answers at once) never arms a timer.
//
// It implements the AfterFunc method that the context package looks for
// on a parent: a context derived from it (net/http derives one per round
// trip) registers a function rather than starting a goroutine that waits
// on Done.
//
// It is safe for concurrent use once Init has returned; its zero value is
// not usable. Its owner calls Cancel when it is done with it, as with the
// cancel function of context.WithDeadline.
type Deadline struct {
	parent context.Context
	at     time.Time // the earlier of the parent's deadline and the route's

	// ended points to the error it ended with, set once: errCanceled,
	// errDeadline or parentErr.
	ended atomic.Pointer[error]

	mu         sync.Mutex
	next       uint32        // the id of the next AfterFunc
	armed      bool          // the timer runs and the parent is watched
	done       chan struct{} // made by the first Done
	timer      *deadlineTimer
	stopParent func() bool // stops the watch of the parent
	parentErr  error       // the parent's Err, when the parent ended d
	fns        []afterFn   // registered by AfterFunc, run when it ends
	inline     [1]afterFn  // fns' first storage: net/http registers one
}

// afterFn is a function registered by AfterFunc.
type afterFn struct {
	id uint32
	f  func()
}

// The errors a Deadline ends with on its own, for its ended pointer.
var (
	errCanceled error = context.Canceled
	errDeadline error = context.DeadlineExceeded
)

var _ context.Context = (*Deadline)(nil)

// Init bounds parent by at: the context ends at at, when parent ends or
// when it is canceled, whichever comes first.
func (d *Deadline) Init(parent context.Context, at time.Time) {
	if pd, ok := parent.Deadline(); ok && pd.Before(at) {
		at = pd
	}
	d.parent, d.at = parent, at
	d.fns = d.inline[:0]
}

// Deadline implements context.Context.
func (d *Deadline) Deadline() (time.Time, bool) { return d.at, true }

// Value implements context.Context: the parent's values. context.Cause
// finds the cause of the nearest cancelable ancestor through them: the
// caller's cause when the caller's context ended this one, none (then
// Cause reports Err) when this one ended of its own.
func (d *Deadline) Value(key any) any { return d.parent.Value(key) }

// Err implements context.Context. Before anyone waits, it reads the clock.
func (d *Deadline) Err() error {
	if err := d.ended.Load(); err != nil {
		return *err
	}
	if err := d.parent.Err(); err != nil {
		return d.end(err)
	}
	if !time.Now().Before(d.at) {
		return d.end(errDeadline)
	}
	return nil
}

// Done implements context.Context. The first call arms the context.
func (d *Deadline) Done() <-chan struct{} {
	d.mu.Lock()
	if d.done == nil {
		d.done = make(chan struct{})
		if d.ended.Load() != nil {
			close(d.done)
		}
	}
	done := d.done
	expired := d.arm()
	d.mu.Unlock()
	if expired {
		d.end(errDeadline)
	}
	return done
}

// AfterFunc arranges for f to run in its own goroutine once d ends, as
// context.AfterFunc does; stop unregisters it and reports whether it did
// so before f started. The context package calls it for a context derived
// from d.
func (d *Deadline) AfterFunc(f func()) (stop func() bool) {
	d.mu.Lock()
	if d.ended.Load() != nil {
		d.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	d.next++
	id := d.next
	d.fns = append(d.fns, afterFn{id: id, f: f})
	expired := d.arm()
	d.mu.Unlock()
	if expired {
		d.end(errDeadline)
	}
	return func() bool { return d.unregister(id) }
}

// unregister removes the AfterFunc of id and reports whether it was still
// registered.
func (d *Deadline) unregister(id uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, fn := range d.fns {
		if fn.id == id {
			d.fns = append(d.fns[:i], d.fns[i+1:]...)
			d.fns[len(d.fns) : len(d.fns)+1][0] = afterFn{} // drop the reference to f
			return true
		}
	}
	return false
}

// arm starts the timer and the watch of the parent, once, unless d has
// ended; d.mu is held. It reports whether the deadline has passed already,
// for the caller to end d once it has let go of d.mu.
func (d *Deadline) arm() (expired bool) {
	if d.armed || d.ended.Load() != nil {
		return false
	}
	d.armed = true
	if d.parent.Done() != nil {
		d.stopParent = context.AfterFunc(d.parent, d.parentEnded)
	}
	wait := time.Until(d.at)
	if wait <= 0 {
		return true
	}
	d.timer = startTimer(d, wait)
	return false
}

// deadlineTimer is a timer that ends the Deadline it is lent to when it
// fires. One that was stopped before it fired goes back to a pool, so that
// a call whose deadline is armed (every call through net/http) takes a
// running timer rather than allocating one and its function.
type deadlineTimer struct {
	t *time.Timer
	d atomic.Pointer[Deadline]
}

var idleTimers sync.Pool // of *deadlineTimer, stopped, lent to no one

// startTimer lends a timer to d, to fire after wait.
func startTimer(d *Deadline, wait time.Duration) *deadlineTimer {
	dt, _ := idleTimers.Get().(*deadlineTimer)
	if dt == nil {
		dt = &deadlineTimer{}
		dt.d.Store(d)
		dt.t = time.AfterFunc(wait, dt.fire)
		return dt
	}
	dt.d.Store(d)
	dt.t.Reset(wait)
	return dt
}

func (dt *deadlineTimer) fire() {
	if d := dt.d.Load(); d != nil {
		d.end(errDeadline)
	}
}

// stop stops the timer; unless it fired already (its function may be
// running), it goes back to the pool.
func (dt *deadlineTimer) stop() {
	if dt.t.Stop() {
		dt.d.Store(nil)
		idleTimers.Put(dt)
	}
}

func (d *Deadline) parentEnded() { d.end(d.parent.Err()) }

// Cancel ends d as canceled, unless it has ended already: its owner is
// done with it.
func (d *Deadline) Cancel() { d.end(errCanceled) }

// end ends d with err, unless it has ended already, and returns the error
// it ended with. The functions AfterFunc registered start, each in its own
// goroutine.
func (d *Deadline) end(err error) error {
	d.mu.Lock()
	if prev := d.ended.Load(); prev != nil {
		d.mu.Unlock()
		return *prev
	}
	switch err {
	case errCanceled:
		d.ended.Store(&errCanceled)
	case errDeadline:
		d.ended.Store(&errDeadline)
	default:
		d.parentErr = err
		d.ended.Store(&d.parentErr)
	}
	if d.done != nil {
		close(d.done)
	}
	if d.timer != nil {
		d.timer.stop()
		d.timer = nil
	}
	stopParent := d.stopParent
	fns := d.fns
	d.fns = nil
	d.mu.Unlock()
	if stopParent != nil {
		stopParent()
	}
	for _, fn := range fns {
		go fn.f()
	}
	return err
}
