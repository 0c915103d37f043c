package clocktest_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var start = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fired returns the time delivered by t, if it fired.
func fired(t clock.Timer) (time.Time, bool) {
	select {
	case at := <-t.C():
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestAdvanceFiresDueTimersInOrder(t *testing.T) {
	f := clocktest.NewFake(start)
	delays := []time.Duration{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 10 * time.Millisecond, time.Second}
	timers := make([]clock.Timer, len(delays))
	for i, d := range delays {
		timers[i] = f.NewTimer(d)
	}
	f.Advance(30 * time.Millisecond)
	if got, want := f.Now(), start.Add(30*time.Millisecond); !got.Equal(want) {
		t.Fatalf("Now() = %v, want %v", got, want)
	}
	for i, tm := range timers {
		at, ok := fired(tm)
		if want := delays[i] <= 30*time.Millisecond; ok != want {
			t.Fatalf("timer %d (%v): fired = %v, want %v", i, delays[i], ok, want)
		}
		if ok {
			if want := start.Add(delays[i]); !at.Equal(want) {
				t.Errorf("timer %d delivered %v, want its deadline %v", i, at, want)
			}
		}
	}
	if got := f.PendingTimers(); got != 1 {
		t.Errorf("PendingTimers() = %d, want 1", got)
	}
	f.Advance(time.Second)
	if _, ok := fired(timers[4]); !ok {
		t.Error("1s timer did not fire after 1.03s")
	}
}

// TestAdvanceDeliversDeadlines checks that one Advance past several
// deadlines delivers each timer its own deadline, not the end time.
func TestAdvanceDeliversDeadlines(t *testing.T) {
	f := clocktest.NewFake(start)
	a := f.NewTimer(2 * time.Second)
	b := f.NewTimer(1 * time.Second)
	f.Advance(5 * time.Second)
	atA, okA := fired(a)
	atB, okB := fired(b)
	if !okA || !okB {
		t.Fatalf("fired a=%v b=%v, want both", okA, okB)
	}
	if !atB.Before(atA) {
		t.Errorf("b (1s) delivered %v, not before a (2s) %v", atB, atA)
	}
}

func TestTimerStop(t *testing.T) {
	tests := []struct {
		name     string
		advance  time.Duration
		wantStop bool
		wantFire bool
	}{
		{name: "pending", advance: 0, wantStop: true},
		{name: "before deadline", advance: 999 * time.Millisecond, wantStop: true},
		{name: "fired", advance: time.Second, wantStop: false, wantFire: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := clocktest.NewFake(start)
			tm := f.NewTimer(time.Second)
			f.Advance(tt.advance)
			if got := tm.Stop(); got != tt.wantStop {
				t.Errorf("Stop() = %v, want %v", got, tt.wantStop)
			}
			if got := tm.Stop(); got {
				t.Error("second Stop() = true, want false")
			}
			f.Advance(time.Hour)
			if _, ok := fired(tm); ok != tt.wantFire {
				t.Errorf("fired = %v, want %v", ok, tt.wantFire)
			}
			if got := f.PendingTimers(); got != 0 {
				t.Errorf("PendingTimers() = %d, want 0", got)
			}
		})
	}
}

func TestNonPositiveTimerFiresAtOnce(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		f := clocktest.NewFake(start)
		tm := f.NewTimer(d)
		if at, ok := fired(tm); !ok || !at.Equal(start) {
			t.Errorf("NewTimer(%v): fired = %v at %v, want true at %v", d, ok, at, start)
		}
		if tm.Stop() {
			t.Errorf("NewTimer(%v).Stop() = true, want false", d)
		}
		if got := f.PendingTimers(); got != 0 {
			t.Errorf("NewTimer(%v): PendingTimers() = %d, want 0", d, got)
		}
	}
}

func TestBlockUntilTimers(t *testing.T) {
	f := clocktest.NewFake(start)
	const waiters = 3
	var wg sync.WaitGroup
	woke := make(chan time.Time, waiters)
	for i := range waiters {
		wg.Go(func() {
			tm := f.NewTimer(time.Duration(i+1) * time.Minute)
			woke <- <-tm.C()
		})
	}
	f.BlockUntilTimers(waiters)
	f.Advance(waiters * time.Minute)
	wg.Wait()
	close(woke)
	n := 0
	for range woke {
		n++
	}
	if n != waiters {
		t.Errorf("%d goroutines woke, want %d", n, waiters)
	}
}

func TestConcurrentUse(t *testing.T) {
	f := clocktest.NewFake(start)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for j := range 100 {
				tm := f.NewTimer(time.Duration(j%5+1) * time.Millisecond)
				if j%2 == 0 {
					tm.Stop()
				}
				_ = f.Now()
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			f.Advance(time.Millisecond)
		}
	})
	wg.Wait()
	f.Advance(time.Second)
	if got := f.PendingTimers(); got != 0 {
		t.Errorf("PendingTimers() = %d after advancing past every deadline, want 0", got)
	}
}

func TestAdvanceNegativePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Advance(-1) did not panic")
		}
	}()
	clocktest.NewFake(start).Advance(-1)
}

func ExampleFake() {
	f := clocktest.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	done := make(chan time.Time)
	go func() {
		t := f.NewTimer(10 * time.Second)
		done <- <-t.C()
	}()
	f.BlockUntilTimers(1) // the goroutine is waiting
	f.Advance(10 * time.Second)
	fmt.Println((<-done).Format(time.TimeOnly))
	// Output: 00:00:10
}
