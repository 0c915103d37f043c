package core

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Deadline is a context bounded by a deadline: what context.WithDeadline
// gives, held in its owner's storage (a Call, a server's request; no
// allocation), and lazy. Until someone waits for its end (the first Done,
// which context.WithCancel, context.AfterFunc and net/http's round trip
// call), it is a deadline and a parent: Err compares the clock with the
// deadline itself, and Cancel only records the end. The first Done makes
// the context.WithDeadline it then is, which every later call goes to. A
// call whose answer comes before anyone waits (an in-process RoundTripper,
// a handler that answers at once) never starts a timer.
//
// Once made, the context the Done channel belongs to answers the context
// package's lookup of the nearest cancelable ancestor: a context derived
// from a Deadline, even through values (gRPC's metadata and pick slot),
// joins its children instead of starting a goroutine that waits on Done.
//
// It is safe for concurrent use once Init has returned; its zero value is
// not usable. Its owner calls Cancel when it is done with it, as with the
// cancel function of context.WithDeadline.
type Deadline struct {
	parent context.Context
	at     time.Time // the earlier of the parent's deadline and its own

	// state is nil while it lives unmade; errCanceled or errDeadline once
	// it ended unmade; errMade once made (set under mu, after ctx and
	// cancel), from when on ctx and cancel are the Deadline.
	state  atomic.Pointer[error]
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
}

// The states of a Deadline: the errors it ends with before it is made, and
// made.
var (
	errCanceled error = context.Canceled
	errDeadline error = context.DeadlineExceeded
	errMade     error // never returned: a made Deadline's Err is its ctx's
)

// made reports whether d was made.
func (d *Deadline) made() bool { return d.state.Load() == &errMade }

var _ context.Context = (*Deadline)(nil)

// Init bounds parent by at: the context ends at at, when parent ends or
// when it is canceled, whichever comes first.
func (d *Deadline) Init(parent context.Context, at time.Time) {
	if pd, ok := parent.Deadline(); ok && pd.Before(at) {
		at = pd
	}
	d.parent, d.at = parent, at
}

// Deadline implements context.Context.
func (d *Deadline) Deadline() (time.Time, bool) { return d.at, true }

// Value implements context.Context: the parent's values, through the
// context it is once made (which context.Cause and the context package's
// lookup of the nearest cancelable ancestor ask for themselves).
func (d *Deadline) Value(key any) any {
	if d.made() {
		return d.ctx.Value(key)
	}
	return d.parent.Value(key)
}

// Err implements context.Context. Before it is made, it reads the clock.
func (d *Deadline) Err() error {
	switch st := d.state.Load(); st {
	case nil:
	case &errMade:
		return d.ctx.Err()
	default:
		return *st
	}
	if err := d.parent.Err(); err != nil {
		return err
	}
	if time.Until(d.at) <= 0 {
		if !d.state.CompareAndSwap(nil, &errDeadline) {
			return d.Err() // canceled or made meanwhile
		}
		return errDeadline
	}
	return nil
}

// Done implements context.Context. The first call makes the context.
func (d *Deadline) Done() <-chan struct{} {
	if !d.made() {
		d.make()
	}
	return d.ctx.Done()
}

// make makes the context.WithDeadline that d is from now on, ended already
// if d was canceled.
func (d *Deadline) make() {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state.Load()
	if st == &errMade {
		return
	}
	d.ctx, d.cancel = context.WithDeadline(d.parent, d.at)
	if st == &errCanceled {
		d.cancel()
	}
	// An Err that finds the deadline passed now finds it made; one that
	// stored errDeadline first made no difference: the deadline passed,
	// and the WithDeadline ends at once with the same error.
	d.state.Store(&errMade)
}

// Cancel ends d as canceled, unless it has ended already: its owner is
// done with it. It releases the timer and the parent's hold on it, if it
// was made.
func (d *Deadline) Cancel() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.made() {
		d.cancel()
		return
	}
	// A parent that ended first stays the cause: Err goes on reporting
	// its error.
	if d.parent.Err() == nil {
		d.state.CompareAndSwap(nil, &errCanceled)
	}
}
