package clock

import (
	"context"
	"time"
)

// Clock is the source of time for everything that waits or measures.
// Implementations are safe for concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that sends the current time on its channel
	// once, after at least d.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer created by a [Clock].
type Timer interface {
	// C returns the channel on which the time is delivered when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing. It returns false if the timer has
	// already fired or been stopped, as [time.Timer.Stop] does.
	Stop() bool
}

// System is the Clock of package time. Its zero value is ready to use.
type System struct{}

var _ Clock = System{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// Since returns the time elapsed on c since t. With the system clock it
// reads the monotonic clock alone (time.Since), about half the cost of
// Now, which also reads the wall clock.
func Since(c Clock, t time.Time) time.Duration {
	if _, ok := c.(System); ok {
		return time.Since(t)
	}
	return c.Now().Sub(t)
}

// NewTimer returns a [time.Timer] wrapped as a [Timer].
func (System) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

// systemTimer adapts *time.Timer, whose channel is a field, to Timer.
type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time { return s.t.C }
func (s systemTimer) Stop() bool          { return s.t.Stop() }

// Sleep waits d on c (nil means System), or returns ctx.Err() as soon as ctx
// ends. A d <= 0 returns at once (ctx.Err() if ctx has ended). The timer is
// stopped either way.
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	if c == nil {
		c = System{}
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
