package core

import (
	"context"
	"errors"
	"runtime"
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

func TestDeadlineExpiresWithoutATimer(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() past the deadline = %v, want DeadlineExceeded", d.Err())
	}
	if d.made() {
		t.Fatal("Err made the context")
	}
	d.Cancel()
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() after Cancel = %v, want the first end, DeadlineExceeded", d.Err())
	}
	waitDone(t, d) // made ended
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() once made = %v, want DeadlineExceeded", d.Err())
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

func TestDeadlineCanceledBeforeItIsMade(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(time.Hour))
	if err := d.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
	d.Cancel()
	if !errors.Is(d.Err(), context.Canceled) {
		t.Fatalf("Err() after Cancel = %v, want Canceled", d.Err())
	}
	waitDone(t, d)
	if !errors.Is(d.Err(), context.Canceled) {
		t.Fatalf("Err() once made = %v, want Canceled", d.Err())
	}
}

func TestDeadlineDoneClosesAtTheDeadline(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(5*time.Millisecond))
	if err := d.Err(); err != nil {
		t.Fatalf("Err() before the deadline = %v", err)
	}
	waitDone(t, d)
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() = %v, want DeadlineExceeded", d.Err())
	}
	d.Cancel()
	if !errors.Is(d.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() after Cancel = %v, want DeadlineExceeded", d.Err())
	}
}

func TestDeadlineTakesTheEarlierDeadline(t *testing.T) {
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

func TestDeadlineFollowsItsParent(t *testing.T) {
	for _, made := range []bool{false, true} {
		parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), key{}, "v"))
		d := newDeadline(parent, time.Now().Add(time.Hour))
		if got := d.Value(key{}); got != "v" {
			t.Fatalf("Value = %v, want the parent's", got)
		}
		if made {
			d.Done()
		}
		cause := errors.New("the caller gave up")
		cancel(cause)
		if !errors.Is(d.Err(), context.Canceled) {
			t.Fatalf("made %v: Err() = %v, want Canceled", made, d.Err())
		}
		d.Cancel() // the parent's end stays the cause
		waitDone(t, d)
		if !errors.Is(d.Err(), context.Canceled) {
			t.Fatalf("made %v: Err() = %v, want Canceled", made, d.Err())
		}
		// The cause is the caller's, as for a context of WithDeadline.
		if got := context.Cause(d); got != cause {
			t.Fatalf("made %v: Cause = %v, want the parent's %v", made, got, cause)
		}
		if got := d.Value(key{}); got != "v" {
			t.Fatalf("made %v: Value = %v, want the parent's", made, got)
		}
	}
}

// TestDeadlineChildrenStartNoGoroutine: a context derived from it, as
// net/http derives one per round trip, and one derived through a value, as
// grpc-go derives one from meshgrpc's contexts, end with it (at its
// deadline, or when canceled) without a goroutine of their own.
func TestDeadlineChildrenStartNoGoroutine(t *testing.T) {
	d := newDeadline(context.Background(), time.Now().Add(20*time.Millisecond))
	before := runtime.NumGoroutine()
	child, cancelChild := context.WithCancelCause(d)
	defer cancelChild(nil)
	valued, cancelValued := context.WithCancel(context.WithValue(d, key{}, "v"))
	defer cancelValued()
	if n := runtime.NumGoroutine() - before; n > 0 {
		t.Fatalf("deriving two contexts started %d goroutines", n)
	}
	waitDone(t, child)
	waitDone(t, valued)
	for _, c := range []context.Context{child, valued} {
		if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(c), context.DeadlineExceeded) {
			t.Fatalf("child: Err %v, Cause %v; want DeadlineExceeded", c.Err(), context.Cause(c))
		}
	}

	d = newDeadline(context.Background(), time.Now().Add(time.Hour))
	late, cancelLate := context.WithCancel(d)
	defer cancelLate()
	d.Cancel()
	waitDone(t, late)
	if !errors.Is(late.Err(), context.Canceled) {
		t.Fatalf("child: %v; want Canceled", late.Err())
	}
}

func TestDeadlineAfterFunc(t *testing.T) {
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

// TestDeadlineWithoutWaiters: a Deadline nobody waits for allocates
// nothing and starts no timer.
func TestDeadlineWithoutWaiters(t *testing.T) {
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
	if d.made() {
		t.Fatal("the context was made")
	}
}
