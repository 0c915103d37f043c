package resilience

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/inmesh/inmesh/internal/clock"
)

// Backoff defaults, used for zero fields of BackoffConfig. They are the
// policy document's defaults.
const (
	DefaultBackoffInitial = 25 * time.Millisecond
	DefaultBackoffMax     = 250 * time.Millisecond
)

// BackoffConfig configures a [Backoff]. Zero (or negative) Initial means
// DefaultBackoffInitial and zero (or negative) Max means DefaultBackoffMax;
// callers normally pass the values resolved by the policy.
type BackoffConfig struct{ Initial, Max time.Duration }

// Backoff yields exponential delays with full jitter: the n-th delay (from 0)
// is uniform in [0, min(Max, Initial*2^n)].
//
// A Backoff is not safe for concurrent use: create one per logical call, and
// only when a retry happens.
type Backoff struct {
	max time.Duration
	exp *backoff.ExponentialBackOff // yields the caps Initial*2^n, without jitter
}

// NewBackoff returns the delays of one logical call.
func NewBackoff(cfg BackoffConfig) *Backoff {
	if cfg.Initial <= 0 {
		cfg.Initial = DefaultBackoffInitial
	}
	cfg.Max = cfg.MaxDelay()
	exp := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(cfg.Initial),
		backoff.WithMaxInterval(cfg.Max),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0), // the jitter is drawn in Next
		backoff.WithMaxElapsedTime(0),      // never Stop
		backoff.WithClockProvider(frozenClock{}),
	)
	return &Backoff{max: cfg.Max, exp: exp}
}

// MaxDelay returns the longest delay a Backoff of cfg yields: Max, or
// DefaultBackoffMax when Max is not positive.
func (cfg BackoffConfig) MaxDelay() time.Duration {
	if cfg.Max <= 0 {
		return DefaultBackoffMax
	}
	return cfg.Max
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	ceiling := min(b.exp.NextBackOff(), b.max) // the first interval is not capped by backoff
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// frozenClock spares ExponentialBackOff a call to time.Now per delay: it only
// uses the clock for MaxElapsedTime, which is off.
type frozenClock struct{}

func (frozenClock) Now() time.Time { return time.Time{} }

// Sleep waits d on c (nil means clock.System), or returns ctx.Err() as soon
// as ctx ends; its timer is stopped either way. A d <= 0 does not wait.
func Sleep(ctx context.Context, c clock.Clock, d time.Duration) error {
	return clock.Sleep(ctx, c, d)
}

// ParseRetryAfter reads an HTTP Retry-After value: delta-seconds ("120") or
// an HTTP-date, relative to now. A date in the past gives 0. It returns false
// for an empty, negative or malformed value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		const maxSeconds = math.MaxInt64 / int64(time.Second)
		var secs int64
		for i := range len(v) {
			secs = secs*10 + int64(v[i]-'0')
			if secs > maxSeconds {
				return time.Duration(math.MaxInt64), true
			}
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
