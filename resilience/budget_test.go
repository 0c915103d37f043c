package resilience_test

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inmesh/inmesh/internal/clock"
	"github.com/inmesh/inmesh/internal/clock/clocktest"
	"github.com/inmesh/inmesh/resilience"
)

// failingLoop runs calls logical calls against a backend that always fails,
// each trying up to attempts times, advancing c by step per call, and returns
// the number of retries the budget allowed.
func failingLoop(b *resilience.Budget, c *clocktest.Fake, calls, attempts int, step time.Duration) int {
	retries := 0
	for range calls {
		b.Deposit()
		for range attempts - 1 {
			if !b.TryWithdraw() {
				break
			}
			retries++
		}
		c.Advance(step)
	}
	return retries
}

func TestBudgetFailingBackend(t *testing.T) {
	tests := []struct {
		name     string
		cfg      resilience.BudgetConfig
		calls    int
		attempts int
		step     time.Duration
		min, max int // allowed retries
	}{
		{
			name: "ratio 0.2 min 0", cfg: resilience.BudgetConfig{Ratio: 0.2},
			calls: 10000, attempts: 3, min: 1999, max: 2001,
		},
		{
			name: "ratio 0.2 min 0 over 5s", cfg: resilience.BudgetConfig{Ratio: 0.2},
			calls: 10000, attempts: 10, step: 500 * time.Microsecond, min: 1999, max: 2001,
		},
		{
			name: "ratio 0.2 min 10", cfg: resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 10},
			calls: 10000, attempts: 3, min: 2099, max: 2101,
		},
		{
			name: "ratio 0 min 0 never retries", cfg: resilience.BudgetConfig{},
			calls: 1000, attempts: 3, min: 0, max: 0,
		},
		{
			name: "negative ratio is 0", cfg: resilience.BudgetConfig{Ratio: -1, MinPerSecond: -5},
			calls: 1000, attempts: 3, min: 0, max: 0,
		},
		{
			name: "NaN ratio is 0", cfg: resilience.BudgetConfig{Ratio: math.NaN()},
			calls: 1000, attempts: 3, min: 0, max: 0,
		},
		{
			// Over 100s only the last 10s of deposits count: at 100 calls/s,
			// 20 retries/s, so about 2000 in all, with a window of 10 slots.
			name: "ratio 0.2 over 100s", cfg: resilience.BudgetConfig{Ratio: 0.2},
			calls: 10000, attempts: 2, step: 10 * time.Millisecond, min: 1990, max: 2001,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clocktest.NewFake(start)
			b := resilience.NewBudget(tt.cfg, c)
			got := failingLoop(b, c, tt.calls, tt.attempts, tt.step)
			if got < tt.min || got > tt.max {
				t.Errorf("%d calls allowed %d retries, want %d..%d", tt.calls, got, tt.min, tt.max)
			}
		})
	}
}

func TestBudgetReserve(t *testing.T) {
	tests := []struct {
		name string
		cfg  resilience.BudgetConfig
		want int
	}{
		{name: "min 10, default TTL", cfg: resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 10}, want: 100},
		{name: "min 3, TTL 2s", cfg: resilience.BudgetConfig{MinPerSecond: 3, TTL: 2 * time.Second}, want: 6},
		{name: "min 0", cfg: resilience.BudgetConfig{Ratio: 0.5}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := resilience.NewBudget(tt.cfg, clocktest.NewFake(start))
			if got := b.Balance(); got != float64(tt.want) {
				t.Errorf("Balance() at start = %v, want %d", got, tt.want)
			}
			got := 0
			for b.TryWithdraw() {
				got++
				if got > tt.want {
					break
				}
			}
			if got != tt.want {
				t.Errorf("withdrew %d from a fresh budget, want %d", got, tt.want)
			}
			if got := b.Balance(); got != 0 {
				t.Errorf("Balance() when exhausted = %v, want 0", got)
			}
		})
	}
}

func TestBudgetTokensExpire(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
	}{
		{name: "default TTL", ttl: 0},
		{name: "TTL 2s", ttl: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ttl := tt.ttl
			if ttl == 0 {
				ttl = resilience.DefaultBudgetTTL
			}
			c := clocktest.NewFake(start)
			b := resilience.NewBudget(resilience.BudgetConfig{Ratio: 1, TTL: tt.ttl}, c)
			for range 5 {
				b.Deposit()
			}
			if got := b.Balance(); got != 5 {
				t.Fatalf("Balance() after 5 deposits = %v, want 5", got)
			}
			c.Advance(ttl - 1)
			if got := b.Balance(); got != 5 {
				t.Fatalf("Balance() just before TTL = %v, want 5", got)
			}
			c.Advance(1)
			if got := b.Balance(); got != 0 {
				t.Fatalf("Balance() at TTL = %v, want 0", got)
			}
			if b.TryWithdraw() {
				t.Fatal("TryWithdraw() succeeded on expired tokens")
			}
		})
	}
}

func TestBudgetWithdrawalsExpire(t *testing.T) {
	c := clocktest.NewFake(start)
	b := resilience.NewBudget(resilience.BudgetConfig{MinPerSecond: 1}, c)
	for range 10 {
		if !b.TryWithdraw() {
			t.Fatal("TryWithdraw() failed within the reserve of 10")
		}
	}
	if b.TryWithdraw() {
		t.Fatal("TryWithdraw() succeeded past the reserve")
	}
	c.Advance(10 * time.Second)
	if got := b.Balance(); got != 10 {
		t.Errorf("Balance() once the withdrawals expired = %v, want 10", got)
	}
}

// TestBudgetExpiredDepositsDoNotCoverRecentRetries checks that a balance can
// fall below zero (shown as 0) when deposits expire before withdrawals.
func TestBudgetExpiredDepositsDoNotCoverRecentRetries(t *testing.T) {
	c := clocktest.NewFake(start)
	b := resilience.NewBudget(resilience.BudgetConfig{Ratio: 1}, c)
	for range 10 {
		b.Deposit()
	}
	c.Advance(5 * time.Second)
	for range 10 {
		if !b.TryWithdraw() {
			t.Fatal("TryWithdraw() failed with 10 tokens deposited")
		}
	}
	c.Advance(5 * time.Second) // deposits expire, withdrawals stay 5s more
	b.Deposit()
	if b.TryWithdraw() {
		t.Error("TryWithdraw() succeeded while 10 live withdrawals exceed 1 live deposit")
	}
	if got := b.Balance(); got != 0 {
		t.Errorf("Balance() = %v, want 0", got)
	}
}

func TestBudgetConcurrent(t *testing.T) {
	tests := []struct {
		name      string
		advancing bool
	}{
		{name: "still clock"},
		{name: "advancing clock", advancing: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const workers, calls = 8, 2000
			c := clocktest.NewFake(start)
			b := resilience.NewBudget(resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 1}, c)
			var retries atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range calls {
						b.Deposit()
						for range 2 {
							if !b.TryWithdraw() {
								break
							}
							retries.Add(1)
						}
					}
				})
			}
			if tt.advancing {
				wg.Go(func() {
					for range 100 {
						c.Advance(10 * time.Millisecond) // stays within one TTL
					}
				})
			}
			wg.Wait()
			limit := int64(0.2*workers*calls) + 10
			if got := retries.Load(); got > limit {
				t.Errorf("concurrent callers withdrew %d, more than the balance of %d", got, limit)
			}
			if got := b.Balance(); got < 0 {
				t.Errorf("Balance() = %v, want >= 0", got)
			}
		})
	}
}

func TestNilBudgetAllowsEverything(t *testing.T) {
	var b *resilience.Budget
	b.Deposit()
	if !b.TryWithdraw() {
		t.Error("nil Budget: TryWithdraw() = false, want true")
	}
	if got := b.Balance(); !math.IsInf(got, 1) {
		t.Errorf("nil Budget: Balance() = %v, want +Inf", got)
	}
}

func TestBudgetNilClockIsSystem(t *testing.T) {
	b := resilience.NewBudget(resilience.BudgetConfig{MinPerSecond: 1}, nil)
	if got := b.Balance(); got != 10 {
		t.Errorf("Balance() = %v, want 10", got)
	}
}

func BenchmarkBudgetDeposit(b *testing.B) {
	budget := resilience.NewBudget(resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 10}, clock.System{})
	b.ReportAllocs()
	for b.Loop() {
		budget.Deposit()
	}
}

func BenchmarkBudgetDepositTryWithdraw(b *testing.B) {
	budget := resilience.NewBudget(resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 10}, clock.System{})
	b.ReportAllocs()
	for b.Loop() {
		budget.Deposit()
		budget.TryWithdraw()
	}
}

func BenchmarkBudgetParallel(b *testing.B) {
	budget := resilience.NewBudget(resilience.BudgetConfig{Ratio: 0.2, MinPerSecond: 10}, clock.System{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.Deposit()
			budget.TryWithdraw()
		}
	})
}
