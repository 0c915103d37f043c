package core

import (
	"context"
	"errors"
	"testing"
	"time"
)

// newDeadline returns a Deadline over parent ending at at.
func newDeadline(parent context.Context, at time.Time) *Deadline {
	d := &Deadline{}
	d.Init(parent, at)
	return d
}

// waitDone waits for ctx's end, failing after a generous bound.
func waitDone(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end")
	}
}

func TestDeadlineCtxExpiresWithoutATimer(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() past the deadline = %v, want DeadlineExceeded", d.Err())
	}
	if d.timer != nil {
		t.Fatal("Err armed a timer")
	}
	waitDone(t, d) // Done of an ended context is closed
	d.Cancel()
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() after cancel = %v, want the first end, DeadlineExceeded", d.Err())
	}
	if got := context.Cause(d); !errors.Is(got, context.DeadlineExceeded) {
		t.Fatalf("Cause = %v, want DeadlineExceeded", got)
	}
	// Under a cancelable caller too: the caller's cause is nil.
	parent, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	d = newDeadline(parent, time.Now().Add(-time.Millisecond))
	if got := context.Cause(d); !errors.Is(got, context.DeadlineExceeded) {
		t.Fatalf("Cause under a live parent = %v, want DeadlineExceeded", got)
	}
}

func TestDeadlineCtxDoneClosesAtTheDeadline(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(5*time.Millisecond))
	if err := d.Err(); err != nil {
		t.Fatalf("Err() before the deadline = %v", err)
	}
	waitDone(t, d)
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() = %v, want DeadlineExceeded", d.Err())
	}
}

func TestDeadlineCtxTakesTheEarlierDeadline(t *testing.T) {
	early := time.Now().Add(time.Hour)
	parent, cancel := context.WithDeadline(context.Background(), early)
	defer cancel()
	d := newDeadline(parent, early.Add(time.Hour))
	if dl, ok := d.Deadline(); !ok || !dl.Equal(early) {
		t.Fatalf("Deadline() = %v, %v; want the parent's %v", dl, ok, early)
	}
	d = newDeadline(parent, early.Add(-time.Minute))
	if dl, _ := d.Deadline(); !dl.Equal(early.Add(-time.Minute)) {
		t.Fatalf("Deadline() = %v, want its own", dl)
	}
	d.Cancel()
}

type key struct{}

func TestDeadlineCtxFollowsItsParent(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), key{}, "v"))
	d := newDeadline(parent, time.Now().Add(time.Hour))
	if got := d.Value(key{}); got != "v" {
		t.Fatalf("Value = %v, want the parent's", got)
	}
	done := d.Done()
	cause := errors.New("the caller gave up")
	cancel(cause)
	waitDone(t, d)
	if d.Done() != done {
		t.Fatal("Done changed")
	}
	if !errors.Is(d.Err(), context.Canceled) {
		t.Fatalf("Err() = %v, want Canceled", d.Err())
	}
	// The cause is the caller's, as for a context of WithDeadline.
	if got := context.Cause(d); got != cause {
		t.Fatalf("Cause = %v, want the parent's %v", got, cause)
	}
}

func TestDeadlineCtxParentEndedBefore(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	d := newDeadline(parent, time.Now().Add(time.Hour))
	if !errors.Is(d.Err(), context.Canceled) {
		t.Fatalf("Err() = %v, want the parent's Canceled", d.Err())
	}
	waitDone(t, d)
}

// TestDeadlineCtxChildren: a context derived from it, as net/http derives
// one per round trip, ends with it (at its deadline, or when canceled),
// through AfterFunc rather than a goroutine; a child that ends first
// unregisters.
func TestDeadlineCtxChildren(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(5*time.Millisecond))
	child, cancelChild := context.WithCancelCause(d)
	defer cancelChild(nil)
	if n := registered(d); n != 1 {
		t.Fatalf("%d functions registered, want the child's", n)
	}
	waitDone(t, child)
	if !errors.Is(child.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(child), context.DeadlineExceeded) {
		t.Fatalf("child: Err %v, Cause %v; want DeadlineExceeded", child.Err(), context.Cause(child))
	}

	d = newDeadline(context.Background(), time.Now().Add(time.Hour))
	early, cancelEarly := context.WithCancel(d)
	late, cancelLate := context.WithCancel(d)
	defer cancelLate()
	cancelEarly()
	if n := registered(d); n != 1 {
		t.Fatalf("%d functions registered after a child ended, want 1", n)
	}
	d.Cancel()
	waitDone(t, late)
	if !errors.Is(late.Err(), context.Canceled) || !errors.Is(early.Err(), context.Canceled) {
		t.Fatalf("children: %v, %v; want Canceled", early.Err(), late.Err())
	}
}

// registered returns the number of functions registered on d.
func registered(d *Deadline) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.fns)
}

func TestDeadlineCtxAfterFunc(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(time.Hour))
	ran := make(chan struct{})
	stop := context.AfterFunc(d, func() { close(ran) })
	never := context.AfterFunc(d, func() { t.Error("a stopped function ran") })
	if !never() {
		t.Fatal("stop of a pending function = false")
	}
	d.Cancel()
	<-ran
	if stop() {
		t.Fatal("stop after the function ran = true")
	}
	// Registered on an ended context: runs at once.
	again := make(chan struct{})
	context.AfterFunc(d, func() { close(again) })
	<-again
}

// TestDeadlineCtxWithoutWaiters: a context nobody waits for allocates
// nothing, and ends without a timer or a goroutine.
func TestDeadlineCtxWithoutWaiters(t *testing.T) {
	var d Deadline
	parent := context.Background()
	at := time.Now().Add(time.Hour)
	allocs := testing.AllocsPerRun(100, func() {
		d = Deadline{}
		d.Init(parent, at)
		_ = d.Err()
		_, _ = d.Deadline()
		d.Cancel()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations, want 0", allocs)
	}
}
