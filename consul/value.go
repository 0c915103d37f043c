package consul

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// value is what every source of this package is made of: the value in
// force, read without a lock; a channel closed at its next change; a
// channel closed at its first value; and the goroutines that fetch it,
// which close stops and waits for. The zero value is not usable: call
// start.
type value[T any] struct {
	cur atomic.Pointer[T]

	mu sync.Mutex
	ch chan struct{} // closed at the next set; made on demand

	ready     chan struct{}
	readyOnce sync.Once

	ctx    context.Context // ends at close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// start readies v. Its goroutines (run) last until close; they do not depend
// on any caller's context, which only bounds a wait for the first value.
func (v *value[T]) start() {
	v.ready = make(chan struct{})
	v.ctx, v.cancel = context.WithCancel(context.Background())
}

// run runs f on a goroutine of v, with v's context.
func (v *value[T]) run(f func(ctx context.Context)) {
	v.wg.Go(func() { f(v.ctx) })
}

// load returns the value in force, nil before the first.
func (v *value[T]) load() *T { return v.cur.Load() }

// set publishes x and tells the watchers.
func (v *value[T]) set(x *T) {
	v.cur.Store(x)
	v.mu.Lock()
	if v.ch != nil {
		close(v.ch)
		v.ch = nil
	}
	v.mu.Unlock()
	// Ready last: a reader the first value wakes asks for the next change
	// after this set closed its channel, not before.
	v.readyOnce.Do(func() { close(v.ready) })
}

// changed returns a channel closed at the next set.
func (v *value[T]) changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ch == nil {
		v.ch = make(chan struct{})
	}
	return v.ch
}

// await waits for the first value or the end of ctx. In the second case it
// closes v and returns an error naming what was awaited and, when last
// gives one, the last failure.
func (v *value[T]) await(ctx context.Context, what string, last func() error) error {
	select {
	case <-v.ready:
		return nil
	case <-ctx.Done():
	}
	v.close()
	err := ctx.Err()
	if last != nil {
		if cause := last(); cause != nil {
			err = fmt.Errorf("%w: %w", err, cause)
		}
	}
	return fmt.Errorf("consul: no %s before the context ended: %w", what, err)
}

// close stops v's goroutines and waits for them. It is safe to call twice.
func (v *value[T]) close() {
	v.cancel()
	v.wg.Wait()
}

// lastError keeps the last failure of a watch, for the error of a
// constructor whose context ends before the first value.
type lastError struct{ p atomic.Pointer[error] }

func (l *lastError) store(err error) { l.p.Store(&err) }

func (l *lastError) load() error {
	if p := l.p.Load(); p != nil {
		return *p
	}
	return nil
}
