package resilience_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/resilience"
)

func TestBackoffBounds(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		cfg  resilience.BackoffConfig
		caps []time.Duration // the ceiling of each delay in turn
	}{
		{
			name: "25ms..250ms",
			cfg:  resilience.BackoffConfig{Initial: 25 * ms, Max: 250 * ms},
			caps: []time.Duration{25 * ms, 50 * ms, 100 * ms, 200 * ms, 250 * ms, 250 * ms, 250 * ms},
		},
		{
			name: "zero config means the defaults",
			caps: []time.Duration{25 * ms, 50 * ms, 100 * ms, 200 * ms, 250 * ms, 250 * ms},
		},
		{
			name: "max below initial caps the first delay",
			cfg:  resilience.BackoffConfig{Initial: 100 * ms, Max: 40 * ms},
			caps: []time.Duration{40 * ms, 40 * ms, 40 * ms},
		},
		{
			name: "max equals initial",
			cfg:  resilience.BackoffConfig{Initial: 10 * ms, Max: 10 * ms},
			caps: []time.Duration{10 * ms, 10 * ms, 10 * ms},
		},
		{
			name: "many doublings stay at max",
			cfg:  resilience.BackoffConfig{Initial: time.Nanosecond, Max: time.Hour},
			caps: func() []time.Duration {
				var c []time.Duration
				for n := range 80 {
					c = append(c, min(time.Hour, time.Nanosecond<<min(n, 62)))
				}
				return c
			}(),
		},
	}
	const draws = 500
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo := make([]time.Duration, len(tt.caps))
			hi := make([]time.Duration, len(tt.caps))
			for i := range lo {
				lo[i] = time.Duration(1<<63 - 1)
			}
			for range draws {
				b := resilience.NewBackoff(tt.cfg)
				for i, ceiling := range tt.caps {
					d := b.Next()
					if d < 0 || d > ceiling {
						t.Fatalf("delay %d = %v, want within [0, %v]", i, d, ceiling)
					}
					lo[i], hi[i] = min(lo[i], d), max(hi[i], d)
				}
			}
			// Full jitter spreads over the whole range: over 500 draws the
			// chance that none falls in the lower (or upper) half is 2^-500.
			for i, ceiling := range tt.caps {
				if ceiling < 2 {
					continue
				}
				if lo[i] > ceiling/2 || hi[i] < ceiling/2 {
					t.Errorf("delay %d: draws within [%v, %v], want both halves of [0, %v]", i, lo[i], hi[i], ceiling)
				}
			}
		})
	}
}

func TestSleepReturnsOnAdvance(t *testing.T) {
	c := clocktest.NewFake(start)
	done := make(chan error, 1)
	go func() { done <- resilience.Sleep(context.Background(), c, 100*time.Millisecond) }()
	c.BlockUntilTimers(1)
	c.Advance(99 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Sleep returned %v before its delay", err)
	default:
	}
	c.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Errorf("Sleep() = %v, want nil", err)
	}
	if got := c.PendingTimers(); got != 0 {
		t.Errorf("PendingTimers() = %d, want 0", got)
	}
}

func TestSleepReturnsOnContextEnd(t *testing.T) {
	tests := []struct {
		name string
		end  func(ctx context.Context) (context.Context, context.CancelFunc)
		want error
	}{
		{name: "cancel", end: context.WithCancel, want: context.Canceled},
		{
			name: "deadline",
			end: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithDeadlineCause(ctx, time.Now(), nil) // due at once, in real time
			},
			want: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clocktest.NewFake(start)
			ctx, cancel := tt.end(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- resilience.Sleep(ctx, c, time.Hour) }()
			cancel() // a no-op once the deadline has passed
			if err := <-done; !errors.Is(err, tt.want) {
				t.Errorf("Sleep() = %v, want %v", err, tt.want)
			}
			if got := c.PendingTimers(); got != 0 {
				t.Errorf("PendingTimers() = %d after Sleep returned, want 0 (timer not stopped)", got)
			}
		})
	}
}

// TestSleepWaitingThenCanceled cancels a Sleep known to be waiting on its timer.
func TestSleepWaitingThenCanceled(t *testing.T) {
	c := clocktest.NewFake(start)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- resilience.Sleep(ctx, c, time.Hour) }()
	c.BlockUntilTimers(1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep() = %v, want context.Canceled", err)
	}
	if got := c.PendingTimers(); got != 0 {
		t.Errorf("PendingTimers() = %d after Sleep returned, want 0 (timer not stopped)", got)
	}
}

func TestSleepNonPositive(t *testing.T) {
	c := clocktest.NewFake(start)
	for _, d := range []time.Duration{0, -time.Second} {
		if err := resilience.Sleep(context.Background(), c, d); err != nil {
			t.Errorf("Sleep(%v) = %v, want nil", d, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := resilience.Sleep(ctx, c, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(canceled, 0) = %v, want context.Canceled", err)
	}
}

func TestSleepSystemClock(t *testing.T) {
	if err := resilience.Sleep(context.Background(), nil, time.Microsecond); err != nil {
		t.Errorf("Sleep(nil clock) = %v, want nil", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{in: "120", want: 120 * time.Second, wantOK: true},
		{in: "0", want: 0, wantOK: true},
		{in: " 7 ", want: 7 * time.Second, wantOK: true},
		{in: "99999999999999999999", want: time.Duration(1<<63 - 1), wantOK: true},
		{in: "Thu, 26 Nov 2026 12:00:30 GMT", want: 30 * time.Second, wantOK: true},
		{in: "Thursday, 26-Nov-26 12:01:00 GMT", want: time.Minute, wantOK: true},
		{in: "Thu Nov 26 12:00:05 2026", want: 5 * time.Second, wantOK: true},
		{in: "Thu, 26 Nov 2026 11:00:00 GMT", want: 0, wantOK: true}, // in the past
		{in: ""},
		{in: "-1"},
		{in: "+5"},
		{in: "1.5"},
		{in: "soon"},
		{in: "2026-11-26T12:00:30Z"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := resilience.ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %v, %v, want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Thu, 26 Nov 2026 12:00:30 GMT", "-1", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := resilience.ParseRetryAfter(s, now); d < 0 || (!ok && d != 0) {
			t.Errorf("ParseRetryAfter(%q) = %v, %v", s, d, ok)
		}
	})
}

func BenchmarkBackoffNext(b *testing.B) {
	b.ReportAllocs()
	bo := resilience.NewBackoff(resilience.BackoffConfig{Initial: 25 * time.Millisecond, Max: 250 * time.Millisecond})
	for b.Loop() {
		bo.Next()
	}
}
